"""NetCDF files combined along a dimension; one unit per file or per window of a file."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ...context import BatchContext
from ...core import Batch
from ...errors import JobSpecError
from ...layout import Layout
from .gridded import GriddedSource, Member, combine, expand

if TYPE_CHECKING:
    import xarray as xr

__all__ = ["NetCDFSource"]

_ENGINES = (None, "netcdf4", "h5netcdf", "scipy")


@dataclass(frozen=True)
class NetCDFSource(GriddedSource):
    """NetCDF files combined along a dimension; one unit per file (or per window of a file).

    Listing opens each file's header to read its values along ``dim`` and its
    layout, so a unit's ``time`` is the file's first timestamp (``ByWindow``
    groups files by it) and its identity holds the file's size, modification time
    and layout. A batch loads its files (only its slices, read chunk by chunk from
    disk) into one ``xarray.Dataset`` in the worker's memory. A file whose grid or
    variables differ from the layout most files share is quarantined with what
    differs; the other files, and the other batches, go on.

    Parameters
    ----------
    path
        A path or glob pattern (``"archive/*.nc"``), or a list of them.
    dim
        The dimension files are combined along.
    variables
        Data variables to keep (default: all).
    split
        A pandas frequency (``"1D"``, ``"MS"``): one unit per window of each file
        instead of one per file, so monthly files can make daily batches.
    engine
        The xarray backend: ``netcdf4``, ``h5netcdf`` or ``scipy`` (default: xarray's
        choice by the file's format; the base install reads NetCDF4/HDF5 files with
        ``h5netcdf``).

    Examples
    --------
    >>> src = NetCDFSource("archive/*.nc", dim="time", variables=["temperature"])  # doctest: +SKIP
    """

    path: str | Sequence[str]
    dim: str = "time"
    variables: Sequence[str] | None = None
    split: str | None = None
    engine: str | None = None

    kind = "NetCDF"

    def __post_init__(self):
        super().__post_init__()
        if self.engine not in _ENGINES:
            raise JobSpecError(
                f"engine must be one of {[e for e in _ENGINES if e]}", key="source.engine"
            )

    def describe(self) -> str:
        return f"netcdf {self.path!r} along {self.dim}"

    def token(self) -> list[Any]:
        return ["netcdf", self.dim, self.variables, self.split, self.engine]

    def _open(self, path: str) -> xr.Dataset:
        import xarray as xr

        return xr.open_dataset(path, engine=self.engine, chunks=None, cache=False)

    def _members(self) -> list[Member]:
        members = []
        for path in expand(self.path, "netcdf"):
            if os.path.isdir(path):
                continue
            st = os.stat(path)
            times, layout = None, None
            try:
                with self._open(path) as ds:
                    if self.dim in ds.dims:
                        times = ds[self.dim].values
                        if self.variables is not None and all(v in ds for v in self.variables):
                            ds = ds[list(self.variables)]
                        layout = Layout.of(ds, self.dim)
            except (OSError, ValueError):
                pass  # unreadable: loading quarantines it with the reason
            members.append(Member(path, st.st_size, st.st_mtime, times, layout))
        return members

    def load(self, batch: Batch, ctx: BatchContext) -> xr.Dataset:
        """The batch's slices of its files as one Dataset; bad files are quarantined."""
        pieces: list[xr.Dataset] = []
        seen: list = []
        for unit in batch.units:
            path = unit.key.split("#", 1)[0]
            try:
                ds = self._open(path)
            except FileNotFoundError:
                ctx.quarantine_file(unit.key, "missing", "the file disappeared after planning")
                continue
            except (TimeoutError, ConnectionError, PermissionError):
                raise
            except (OSError, ValueError) as e:
                ctx.quarantine_file(
                    unit.key, "corrupt", f"cannot be read as NetCDF ({type(e).__name__}: {e})"
                )
                continue
            with ds:
                checked = self._check(ds, unit, unit.key, ctx)
                piece = None if checked is None else self._take(checked, unit, unit.key, ctx, seen)
            if piece is not None:
                pieces.append(piece)
        return combine(pieces, self.dim)
