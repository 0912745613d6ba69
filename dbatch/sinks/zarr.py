"""Sinks for xarray Datasets: chunk-aligned region writes into one Zarr store, or one NetCDF file per batch."""

from __future__ import annotations

import itertools
import json
import logging
import math
import os
import shutil
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from ..errors import BadInputError, CommitError, JobSpecError
from .base import Part, Sink, file_checksum, local_path, safe_join
from .files import _FileSink

if TYPE_CHECKING:
    import xarray as xr

__all__ = ["ZarrSink", "NetCDFSink", "VerifyReport"]

log = logging.getLogger("dbatch")

_TIME_UNITS = (
    ("days", 86_400 * 10**9),
    ("hours", 3_600 * 10**9),
    ("minutes", 60 * 10**9),
    ("seconds", 10**9),
    ("milliseconds", 10**6),
    ("microseconds", 10**3),
    ("nanoseconds", 1),
)


def _dataset(data: Any, sink: str) -> xr.Dataset:
    import xarray as xr

    if isinstance(data, xr.Dataset):
        return data
    raise JobSpecError(
        f"the {sink} sink writes xarray Datasets, got {type(data).__name__}; use a netcdf or "
        "zarr source (table data goes to the parquet or csv sink)",
        key="sink.type",
    )


@dataclass(frozen=True)
class VerifyReport:
    """What ``ZarrSink.verify()`` found.

    ``committed`` counts the batches whose region is recorded as written,
    ``missing_chunks`` lists ``(batch id, variable, chunk key)`` of committed
    regions whose chunk files are gone (a reader would silently get fill values
    there), ``incomplete`` the batches whose region write never finished,
    ``gaps`` the stretches of the axis no committed batch covers, and
    ``problems`` anything wrong with the store as a whole. ``ok`` is true when
    every committed region is whole; gaps alone do not make it false.
    """

    path: str
    committed: int = 0
    missing_chunks: tuple[tuple[str, str, str], ...] = ()
    incomplete: tuple[str, ...] = ()
    gaps: tuple[tuple[str, str], ...] = ()
    problems: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not (self.missing_chunks or self.incomplete or self.problems)

    def __str__(self) -> str:
        head = f"zarr store {self.path}: {self.committed} committed batch region(s)"
        lines = [head + (", all chunks present" if self.ok else "")]
        lines += [f"  problem: {p}" for p in self.problems]
        if self.missing_chunks:
            batches = sorted({b for b, _, _ in self.missing_chunks})
            shown = ", ".join(f"{v}/{k}" for _, v, k in self.missing_chunks[:5])
            lines.append(
                f"  {len(self.missing_chunks)} chunk(s) missing in batch(es) {batches}: {shown}"
                + (" …" if len(self.missing_chunks) > 5 else "")
                + "; run the job again to rewrite them from the committed batches"
            )
        if self.incomplete:
            lines.append(
                f"  region write not finished for batch(es) {list(self.incomplete)}; "
                "run the job again to finish them"
            )
        if self.gaps:
            shown = ", ".join(a if a == b else f"{a} … {b}" for a, b in self.gaps[:5])
            lines.append(f"  not written by any batch (reads as fill values): {shown}")
        return "\n".join(lines)


