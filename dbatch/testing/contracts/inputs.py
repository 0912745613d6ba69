"""Input the contract suites write into a folder, unit by unit: tables and gridded days."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from .checks import assert_same_frames

__all__ = ["ContractInput", "TableInput", "GriddedInput", "TABLE_SCHEMA"]

#: The declared columns of ``TableInput``'s files.
TABLE_SCHEMA = {"id": "string", "account": "string", "amount": "float64", "day": "date32"}

_TABLE_SUFFIXES = {"csv": "csv", "parquet": "parquet", "jsonl": "jsonl"}


@runtime_checkable
class ContractInput(Protocol):
    """How a contract's input is written, recognised, read and compared.

    Input number ``index`` is one unit of the source that ``source`` returns;
    ``rows`` is how many rows (or points along the batch dimension) each input
    holds, ``bad_rows`` how many of them that source sets aside.
    """

    @property
    def rows(self) -> int: ...

    @property
    def bad_rows(self) -> int: ...

    def write(self, folder: Path, index: int) -> None:
        """Write input number ``index`` into ``folder``."""
        ...

    def change(self, folder: Path, index: int) -> None:
        """Change the content of input number ``index`` so that its source can tell."""
        ...

    def is_unit(self, key: str, index: int) -> bool:
        """Whether the unit ``key`` is (part of) input number ``index``."""
        ...

    def source(self, folder: Path) -> Any:
        """The source that reads every input in ``folder``."""
        ...

    def assert_same(self, got: Any, want: Any) -> None:
        """Raise ``AssertionError`` unless ``got`` and ``want`` hold the same data."""
        ...


@dataclass(frozen=True)
class TableInput:
    """Small order-like tables (id, account, amount, day), one file per input.

    ``format`` is ``csv``, ``parquet`` or ``jsonl``; the source is ``Files`` with a
    declared schema. Each file holds ``rows`` rows, the last ``bad_rows`` of them
    with an amount that is not a number (CSV and JSON lines only), which the
    source quarantines.

    Examples
    --------
    >>> TableInput("jsonl", rows=10, bad_rows=1).name(3)
    'part-003.jsonl'
    """

    format: str = "csv"
    rows: int = 25
    bad_rows: int = 0

    def __post_init__(self) -> None:
        if self.format not in _TABLE_SUFFIXES:
            raise ValueError(f"format must be one of {sorted(_TABLE_SUFFIXES)}")
        if self.bad_rows and self.format == "parquet":
            raise ValueError("a Parquet file cannot hold a bad amount; use csv or jsonl")
        if not 0 <= self.bad_rows <= self.rows:
            raise ValueError("bad_rows must be between 0 and rows")

    def name(self, index: int) -> str:
        return f"part-{index:03d}.{_TABLE_SUFFIXES[self.format]}"

    def records(self, index: int, version: int = 0) -> list[dict[str, Any]]:
        """The rows of input ``index``; another ``version`` holds other amounts and one more row."""
        out: list[dict[str, Any]] = []
        for i in range(self.rows + (1 if version else 0)):
            amount = f"{(i * 7 + index + version) % 100}.5"
            out.append(
                {
                    "id": f"{index}-{i}",
                    "account": f"A{i % 5}",
                    "amount": "not-a-number"
                    if self.rows - self.bad_rows <= i < self.rows
                    else amount,
                    "day": f"2026-01-{1 + index % 28:02d}",
                }
            )
        return out

    def write(self, folder: Path, index: int) -> None:
        self._write(folder, index, version=0)

    def change(self, folder: Path, index: int) -> None:
        path = self._write(folder, index, version=1)
        _later_mtime(path)

    def _write(self, folder: Path, index: int, version: int) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / self.name(index)
        rows = self.records(index, version)
        if self.format == "csv":
            lines = ["id,account,amount,day"]
            lines += [",".join(str(r[c]) for c in TABLE_SCHEMA) for r in rows]
            path.write_text("\n".join(lines) + "\n")
        elif self.format == "jsonl":
            import json

            path.write_text("".join(json.dumps(_json_row(r)) + "\n" for r in rows), encoding="utf8")
        else:
            import pyarrow.parquet as pq

            pq.write_table(_typed(rows), path)
        return path

    def is_unit(self, key: str, index: int) -> bool:
        return Path(key).name == self.name(index)

    def source(self, folder: Path) -> Any:
        from ... import Files

        return Files(str(folder / f"*.{_TABLE_SUFFIXES[self.format]}"), schema=TABLE_SCHEMA)

    def assert_same(self, got: Any, want: Any) -> None:
        assert_same_frames(got, want)


def _typed(rows: list[dict[str, Any]]) -> Any:
    """The rows as a table of the declared types (every amount a number)."""
    import datetime as dt

    import pyarrow as pa

    return pa.table(
        {
            "id": pa.array([r["id"] for r in rows], pa.string()),
            "account": pa.array([r["account"] for r in rows], pa.string()),
            "amount": pa.array([float(r["amount"]) for r in rows], pa.float64()),
            "day": pa.array([dt.date.fromisoformat(r["day"]) for r in rows], pa.date32()),
        }
    )


def _json_row(row: dict[str, Any]) -> dict[str, Any]:
    try:
        return {**row, "amount": float(row["amount"])}
    except ValueError:
        return row  # a bad amount stays text


@dataclass(frozen=True)
class GriddedInput:
    """A day of hourly sensor data on a lat/lon grid per input: NetCDF files or Zarr stores.

    Input ``index`` is the day ``start + index``; its values encode the hour and
    the day, so two days never hold the same data. The source is a
    ``NetCDFSource`` (``format="netcdf"``) or a ``ZarrSource`` (``"zarr"``) along
    ``time``; each input is one unit. ``change`` rewrites an input with other
    values; a Zarr store also grows by one hour, since a ``ZarrSource`` tells a
    rewritten store by its shape and chunks, not by its values.

    Examples
    --------
    >>> GriddedInput("zarr").name(2)
    'sensors-002.zarr'
    """

    format: str = "netcdf"
    hours: int = 24
    start: str = "2024-03-01"
    bad_rows: int = 0

    def __post_init__(self) -> None:
        if self.format not in ("netcdf", "zarr"):
            raise ValueError("format must be netcdf or zarr")

    @property
    def rows(self) -> int:
        return self.hours

    def name(self, index: int) -> str:
        return f"sensors-{index:03d}.{'nc' if self.format == 'netcdf' else 'zarr'}"

    def dataset(self, index: int, version: int = 0, hours: int | None = None) -> Any:
        """The data of input ``index``; another ``version`` holds other values."""
        import numpy as np
        import pandas as pd
        import xarray as xr

        day = pd.Timestamp(self.start) + pd.Timedelta(days=index)
        lat, lon = np.linspace(-10.0, 10.0, 12), np.linspace(0.0, 30.0, 16)
        hours = self.hours if hours is None else hours
        hour = np.arange(hours, dtype="float32")[:, None, None]
        base = 280.0 + day.day_of_year + version / 2
        temp = (base + hour + np.zeros((1, len(lat), len(lon)), "float32")).astype("float32")
        return xr.Dataset(
            {
                "temperature": (("time", "lat", "lon"), temp, {"units": "K"}),
                "humidity": (("time", "lat", "lon"), np.full(temp.shape, 50.0, "float32")),
                "elevation": (("lat", "lon"), np.ones((len(lat), len(lon)))),
            },
            coords={
                "time": pd.date_range(day, periods=hours, freq="h"),
                "lat": lat,
                "lon": lon,
            },
            attrs={"title": "synthetic sensors"},
        )

    def write(self, folder: Path, index: int) -> None:
        self._write(folder, index, version=0)

    def change(self, folder: Path, index: int) -> None:
        self._write(folder, index, version=1)

    def _write(self, folder: Path, index: int, version: int) -> None:
        import shutil

        folder.mkdir(parents=True, exist_ok=True)
        path = folder / self.name(index)
        if self.format == "netcdf":
            self.dataset(index, version).to_netcdf(path)
            if version:
                _later_mtime(path)
            return
        hours = self.hours + (1 if version else 0)
        ds = self.dataset(index, version, hours=hours).chunk({"time": hours})
        shutil.rmtree(path, ignore_errors=True)
        ds.to_zarr(path, mode="w", consolidated=False, zarr_format=3)

    def is_unit(self, key: str, index: int) -> bool:
        return Path(key.split("#", 1)[0]).name == self.name(index)

    def source(self, folder: Path) -> Any:
        from ... import NetCDFSource, ZarrSource

        if self.format == "netcdf":
            return NetCDFSource(str(folder / "*.nc"))
        return ZarrSource(str(folder / "*.zarr"))

    def assert_same(self, got: Any, want: Any) -> None:
        import xarray as xr

        xr.testing.assert_identical(got, want)
        assert got.indexes["time"].is_unique, "a point along time is there twice"


def _later_mtime(path: Path, seconds: float = 10.0) -> None:
    """Move a rewritten file's modification time on, as a later delivery would have it.

    File systems with a coarse clock could otherwise give the old and the new
    content the same time.
    """
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + int(seconds * 1e9)))
