"""ZarrSink: chunk-aligned region writes of each batch into one Zarr store."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

from ...errors import CommitError, JobSpecError
from ..base import Part, Sink, file_checksum, local_path
from .axis import TimeAxis, fixed_step, timestamp
from .checks import check_alignment, differences, prepare, refusal, refuse_layout
from .commits import CommitMarkers, supersede, withdraw_stale, write_json
from .store import ZarrStore
from .verify import VerifyReport, verify

__all__ = ["ZarrSink"]


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
        step = fixed_step(self.freq)
        object.__setattr__(self, "start", timestamp(self.start, "sink.start").isoformat())
        if self.end is not None:
            end = timestamp(self.end, "sink.end")
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

    # -- plain facts ---------------------------------------------------------------------

    @property
    def location(self) -> str:
        return self.path

    def describe(self) -> str:
        return f"zarr {self.path} ({self.dim} from {self.start} every {self.freq})"

    def token(self) -> list[Any]:
        return ["ZarrSink", self.dim, self.start, self.freq, self.end, sorted(self.chunks.items())]

    @property
    def _axis(self) -> TimeAxis:
        return TimeAxis(self.dim, str(self.start), self.freq, _text(self.end), self.path)

    @property
    def _store(self) -> ZarrStore:
        return ZarrStore(self.path, self.dim)

    @property
    def _state(self) -> Path:
        root = Path(self.path)
        return root.parent / f".{root.name}.dbatch"

    @property
    def _markers(self) -> CommitMarkers:
        return CommitMarkers(self._state / "commits")

    def _meta(self) -> dict[str, Any] | None:
        return self._store.meta()

    def _write_marker(self, batch_id, fingerprint, state, region, store_id) -> None:
        self._markers.write(batch_id, fingerprint, state, region, store_id)

    # -- worker -----------------------------------------------------------------------------

    def stage(self, data, directory: Path, name: str) -> dict[str, Any]:
        """Check the batch against the axis, the chunks and an existing store; write it as NetCDF."""
        axis = self._axis
        prepared = prepare(axis, data, name)
        if prepared is None:
            return {"files": [], "rows": 0, "region": None}
        ds, i0, i1 = prepared
        meta = self._store.meta()
        if meta is not None:
            diffs = differences(axis, self.chunks, meta, ds)
            if diffs:
                refuse_layout(axis, self._state, name, diffs, refusal)
            # The driver re-checks against the arrays themselves; here only the root
            # attributes are read, which never change while the driver grows the arrays.
            declared = axis.declared_length()
            end: int | None = declared if declared is not None else i1
            chunk = {"the store": int(meta["chunks"][self.dim])}
            check_alignment(axis, name, (i0, i1), chunk, end, refusal)
        elif self.dim in self.chunks:
            c = self.chunks[self.dim]
            end = axis.declared_length() if self.end is not None else i1
            check_alignment(axis, name, (i0, i1), {"the sink": c}, end, refusal)
        out = directory / f"part-{name}.nc"
        ds.drop_encoding().to_netcdf(out, engine="h5netcdf")
        return {
            "files": [{"path": out.name, "rows": i1 - i0, "sha256": file_checksum(out)}],
            "rows": i1 - i0,
            "region": [i0, i1],
        }

    # -- driver -----------------------------------------------------------------------------

    def commit_batch(self, batch_id: str, fingerprint: str, part: Part) -> None:
        """Write the batch's region into the store (idempotent), then record it."""
        import xarray as xr

        axis, store, markers = self._axis, self._store, self._markers
        staged = sorted(part.directory.glob("part-*.nc"))
        if not staged:  # every input of the batch was quarantined: nothing to write
            markers.write(batch_id, fingerprint, "committed", None, None)
            return
        with xr.open_dataset(staged[0], engine="h5netcdf", cache=False) as f:
            prepared = prepare(axis, f.load(), batch_id)
        assert prepared is not None
        ds, i0, i1 = prepared
        meta = store.meta()
        if meta is None:
            meta = store.create(ds, axis, i1, self.chunks.get(self.dim) or (i1 - i0), self.chunks)
            markers.clear()  # records of an older store
        diffs = differences(axis, self.chunks, meta, ds)
        if diffs:
            refuse_layout(axis, self._state, batch_id, diffs, CommitError)
        length = axis.declared_length()
        end = length if length is not None else max(store.length(), i1)
        check_alignment(axis, batch_id, (i0, i1), store.chunks(), end, CommitError)
        store_id = meta["store_id"]
        markers.write(batch_id, fingerprint, "writing", [i0, i1], store_id)
        store.ensure_length(i1, axis.encoding()[1])
        store.write_region(ds, i0, i1)
        supersede(markers, store, batch_id, i0, i1)
        markers.write(batch_id, fingerprint, "committed", [i0, i1], store_id)

    def find_commit(self, batch_id: str, fingerprint: str) -> bool:
        """Committed with this fingerprint into the current store, with every chunk present."""
        marker = self._markers.read(batch_id)
        if (
            not marker
            or marker.get("state") != "committed"
            or marker.get("fingerprint") != fingerprint
        ):
            return False
        if marker.get("region") is None:
            return True
        meta = self._store.meta_or_none()
        if meta is None or meta.get("store_id") != marker.get("store_id"):
            return False
        return not self._store.missing(batch_id, marker["region"])

    def publish(
        self, run_id: str, parts: Sequence[Part], summary: dict[str, Any]
    ) -> dict[str, Any]:
        """Withdraw regions of batches no longer planned, verify, and record the run."""
        withdraw_stale(self._markers, self._store, {p.name for p in parts})
        report = self.verify()
        if not report.ok:
            raise CommitError(str(report))
        meta = self._store.meta_or_none()
        manifest = {
            "run_id": run_id,
            "store_id": meta.get("store_id") if meta else None,
            "committed": report.committed,
            "gaps": [list(g) for g in report.gaps],
            **summary,
        }
        self._state.mkdir(parents=True, exist_ok=True)
        write_json(self._state / "manifest.json", manifest)
        return {"path": self.path, "batches": report.committed, "gaps": len(report.gaps)}

    def current_manifest(self) -> dict[str, Any] | None:
        path = self._state / "manifest.json"
        meta = self._store.meta_or_none()
        if not path.exists() or (meta is None and Path(self.path).exists()):
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
        return verify(self._store, self._markers, self._axis)


def _text(value: str | date | datetime | None) -> str | None:
    return None if value is None else str(value)