@dataclass(frozen=True)
class ZarrSink(Sink):
    """One Zarr store along a regular time axis; each batch writes its own region.

    The first commit writes the store's template (coordinates, static variables
    and empty arrays) with ``to_zarr(compute=False)`` into a hidden folder and
    renames it into place. Each batch is then written into the region its
    timestamps map to, on the driver, after checking it starts and ends on
    chunk boundaries (refused otherwise, before anything is written). A batch's
    position comes from its timestamps, never from the store's current end, so
    re-running a window rewrites its region and appending extends the axis once.
    Commit records live next to the store (``.<name>.dbatch/``); a region whose
    write did not finish is never recorded as committed, and ``verify()``
    reports missing chunks instead of letting readers get fill values.

    Parameters
    ----------
    path
        The store (a local or mounted folder).
    start
        The first label of the axis (``"2024-01-01"``).
    freq
        The axis step, a fixed pandas frequency (``"1D"``, ``"1h"``, ``"10min"``).
    end
        The last label: the template then covers the whole axis at once. Without
        it the axis grows as later batches arrive.
    dim
        The dimension batches are cut along.
    chunks
        Chunk sizes per dimension. Along ``dim`` the default is the length of the
        first batch written; other dimensions default to one chunk.

    Examples
    --------
    >>> ZarrSink("daily.zarr", start="2024-01-01", freq="1D", chunks={"time": 7})  # doctest: +SKIP

    The store is read with ``xr.open_zarr("daily.zarr", consolidated=False)``.
    """

    path: str
    start: str | date | datetime
    freq: str = "1D"
    end: str | date | datetime | None = None
    dim: str = "time"
    chunks: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self):
        import pandas as pd

        object.__setattr__(self, "path", local_path(self.path, "zarr"))
        step = _fixed_step(self.freq)
        object.__setattr__(self, "start", _timestamp(self.start, "sink.start").isoformat())
        if self.end is not None:
            end = _timestamp(self.end, "sink.end")
            steps = (end - pd.Timestamp(self.start)).value / step
            if steps < 0 or steps != int(steps):
                raise JobSpecError(
                    f"end {end} is not on the axis that starts at {self.start} every {self.freq}",
                    key="sink.end",
                )
            object.__setattr__(self, "end", end.isoformat())
        bad = {k: v for k, v in dict(self.chunks).items() if not isinstance(v, int) or v <= 0}
        if bad:
            raise JobSpecError(
                f"chunk sizes must be positive whole numbers: {bad}", key="sink.chunks"
            )
        object.__setattr__(self, "chunks", dict(self.chunks))

    # -- plain facts about the axis ---------------------------------------------------

    @property
    def location(self) -> str:
        return self.path

    def describe(self) -> str:
        return f"zarr {self.path} ({self.dim} from {self.start} every {self.freq})"

    def token(self) -> list[Any]:
        return ["ZarrSink", self.dim, self.start, self.freq, self.end, sorted(self.chunks.items())]

    @property
    def _root(self) -> Path:
        return Path(self.path)

    @property
    def _state(self) -> Path:
        return self._root.parent / f".{self._root.name}.dbatch"

    @property
    def _step_ns(self) -> int:
        return _fixed_step(self.freq)

    @property
    def _start_ns(self) -> int:
        import pandas as pd

        return int(pd.Timestamp(self.start).value)

    def _declared_length(self) -> int | None:
        if self.end is None:
            return None
        import pandas as pd

        return (int(pd.Timestamp(self.end).value) - self._start_ns) // self._step_ns + 1

    def _time_encoding(self) -> tuple[str, int]:
        step = self._step_ns
        unit, size = next((u, n) for u, n in _TIME_UNITS if step % n == 0)
        return f"{unit} since {self.start}", step // size

    def _labels(self, i0: int, i1: int):
        import numpy as np

        ns = self._start_ns + np.arange(i0, i1, dtype="int64") * self._step_ns
        return ns.astype("datetime64[ns]")

    def _label(self, i: int) -> str:
        import pandas as pd

        return pd.Timestamp(self._start_ns + i * self._step_ns).isoformat()

    def _index(self, values) -> Any:
        import numpy as np

        if not np.issubdtype(np.asarray(values).dtype, np.datetime64):
            raise BadInputError(
                f"'{self.dim}' holds {np.asarray(values).dtype} values; the zarr sink needs "
                "timestamps",
                kind="axis",
                where=self.path,
            )
        offsets = np.asarray(values, dtype="datetime64[ns]").astype("int64") - self._start_ns
        off_axis = np.flatnonzero((offsets % self._step_ns != 0) | (offsets < 0))
        if off_axis.size:
            import pandas as pd

            bad = pd.Timestamp(np.asarray(values)[off_axis[0]]).isoformat()
            raise BadInputError(
                f"'{self.dim}' value {bad} is not on the store's axis ({self.start} every "
                f"{self.freq}); resample to {self.freq} first (a resample step) or fix the sink's "
                "start",
                kind="axis",
                where=self.path,
            )
        return offsets // self._step_ns

    # -- preparing one batch (worker and driver) ----------------------------------------

    def _prepare(self, data: Any, name: str) -> tuple[xr.Dataset, int, int] | None:
        import numpy as np

        ds = _dataset(data, "zarr")
        if self.dim not in ds.dims or ds.sizes[self.dim] == 0:
            return None
        ds = ds.sortby(self.dim)
        index = self._index(ds[self.dim].values)
        if np.unique(index).size != index.size:
            raise BadInputError(
                f"batch {name} holds the same '{self.dim}' value twice; remove duplicate inputs",
                kind="duplicates",
                where=self.path,
            )
        i0, i1 = int(index[0]), int(index[-1]) + 1
        if i1 - i0 != index.size:
            holes = [v for v in ds.data_vars if self.dim in ds[v].dims and ds[v].dtype.kind != "f"]
            if holes:
                raise BadInputError(
                    f"batch {name} has gaps along '{self.dim}' and variable(s) {holes} cannot hold "
                    "missing values; fill the gaps or make the variables floating point",
                    kind="gaps",
                    where=self.path,
                )
            ds = ds.reindex({self.dim: self._labels(i0, i1)})  # missing steps become NaN
        declared = self._declared_length()
        if declared is not None and i1 > declared:
            raise JobSpecError(
                f"batch {name} reaches {self._label(i1 - 1)}, after the store's end {self.end}; "
                "raise end (a new store) or leave it out so the axis grows",
                key="sink.end",
            )
        return ds, i0, i1

    def _check_alignment(
        self, name: str, i0: int, i1: int, chunks: Mapping[str, int], end: int | None, error
    ) -> None:
        for var, c in sorted(chunks.items()):
            start_ok = i0 % c == 0
            stop_ok = i1 % c == 0 or (end is not None and i1 >= end)
            if start_ok and stop_ok:
                continue
            edge = i0 if not start_ok else i1
            lo, hi = edge // c * c, (edge // c + 1) * c
            raise error(
                f"batch {name} would write {self.dim}[{i0}:{i1}] ({self._label(i0)} … "
                f"{self._label(i1 - 1)}) of {self.path}, which does not line up with the chunks: "
                f"along '{self.dim}' {var} has chunks of {c} points, so a region must "
                f"{'start' if not start_ok else 'end'} on a multiple of {c} ({self._label(lo)} or "
                f"{self._label(hi)}), not at {self._label(edge)}. Nothing was written. Make each "
                f"batch cover whole chunks (a batching window of {c} x {self.freq}), or write to a "
                f"new store with chunks: {{{self.dim}: n}} where n divides every batch"
            )

    # -- the store as it is ---------------------------------------------------------------

    def _group(self, mode: Literal["r", "r+"] = "r"):
        import zarr

        return zarr.open_group(str(self._root), mode=mode)

    def _meta(self) -> dict[str, Any] | None:
        if not (self._root / "zarr.json").exists():
            return None
        meta = self._group().attrs.asdict().get("dbatch")
        if not isinstance(meta, dict):
            raise JobSpecError(
                f"{self.path} exists and was not written by dbatch's zarr sink; choose another "
                "path (dbatch never overwrites it)",
                key="sink.path",
            )
        return meta

    def _arrays_along(self, group: Any = None) -> list[tuple[str, Any, int]]:
        """``(name, array, axis of dim)`` of every array of the store (or of ``group``) along dim."""
        out = []
        for name, arr in (group if group is not None else self._group()).arrays():
            dims = list(arr.metadata.dimension_names or ())
            if self.dim in dims:
                out.append((name, arr, dims.index(self.dim)))
        return out

    def _store_chunks(self) -> dict[str, int]:
        return {
            f"variable '{name}'": int(arr.metadata.chunk_grid.chunk_shape[ax])
            for name, arr, ax in self._arrays_along()
            if name != self.dim
        }

    def _store_length(self) -> int:
        return max((arr.shape[ax] for _, arr, ax in self._arrays_along()), default=0)

    def _differences(self, meta: Mapping[str, Any], ds: xr.Dataset) -> list[str]:
        """How the existing store differs from this sink's definition and the batch's layout.

        Reads only the store's root attributes (written once, when the store was
        created), so a worker can check while the driver grows the arrays.
        """
        from ..sources.xarray import Layout

        out = []
        for key in ("dim", "start", "freq", "end"):
            if meta.get(key) != getattr(self, key):
                out.append(
                    f"the store has {key}={meta.get(key)!r}, the sink says {getattr(self, key)!r}"
                )
        for d, size in self.chunks.items():
            have = meta.get("chunks", {}).get(d)
            if have is not None and have != size:
                out.append(f"the store has chunks of {have} along '{d}', the sink says {size}")
        theirs = Layout.from_dict(meta["layout"])
        mine = Layout.of(ds, self.dim)
        if mine.signature != theirs.signature:
            out += mine.differences(theirs)
        return out

    def _refuse_layout(self, name: str, diffs: list[str], error) -> None:
        raise error(
            f"batch {name} does not fit the existing store {self.path}: {'; '.join(diffs)}. "
            f"Write to a new path, or delete the store and {self._state} to rebuild it from "
            "every batch"
        )

    # -- worker -----------------------------------------------------------------------------

    def stage(self, data, directory: Path, name: str) -> dict[str, Any]:
        """Check the batch against the axis, the chunks and an existing store; write it as NetCDF."""
        prepared = self._prepare(data, name)
        if prepared is None:
            return {"files": [], "rows": 0, "region": None}
        ds, i0, i1 = prepared
        meta = self._meta()
        if meta is not None:
            diffs = self._differences(meta, ds)
            if diffs:
                self._refuse_layout(name, diffs, _refusal)
            # The driver re-checks against the arrays themselves; here only the root
            # attributes are read, which never change while the driver grows the arrays.
            declared = self._declared_length()
            end: int | None = declared if declared is not None else i1
            chunk = {"the store": int(meta["chunks"][self.dim])}
            self._check_alignment(name, i0, i1, chunk, end, _refusal)
        elif self.dim in self.chunks:
            c = self.chunks[self.dim]
            end = self._declared_length() if self.end is not None else i1
            self._check_alignment(name, i0, i1, {"the sink": c}, end, _refusal)
        out = directory / f"part-{name}.nc"
        ds.drop_encoding().to_netcdf(out, engine="netcdf4")
        return {
            "files": [{"path": out.name, "rows": i1 - i0, "sha256": file_checksum(out)}],
            "rows": i1 - i0,
            "region": [i0, i1],
        }

    # -- driver -----------------------------------------------------------------------------

    def commit_batch(self, batch_id: str, fingerprint: str, part: Part) -> None:
        """Write the batch's region into the store (idempotent), then record it."""
        import xarray as xr

        staged = sorted(part.directory.glob("part-*.nc"))
        if not staged:  # every input of the batch was quarantined: nothing to write
            self._write_marker(batch_id, fingerprint, "committed", None, None)
            return
        with xr.open_dataset(staged[0], engine="netcdf4", cache=False) as f:
            prepared = self._prepare(f.load(), batch_id)
        assert prepared is not None
        ds, i0, i1 = prepared
        meta = self._meta()
        if meta is None:
            meta = self._create(ds, i1, self.chunks.get(self.dim) or (i1 - i0))
        diffs = self._differences(meta, ds)
        if diffs:
            self._refuse_layout(batch_id, diffs, CommitError)
        length = self._declared_length()
        end = length if length is not None else max(self._store_length(), i1)
        self._check_alignment(batch_id, i0, i1, self._store_chunks(), end, CommitError)
        store_id = meta["store_id"]
        self._write_marker(batch_id, fingerprint, "writing", [i0, i1], store_id)
        self._ensure_length(i1)
        region = ds.drop_vars([v for v in ds.variables if self.dim not in ds[v].dims])
        region.drop_encoding().to_zarr(
            str(self._root),
            region={self.dim: slice(i0, i1)},
            mode="r+",
            consolidated=False,
            write_empty_chunks=True,
        )
        self._supersede(batch_id, i0, i1)
        self._write_marker(batch_id, fingerprint, "committed", [i0, i1], store_id)

    def find_commit(self, batch_id: str, fingerprint: str) -> bool:
        """Committed with this fingerprint into the current store, with every chunk present."""
        marker = self._read_marker(batch_id)
        if (
            not marker
            or marker.get("state") != "committed"
            or marker.get("fingerprint") != fingerprint
        ):
            return False
        if marker.get("region") is None:
            return True
        meta = self._meta_or_none()
        if meta is None or meta.get("store_id") != marker.get("store_id"):
            return False
        return not self._missing(batch_id, marker["region"])

    def publish(
        self, run_id: str, parts: Sequence[Part], summary: dict[str, Any]
    ) -> dict[str, Any]:
        """Withdraw regions of batches no longer planned, verify, and record the run."""
        keep = {p.name for p in parts}
        self._withdraw_stale(keep)
        report = self.verify()
        if not report.ok:
            raise CommitError(str(report))
        meta = self._meta_or_none()
        manifest = {
            "run_id": run_id,
            "store_id": meta.get("store_id") if meta else None,
            "committed": report.committed,
            "gaps": [list(g) for g in report.gaps],
            **summary,
        }
        self._state.mkdir(parents=True, exist_ok=True)
        _write_json(self._state / "manifest.json", manifest)
        return {"path": self.path, "batches": report.committed, "gaps": len(report.gaps)}

    def current_manifest(self) -> dict[str, Any] | None:
        path = self._state / "manifest.json"
        meta = self._meta_or_none()
        if not path.exists() or (meta is None and self._root.exists()):
            return None
        try:
            manifest = json.loads(path.read_text())
        except ValueError:
            return None
        if manifest.get("store_id") != (meta.get("store_id") if meta else None):
            return None
        return manifest

    def verify(self) -> VerifyReport:
        """Check every committed region's chunks, unfinished writes and the time axis.

        Examples
        --------
        >>> report = sink.verify()  # doctest: +SKIP
        >>> report.ok, report.missing_chunks  # doctest: +SKIP
        """
        import numpy as np

        meta = self._meta_or_none()
        markers = self._markers()
        if meta is None:
            written = [m for m in markers if m.get("region") is not None]
            gone = ("the store does not exist",) if written else ()
            return VerifyReport(self.path, problems=gone)
        mine = [m for m in markers if m.get("store_id") in (meta["store_id"], None)]
        missing: list[tuple[str, str, str]] = []
        incomplete, covered, committed = [], [], 0
        for m in mine:
            if m.get("state") != "committed":
                incomplete.append(m["batch_id"])
                continue
            if m.get("region") is not None:
                committed += 1
                covered.append(tuple(m["region"]))
                missing += self._missing(m["batch_id"], m["region"])
        length = self._store_length()
        problems: list[str] = []
        _, k = self._time_encoding()
        values = self._group()[self.dim][:]
        wrong = np.flatnonzero(values != np.arange(len(values), dtype="int64") * k)
        if wrong.size:
            problems.append(
                f"the '{self.dim}' coordinate is damaged at {wrong.size} position(s) (from "
                f"{self._label(int(wrong[0]))}); run the job again to rewrite it"
            )
        return VerifyReport(
            self.path,
            committed=committed,
            missing_chunks=tuple(missing),
            incomplete=tuple(sorted(incomplete)),
            gaps=tuple(self._gaps(covered, length)),
            problems=tuple(problems),
        )

    # -- writing the store ---------------------------------------------------------------

    def _create(self, ds: xr.Dataset, length: int, chunk: int) -> dict[str, Any]:
        """Write the template into a hidden folder, then rename it into place."""
        import dask.array as da
        import xarray as xr

        from ..sources.xarray import Layout

        length = self._declared_length() or length
        template = xr.Dataset(coords={self.dim: self._labels(0, length)})
        encoding: dict[str, dict[str, Any]] = {}
        for name, var in ds.variables.items():
            if name == self.dim:
                continue
            sizes = [length if d == self.dim else var.sizes[d] for d in var.dims]
            chunks = tuple(
                chunk if d == self.dim else min(self.chunks.get(str(d), n), n)
                for d, n in zip(var.dims, sizes, strict=True)
            )
            if self.dim in var.dims:
                data = da.empty(tuple(sizes), chunks=chunks, dtype=var.dtype)
                new = xr.Variable(var.dims, data, attrs=var.attrs)
            else:
                new = var.copy(deep=False)
            encoding[str(name)] = {"chunks": chunks}
            if name in ds.coords:
                template = template.assign_coords({name: new})
            else:
                template[name] = new
        units, _ = self._time_encoding()
        encoding[self.dim] = {
            "units": units,
            "calendar": "proleptic_gregorian",
            "dtype": "int64",
            "chunks": (chunk * math.ceil(4096 / chunk),),
        }
        meta = {
            "store_id": uuid.uuid4().hex,
            "dim": self.dim,
            "start": self.start,
            "freq": self.freq,
            "end": self.end,
            "chunks": {self.dim: chunk, **{d: c for d, c in self.chunks.items() if d != self.dim}},
            "layout": Layout.of(ds, self.dim).to_dict(),
        }
        template.attrs = {**ds.attrs, "dbatch": meta}
        building = self._root.parent / f".{self._root.name}.creating-{uuid.uuid4().hex[:8]}"
        self._root.parent.mkdir(parents=True, exist_ok=True)
        template.to_zarr(
            str(building),
            mode="w-",
            compute=False,
            consolidated=False,
            zarr_format=3,
            encoding=encoding,
            write_empty_chunks=True,
        )
        os.rename(building, self._root)
        shutil.rmtree(self._state / "commits", ignore_errors=True)  # records of an older store
        return meta

    def _ensure_length(self, n: int) -> None:
        """Grow every array along ``dim`` to at least ``n`` and write the axis (repairs a torn grow)."""
        import numpy as np

        group = self._group("r+")
        arrays = [(arr, ax) for _, arr, ax in self._arrays_along(group)]
        target = max([n] + [arr.shape[ax] for arr, ax in arrays])
        for arr, ax in arrays:
            if arr.shape[ax] < target:
                arr.resize(tuple(target if i == ax else s for i, s in enumerate(arr.shape)))
        _, k = self._time_encoding()
        axis = group[self.dim]
        expected = np.arange(target, dtype="int64") * k
        if not np.array_equal(axis[:], expected):
            axis[:] = expected

    def _chunk_paths(self, arr, ax: int, i0: int, i1: int):
        shape = arr.shape
        chunk_shape = arr.metadata.chunk_grid.chunk_shape
        ranges = [
            range(i0 // c, math.ceil(min(i1, s) / c)) if a == ax else range(math.ceil(s / c))
            for a, (s, c) in enumerate(zip(shape, chunk_shape, strict=True))
        ]
        for coords in itertools.product(*ranges):
            key = arr.metadata.encode_chunk_key(coords)
            yield key, self._root / arr.path / key

    def _missing(self, batch_id: str, region: Sequence[int]) -> list[tuple[str, str, str]]:
        i0, i1 = region
        out = []
        for name, arr, ax in self._arrays_along():
            for key, path in self._chunk_paths(arr, ax, i0, i1):
                if not path.exists():
                    out.append((batch_id, name, key))
        return out

    def _gaps(self, covered: list[tuple[int, int]], length: int) -> list[tuple[str, str]]:
        gaps, pos = [], 0
        for i0, i1 in sorted(covered):
            if i0 > pos:
                gaps.append((self._label(pos), self._label(i0 - 1)))
            pos = max(pos, i1)
        if pos < length:
            gaps.append((self._label(pos), self._label(length - 1)))
        return gaps

    def _withdraw_stale(self, keep: set[str]) -> None:
        """Regions of batches that are no longer part of the plan are deleted (they read as gaps)."""
        markers = self._markers()
        kept = [tuple(m["region"]) for m in markers if m["batch_id"] in keep and m.get("region")]
        for m in markers:
            if m["batch_id"] in keep:
                continue
            if m.get("region") is not None and self._meta_or_none() is not None:
                i0, i1 = m["region"]
                for _, arr, ax in self._arrays_along():
                    if arr.path == self.dim:
                        continue
                    c = arr.metadata.chunk_grid.chunk_shape[ax]
                    for j in range(i0 // c, math.ceil(i1 / c)):
                        lo, hi = j * c, (j + 1) * c
                        if any(a < hi and lo < b for a, b in kept):
                            continue
                        for _key, path in self._chunk_paths(arr, ax, lo, min(hi, arr.shape[ax])):
                            path.unlink(missing_ok=True)
                log.info(
                    "dbatch: withdrew %s[%s:%s] of batch %s (no longer planned)",
                    self.dim,
                    i0,
                    i1,
                    m["batch_id"],
                )
            self._marker_path(m["batch_id"]).unlink(missing_ok=True)

    def _supersede(self, batch_id: str, i0: int, i1: int) -> None:
        for m in self._markers():
            region = m.get("region")
            if m["batch_id"] == batch_id or region is None:
                continue
            if region[0] < i1 and i0 < region[1]:
                log.warning(
                    "dbatch: batch %s rewrote %s[%s:%s], which batch %s had written; %s is no "
                    "longer recorded as committed in %s",
                    batch_id,
                    self.dim,
                    i0,
                    i1,
                    m["batch_id"],
                    m["batch_id"],
                    self.path,
                )
                self._marker_path(m["batch_id"]).unlink(missing_ok=True)

    # -- commit records -----------------------------------------------------------------

    def _meta_or_none(self) -> dict[str, Any] | None:
        try:
            return self._meta()
        except (JobSpecError, OSError, ValueError, KeyError):
            return None

    def _marker_path(self, batch_id: str) -> Path:
        return safe_join(self._state / "commits", f"{batch_id}.json")

    def _read_marker(self, batch_id: str) -> dict[str, Any] | None:
        path = self._marker_path(batch_id)
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return None

    def _markers(self) -> list[dict[str, Any]]:
        folder = self._state / "commits"
        if not folder.exists():
            return []
        out = []
        for p in sorted(folder.glob("*.json")):
            try:
                out.append(json.loads(p.read_text()))
            except ValueError:
                continue
        return out

    def _write_marker(self, batch_id, fingerprint, state, region, store_id) -> None:
        folder = self._state / "commits"
        folder.mkdir(parents=True, exist_ok=True)
        record = {
            "batch_id": batch_id,
            "fingerprint": fingerprint,
            "state": state,
            "region": region,
            "store_id": store_id,
        }
        _write_json(self._marker_path(batch_id), record)


def _fixed_step(freq: str) -> int:
    """The step of a fixed frequency in nanoseconds (``1D``, ``1h``); calendar ones are refused."""
    import pandas as pd

    try:
        step = int(pd.Timedelta(pd.tseries.frequencies.to_offset(freq)).value)
    except (TypeError, ValueError):
        step = 0
    if step <= 0:
        raise JobSpecError(
            f"freq must be a fixed step such as 1D, 1h or 10min, got {freq!r} "
            "(calendar months, weeks and years are not evenly spaced)",
            key="sink.freq",
        )
    return step


def _refusal(message: str) -> JobSpecError:
    return JobSpecError(message, key="sink")


def _timestamp(value: Any, key: str):
    import pandas as pd

    try:
        ts = pd.Timestamp(value)
    except (TypeError, ValueError):
        raise JobSpecError(f"{value!r} is not a date or timestamp", key=key) from None
    if ts.tzinfo is not None:
        ts = ts.tz_convert("UTC").tz_localize(None)
    return ts


def _write_json(path: Path, record: Mapping[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}")
    tmp.write_text(json.dumps(record, indent=1, sort_keys=True, default=str))
    os.replace(tmp, path)


@dataclass(frozen=True)
class NetCDFSink(_FileSink):
    """One NetCDF file per batch, published atomically per run like the Parquet sink.

    ``path`` becomes a link to the run's complete version holding
    ``part-<batch id>.nc`` files, ``_manifest.json`` and ``_SUCCESS``; readers
    open them with ``xr.open_mfdataset(path + "/*.nc")``.

    Examples
    --------
    >>> NetCDFSink("out/daily-nc")  # doctest: +SKIP
    """

    engine: str = "netcdf4"
    suffix = ".nc"

    def __post_init__(self):
        super().__post_init__()
        if self.partition_by:
            raise JobSpecError(
                "the netcdf sink writes one file per batch; partition_by is for table sinks",
                key="sink.partition_by",
            )
        if self.engine not in ("netcdf4", "h5netcdf", "scipy"):
            raise JobSpecError("engine must be netcdf4, h5netcdf or scipy", key="sink.engine")

    def token(self) -> list[Any]:
        return ["NetCDFSink", self.engine]

    def stage(self, data, directory: Path, name: str) -> dict[str, Any]:
        ds = _dataset(data, "netcdf")
        rows = int(next(iter(ds.sizes.values()), 0))
        if not ds.variables:
            return {"files": [], "rows": 0}
        out = directory / f"part-{name}{self.suffix}"
        ds.drop_encoding().to_netcdf(out, engine=self.engine)  # type: ignore[call-overload]
        return {
            "files": [{"path": out.name, "rows": rows, "sha256": file_checksum(out)}],
            "rows": rows,
        }
