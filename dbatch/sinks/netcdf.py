"""NetCDFSink: one NetCDF file per batch, published atomically per run."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import JobSpecError
from .base import as_dataset, file_checksum
from .files import _FileSink

__all__ = ["NetCDFSink"]


@dataclass(frozen=True)
class NetCDFSink(_FileSink):
    """One NetCDF file per batch, published atomically per run like the Parquet sink.

    ``path`` becomes a link to the run's complete version holding
    ``part-<batch id>.nc`` files, ``_manifest.json`` and ``_SUCCESS``; readers
    open them with ``xr.open_mfdataset(path + "/*.nc")``.

    The files are written with ``engine`` (``h5netcdf``, which the base install
    has; ``netcdf4`` with the netCDF4 package; ``scipy`` for NetCDF3 files).

    Examples
    --------
    >>> NetCDFSink("out/daily-nc", engine="h5netcdf")  # doctest: +SKIP
    """

    engine: str = "h5netcdf"
    suffix = ".nc"

    def __post_init__(self):
        super().__post_init__()
        if self.partition_by:
            raise JobSpecError(
                "the netcdf sink writes one file per batch; partition_by is for table sinks",
                key="sink.partition_by",
            )
        if self.engine not in ("netcdf4", "h5netcdf", "scipy"):
            raise JobSpecError(
                f"engine {self.engine!r} is not a NetCDF writer; write h5netcdf (the "
                "default), netcdf4 (needs the netCDF4 package) or scipy",
                key="sink.engine",
            )

    def token(self) -> list[Any]:
        return ["NetCDFSink", self.engine]

    def stage(self, data, directory: Path, name: str) -> dict[str, Any]:
        """Write the batch's Dataset as ``part-<name>.nc`` below ``directory``."""
        ds = as_dataset(data, "netcdf")
        rows = int(next(iter(ds.sizes.values()), 0))
        if not ds.variables:
            return {"files": [], "rows": 0}
        out = directory / f"part-{name}{self.suffix}"
        ds.drop_encoding().to_netcdf(out, engine=self.engine)  # type: ignore[call-overload]
        return {
            "files": [{"path": out.name, "rows": rows, "sha256": file_checksum(out)}],
            "rows": rows,
        }
