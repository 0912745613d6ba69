"""Gridded sources: NetCDF files combined along a dimension, and Zarr stores, sliced into units."""

from typing import TYPE_CHECKING

from ..._lazy import lazy_exports

_WHERE = {
    "NetCDFSource": ".netcdf",
    "ZarrSource": ".zarr",
}

__all__ = list(_WHERE)

__getattr__, __dir__ = lazy_exports(__name__, _WHERE)

if TYPE_CHECKING:
    from .netcdf import NetCDFSource as NetCDFSource
    from .zarr import ZarrSource as ZarrSource
