"""Sources: list units cheaply on the client, load a batch on a worker."""

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

_WHERE = {
    "Files": ".files",
    "SqlSource": ".sql",
    "HttpSource": ".http",
}

__all__ = list(_WHERE)

__getattr__, __dir__ = lazy_exports(__name__, _WHERE)

if TYPE_CHECKING:
    from .files import Files as Files
    from .http import HttpSource as HttpSource
    from .sql import SqlSource as SqlSource
