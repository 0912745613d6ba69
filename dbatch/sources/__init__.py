"""Sources: list units cheaply on the client, load a batch on a worker."""

from .files import Files
from .http import HttpSource
from .sql import SqlSource

__all__ = ["Files", "SqlSource", "HttpSource"]
