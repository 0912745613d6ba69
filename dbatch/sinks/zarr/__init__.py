"""The Zarr sink: each batch written into its own chunk-aligned region of one store."""

from typing import TYPE_CHECKING

from ..._lazy import lazy_exports

_WHERE = {
    "ZarrSink": ".sink",
    "VerifyReport": ".verify",
}

__all__ = list(_WHERE)

__getattr__, __dir__ = lazy_exports(__name__, _WHERE)

if TYPE_CHECKING:
    from .sink import ZarrSink as ZarrSink
    from .verify import VerifyReport as VerifyReport
