"""A job's work area: staging per run, committed batches, and the one rename that commits.

Layout below ``<workdir>/<job>/``::

    staging/<run id>/<batch id>.<random>/   what a worker wrote for one attempt
    batches/<batch id>-<fingerprint>/       committed batches (``_result.json`` inside)
    rejected/<batch id>-<fingerprint>/      batches refused for too many bad rows: their quarantine
    quarantine.parquet                      the published output's quarantined rows and files
    _buckets.json                           the aggregate's bucket count, fixed per job

Only the driver that holds the job's lock changes it.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

from .core import Batch, BatchResult

__all__ = [
    "WorkArea",
    "CommittedState",
    "read_result",
    "staging_name",
    "staged_results",
    "RESULT_FILE",
    "QUARANTINE_FILE",
    "QUARANTINE_STAMP",
]

RESULT_FILE = "_result.json"  # in a staged or committed batch: its BatchResult
QUARANTINE_FILE = "_quarantine.parquet"  # in a staged or committed batch: its quarantined rows
#: The schema metadata key of ``quarantine.parquet`` that says what it was gathered from.
QUARANTINE_STAMP = "dbatch.inputs"


def read_result(directory: str | os.PathLike[str]) -> BatchResult:
    """The ``BatchResult`` a worker left next to a staged (later committed) batch."""
    raw = json.loads((Path(directory) / RESULT_FILE).read_text())
    return BatchResult.from_dict(raw)


def staging_name(batch_id: str, attempt: int) -> str:
    """The folder one execution of an attempt stages into (unique: Dask may run a task twice)."""
    return f"{_attempt(batch_id, attempt)}.{uuid.uuid4().hex[:12]}"


def _attempt(batch_id: str, attempt: int) -> str:
    """What every ``staging_name`` of that attempt starts with (before its last dot)."""
    return f"{batch_id}.a{attempt}"


def committed_already(
    task_root: str | os.PathLike[str], batch: Batch, attempt: int
) -> BatchResult | None:
    """That attempt's result if the driver has committed it; an error if its run is over.

    Dask runs a finished task again when the worker holding its result dies and the
    driver still references it (the newest finished tasks are, for the dashboard).
    The committed folder's ``_result.json`` names the staging folder it came from:
    if that is this run's and this attempt's, the work is done. Two system calls
    when nothing is committed (an ``open`` that fails, and the run's folder), so a
    batch pays next to nothing for it.
    """
    root, mine = Path(task_root), _attempt(batch.id, attempt)
    target = WorkArea.of_staging(root).batch_dir(batch)
    try:
        result = read_result(target)
    except (OSError, ValueError, TypeError):  # not committed (or being replaced)
        result = None
    if result is not None:
        staged = Path(result.staging)  # <run id>/<attempt>.<uuid>
        if (staged.parent.name, staged.name.rpartition(".")[0]) == (root.name, mine):
            return replace(result, staging=str(target))
    if not root.is_dir():
        raise RuntimeError(
            f"batch {batch.id}: its run {root.name} has ended (no {root}); Dask ran it "
            "again after a worker died, and there is nothing left to do"
        )
    return None


def staged_results(
    root: str | os.PathLike[str], attempts: Iterable[tuple[str, int]]
) -> dict[tuple[str, int], BatchResult]:
    """The results that finished ``(batch id, attempt)``s left below the staging folder ``root``.

    One listing of ``root``, then each attempt's ``_result.json`` (written last, so a
    folder that has one holds the whole staged output). An attempt whose result is
    not found, or not readable yet, is left out: its caller asks the worker instead.
    """
    wanted = {_attempt(batch_id, attempt): (batch_id, attempt) for batch_id, attempt in attempts}
    found: dict[tuple[str, int], BatchResult] = {}
    try:
        entries = list(os.scandir(root))
    except OSError:
        return found
    for entry in entries:
        key = wanted.get(entry.name.rpartition(".")[0])
        if key is None or key in found:
            continue
        try:
            result = read_result(entry.path)
        except (OSError, ValueError, TypeError):  # not there (yet), or half written
            continue
        # The worker's path may be another mount of the same folder: the name must match.
        if result.batch_id == key[0] and Path(result.staging).name == entry.name:
            found[key] = replace(result, staging=entry.path)
    return found


#: (batch id, fingerprint) -> whether that committed batch has quarantined rows or files.
CommittedState = dict[tuple[str, str], bool]


# The aggregate's default bucket count: one per planned batch, at least MIN_BUCKETS and at
# most MAX_BUCKETS, but no more than one per BUCKET_BYTES of planned input.
MIN_BUCKETS = 4
BUCKET_BYTES = 16 * 2**20
MAX_BUCKETS = 32


class WorkArea:
    """Staging, committed batches and garbage collection of one job's work area."""

    def __init__(self, root: str | os.PathLike[str]):
        self.root = Path(root)
        self.committed = self.root / "batches"
        self.staging_root = self.root / "staging"
        self.quarantine = self.root / "quarantine.parquet"
        self.rejected = self.root / "rejected"

    def __repr__(self) -> str:
        return f"WorkArea({str(self.root)!r})"

    def staging(self, run_id: str) -> Path:
        """Where the workers of run ``run_id`` stage their attempts."""
        return self.staging_root / run_id

    @classmethod
    def of_staging(cls, run_staging: str | os.PathLike[str]) -> WorkArea:
        """The work area whose ``staging(run_id)`` is ``run_staging``."""
        return cls(Path(run_staging).parent.parent)

    def batch_dir(self, batch: Batch) -> Path:
        return self.committed / f"{batch.id}-{batch.fingerprint}"

    def is_committed(self, batch: Batch) -> bool:
        return (self.batch_dir(batch) / RESULT_FILE).exists()

    def result(self, batch: Batch) -> BatchResult:
        return read_result(self.batch_dir(batch))

    def state(self, batches: Iterable[Batch]) -> CommittedState:
        """What is committed here of ``batches``: plain data for ``reconcile``."""
        found: CommittedState = {}
        for batch in batches:
            if self.is_committed(batch):
                found[(batch.id, batch.fingerprint)] = self.result(batch).has_quarantine
        return found

    # -- changing it (the lock holder only) -----------------------------------------

    def clean_stale_staging(self) -> None:
        """Staging of earlier runs that died; safe because the caller holds the job's lock."""
        if self.staging_root.exists():
            for p in self.staging_root.iterdir():
                shutil.rmtree(p, ignore_errors=True)

    def drop_staging(self, run_id: str) -> None:
        shutil.rmtree(self.staging(run_id), ignore_errors=True)

    def promote(self, batch: Batch, staged: str | os.PathLike[str]) -> Path:
        """Commit a staged attempt with one rename (a replay replaces the earlier commit)."""
        target = self.batch_dir(batch)
        try:
            os.rename(staged, target)  # the common case: nothing committed there yet
            return target
        except FileNotFoundError:
            if not os.path.exists(staged):
                raise
            target.parent.mkdir(parents=True, exist_ok=True)  # the first commit of the job
        except OSError:
            if not target.exists():
                raise
        if target.exists():
            trash = target.with_name(target.name + f".old-{uuid.uuid4().hex[:6]}")
            os.rename(target, trash)
            os.rename(staged, target)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.rename(staged, target)
        return target

    def rejected_dir(self, batch: Batch) -> Path:
        """Where a batch refused for too many bad rows keeps its quarantined rows."""
        return self.rejected / f"{batch.id}-{batch.fingerprint}"

    def reject(self, batch: Batch, kept: str | os.PathLike[str]) -> Path:
        """Keep what a refused attempt set aside (its quarantine), replacing an earlier one."""
        target = self.rejected_dir(batch)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(target, ignore_errors=True)
        os.rename(kept, target)
        return target

    def collect_garbage(self, keep: Iterable[Batch]) -> None:
        """Remove committed batches that are no longer part of the plan (changed inputs)."""
        names = {self.batch_dir(b).name for b in keep}
        if self.committed.exists():
            for p in self.committed.iterdir():
                if p.name not in names:
                    shutil.rmtree(p, ignore_errors=True)
        if self.rejected.exists():  # a refused batch that has committed since, or changed
            for p in self.rejected.iterdir():
                if p.name in names and (self.committed / p.name).exists() or p.name not in names:
                    shutil.rmtree(p, ignore_errors=True)

    def bucket_count(self, fixed: int | None, batches: int, input_bytes: int) -> int:
        """The aggregate's bucket count: fixed per job once chosen, so resumed partials agree.

        Unless ``fixed``, one bucket per planned batch, at least ``MIN_BUCKETS`` (so a
        few large batches still reduce in parallel) and at most ``MAX_BUCKETS``, but no
        more than one per ``BUCKET_BYTES`` of planned input: a job over a few
        megabytes has one reduce task, not four of a few rows each (a source that does
        not know its sizes, 0 bytes, is not held back). Chosen from the inputs, never
        from the cluster, so the same job writes the same output files on one worker
        or on forty.
        """
        if fixed:
            return fixed
        marker = self.root / "_buckets.json"
        if marker.exists():
            return int(json.loads(marker.read_text())["buckets"])
        n = min(MAX_BUCKETS, max(MIN_BUCKETS, batches))
        if input_bytes > 0:
            n = min(n, -(-input_bytes // BUCKET_BYTES))
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(json.dumps({"buckets": n}))
        return n

    def has_quarantine_file(self, batch: Batch) -> bool:
        return (self.batch_dir(batch) / QUARANTINE_FILE).exists()

    def quarantined(self) -> Any:
        """What is set aside here, as a pandas DataFrame, oldest run first.

        The rows and files of the published output (``quarantine.parquet``, ``state``
        ``published``) and the rows of batches refused for too many bad rows
        (``rejected/``, ``state`` ``rejected``). Columns: ``source``, ``line`` (empty for
        a whole file or a row a step set aside), ``kind``, ``reason``, ``raw``,
        ``batch_id``, ``run_id``, ``state``.
        """
        import pandas as pd
        import pyarrow.parquet as pq

        found = [(self.quarantine, "published")] if self.quarantine.exists() else []
        if self.rejected.exists():
            found += [(p, "rejected") for p in sorted(self.rejected.glob(f"*/{QUARANTINE_FILE}"))]
        frames = [pq.read_table(path).to_pandas().assign(state=state) for path, state in found]
        columns = ["source", "line", "kind", "reason", "raw", "batch_id", "run_id", "state"]
        if not frames:
            return pd.DataFrame(columns=columns)
        rows = pd.concat(frames, ignore_index=True)[columns]
        rows["line"] = rows["line"].astype("Int64")
        return rows.sort_values(["run_id", "source", "line"], kind="stable", ignore_index=True)

    def quarantine_stamp(self) -> str | None:
        """What ``quarantine.parquet`` was gathered from (None: no file, or not readable)."""
        if not self.quarantine.exists():
            return None
        import pyarrow.parquet as pq

        try:
            meta = pq.read_schema(self.quarantine).metadata or {}
        except (OSError, ValueError):
            return None
        stamp = meta.get(QUARANTINE_STAMP.encode())
        return stamp.decode() if stamp is not None else None
