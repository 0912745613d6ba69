"""Sources: list units cheaply on the client, load a batch on a worker."""

from .files import Files

__all__ = ["Files"]
