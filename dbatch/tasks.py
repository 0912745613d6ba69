"""What runs on a worker: one batch task, one reduce bucket, the quarantine gathered (no Dask here).

A ``BatchTask`` is frozen, plain data: the batch and the run-time values of one
attempt (run id, staging root, attempt number, bucket count). Together with the
pipeline's ``PhysicalPlan`` it is everything a worker needs.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pyarrow as pa

from . import workarea
from .arrow import as_arrow, count_rows
from .compile.physical import PhysicalPlan
from .context import QUARANTINE_SCHEMA, BatchContext
from .core import Batch, BatchResult, QuarantinedFile
from .errors import TooManyBadRows
from .memory import FreedMemoryKept, PeakMemory
from .protocols import Prepares, RefusesRows, Scannable, StagesQueries
from .redact import scrub_all
from .workarea import QUARANTINE_FILE, QUARANTINE_STAMP, RESULT_FILE, read_result, staging_name

__all__ = [
    "BatchTask",
    "process_batch",
    "reduce_bucket",
    "write_sorted",
    "gather_quarantine",
    "warm_worker",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchTask:
    """One attempt of one batch, as a worker receives it."""

    batch: Batch
    run_id: str
    staging_root: str
    attempt: int = 1
    buckets: int = 1
    fault: Callable[[Batch, int], None] | None = None


def process_batch(
    plan: PhysicalPlan, task: BatchTask, shared: Mapping[str, Any] | None = None
) -> BatchResult:
    """Load, transform and stage one batch; return counts and where the files are.

    Writes only below a fresh directory of ``task.staging_root``; the driver commits
    by renaming it, so a worker that dies mid-write leaves nothing a reader can see.
    """
    started = time.perf_counter()
    batch = task.batch
    done = workarea.committed_already(task.staging_root, batch, task.attempt)
    if done is not None:  # run again by Dask, its worker gone: the driver has it committed
        return done
    if task.fault is not None:
        task.fault(batch, task.attempt)
    staging = Path(task.staging_root) / staging_name(batch.id, task.attempt)
    # Scoring (a step that prepares a model) makes and drops large arrays: keep them.
    keep = any(isinstance(s, Prepares) for s in plan.steps)
    with FreedMemoryKept() if keep else nullcontext(), PeakMemory() as memory:
        ctx, info, rows_out = _stage(plan, task, shared if shared is not None else {}, staging)
    quarantined = ctx.quarantined_rows()
    if quarantined.num_rows:
        _write_quarantine(quarantined, staging / QUARANTINE_FILE, batch.id, task.run_id)
    result = BatchResult(
        batch_id=batch.id,
        fingerprint=batch.fingerprint,
        staging=str(staging),
        rows_in=ctx.rows_in,
        rows_out=rows_out,
        rows_filtered=ctx.rows_filtered,
        rows_quarantined=ctx.rows_quarantined,
        files_quarantined=list(ctx.files),
        rows_by_kind=dict(ctx.rows_by_kind),
        checksum=_checksum(info, staging),
        duration=time.perf_counter() - started,
        worker=f"{socket.gethostname()}:{os.getpid()}",
        extra=info,
        quarantine_kinds=_kinds(quarantined, ctx.files),
        peak_memory=memory.grown,
    )
    (staging / RESULT_FILE).write_text(json.dumps(scrub_all(result.to_dict()), default=str))
    return result


def _kinds(rows: pa.Table, files: Sequence[QuarantinedFile]) -> dict[str, int]:
    """How many rows and files were set aside, by kind."""
    from collections import Counter

    found = Counter(rows.column("kind").to_pylist()) + Counter(f.kind for f in files)
    return {str(kind): n for kind, n in sorted(found.items())}


def _stage(
    plan: PhysicalPlan, task: BatchTask, shared: Mapping[str, Any], staging: Path
) -> tuple[BatchContext, dict[str, Any], int]:
    """Run the plan on the batch and stage its output: (context, what was staged, rows out).

    A Parquet file whose footer reads can still hold a damaged page, which DuckDB
    finds only while the scan reads its rows: that file is quarantined (its
    message kept) and the batch is read once more without it.
    """
    import duckdb

    unreadable = (duckdb.Error, pa.ArrowException, OSError)
    damaged: list[tuple[str, str]] = []
    while True:
        ctx = BatchContext(batch=task.batch, run_id=task.run_id, mode=plan.mode, shared=shared)
        skipped = {key for key, _ in damaged}
        batch = replace(
            task.batch, units=tuple(u for u in task.batch.units if u.key not in skipped)
        )
        for key, message in damaged:
            ctx.quarantine_file(key, "corrupt", message)
        try:
            return _stage_once(plan, task, batch, ctx, staging)
        except unreadable as e:
            shutil.rmtree(staging, ignore_errors=True)
            found = _damaged(plan, batch, e)
            if found is None:
                raise
            log.warning("batch %s: %s cannot be read (%s); quarantined", batch.id, found, e)
            damaged.append((found, f"not a readable Parquet file: {e}"))


def _damaged(plan: PhysicalPlan, batch: Batch, error: BaseException) -> str | None:
    if not plan.scan or not isinstance(plan.source, Scannable):
        return None
    return plan.source.damaged_file(batch, error)


def _stage_once(
    plan: PhysicalPlan, task: BatchTask, batch: Batch, ctx: BatchContext, staging: Path
) -> tuple[BatchContext, dict[str, Any], int]:
    data = plan.run(batch, ctx, task.buckets)
    if plan.is_stream(data):
        # The rows go into the aggregate's buckets as they come: never all in memory.
        staging.mkdir(exist_ok=False)  # in the run's folder, if the run is on
        try:
            info = plan.aggregate.map_side(data, staging, task.buckets, plan.partials.preaggregate)
            _check_bad_fraction(plan, task, ctx)  # complete once the rows have been read
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return ctx, info, data.rows
    tabular = not hasattr(data, "sizes")  # an xarray Dataset has no rows to refuse
    if plan.aggregate is None and tabular and isinstance(plan.sink, RefusesRows):
        data = _set_aside_refused(plan.sink, plan.sink.describe(), data, ctx)
    rows_out = count_rows(data, plan.dim)
    _check_bad_fraction(plan, task, ctx)
    staging.mkdir(exist_ok=False)  # in the run's folder, if the run is on
    if plan.aggregate is not None:
        info = plan.aggregate.map_side(data, staging, task.buckets, plan.partials.preaggregate)
    else:
        info = plan.sink.stage(data, staging, name=batch.id)
    return ctx, info, rows_out


def _set_aside_refused(sink: RefusesRows, where: str, data: Any, ctx: BatchContext) -> Any:
    """Quarantine the rows the sink cannot write (kind ``path_escape``); the rest go on."""
    import pyarrow.compute as pc

    refused = sink.refused_rows(data)
    if not refused:
        return data
    table = as_arrow(data)
    rows = [i for i, _ in refused]
    raw = [json.dumps(r, default=str) for r in table.take(rows).to_pylist()]
    ctx.quarantine_rows(where, "path_escape", [why for _, why in refused], raw)
    keep = pc.invert(pc.is_in(pa.array(range(table.num_rows)), value_set=pa.array(rows)))
    return table.filter(keep)


def _check_bad_fraction(plan: PhysicalPlan, task: BatchTask, ctx: BatchContext) -> None:
    """Refuse a batch with too many bad rows, keeping its quarantined rows for inspection."""
    bad, total = ctx.rows_quarantined, ctx.rows_in
    if not total or bad / total <= plan.max_bad_fraction:
        return
    rows = ctx.quarantined_rows()
    kept = Path(task.staging_root) / f"{task.batch.id}.rejected-{uuid.uuid4().hex[:12]}"
    kept.mkdir(parents=True)
    if rows.num_rows:
        _write_quarantine(rows, kept / QUARANTINE_FILE, task.batch.id, task.run_id)
    counted = BatchResult(
        batch_id=task.batch.id,
        fingerprint=task.batch.fingerprint,
        staging=str(kept),
        rows_in=total,
        rows_filtered=ctx.rows_filtered,
        rows_quarantined=bad,
        files_quarantined=list(ctx.files),
        rows_by_kind=dict(ctx.rows_by_kind),
    )
    (kept / RESULT_FILE).write_text(json.dumps(scrub_all(counted.to_dict()), default=str))
    reasons = top_reasons(rows)
    shown = "; ".join(f"{why} ({n:,})" for why, n in reasons) or "counted, not kept (drop mode)"
    raise TooManyBadRows(
        f"{bad:,} of {total:,} rows are bad ({bad / total:.1%}), more than "
        f"max_bad_fraction={plan.max_bad_fraction:.1%}; nothing of this batch was committed. "
        f"Most frequent: {shown}. Fix the files or the schema (null_values, types), or raise "
        "max_bad_fraction, then run again.",
        where=f"batch {task.batch.id}",
        rows_in=total,
        rows_quarantined=bad,
        reasons=reasons,
        staged=str(kept),
    )


def top_reasons(rows: pa.Table, n: int = 5) -> list[tuple[str, int]]:
    """The most frequent reasons of quarantined rows, by kind and column: [(text, count)].

    Examples
    --------
    >>> t = pa.table({"kind": ["type", "type"], "reason": ["column 'a': value 'x' is not a valid int64"] * 2})
    >>> top_reasons(t)
    [("type, column 'a'", 2)]
    """
    import re
    from collections import Counter

    found: Counter[str] = Counter()
    for kind, reason in zip(
        rows.column("kind").to_pylist(), rows.column("reason").to_pylist(), strict=True
    ):
        column = re.match(r"column '([^']*)'", reason or "")
        found[f"{kind}, column '{column.group(1)}'" if column else str(kind)] += 1
    return found.most_common(n)


def _write_quarantine(rows: pa.Table, path: Path, batch_id: str, run_id: str) -> None:
    import pyarrow.parquet as pq

    n = rows.num_rows
    tagged = rows.append_column("batch_id", pa.array([batch_id] * n, pa.string())).append_column(
        "run_id", pa.array([run_id] * n, pa.string())
    )
    pq.write_table(tagged, path)


def warm_worker(plan: PhysicalPlan | None = None) -> bool:
    """Import what batches use and open this thread's DuckDB connection, ahead of the first one.

    pandas is among them: pyarrow loads it when it converts Python objects, which
    every batch with a quarantine does. With ``plan``, the steps that prepare
    something (``Prepares``: a model to load) start doing it in a background thread,
    while the driver sends the first batches.
    """
    import duckdb  # noqa: F401
    import pandas  # noqa: F401
    import pyarrow.compute  # noqa: F401
    import pyarrow.dataset  # noqa: F401  (what pyarrow.parquet.read_table reads with: 0.2 s)
    import pyarrow.ipc  # noqa: F401
    import pyarrow.parquet  # noqa: F401

    from .engine import connection

    connection()
    steps = [s for s in plan.steps if isinstance(s, Prepares)] if plan is not None else []
    if steps:
        threading.Thread(target=_prepare, args=(steps,), name="dbatch-prepare", daemon=True).start()
    return True


def _prepare(steps: Sequence[Prepares]) -> None:
    for step in steps:
        try:
            step.prepare()
        except Exception as e:  # noqa: BLE001 - the first batch does it again and reports it
            log.debug("preparing %s failed: %s", type(step).__name__, e)


def reduce_bucket(
    plan: PhysicalPlan, bucket: int, directories: list[str], staging_root: str
) -> dict[str, Any]:
    """Combine bucket ``bucket`` of every committed batch and stage that part of the output.

    With ``sort`` the bucket's final rows go to an Arrow file for ``write_sorted``, which
    writes the whole output in key order.
    """
    files = [Path(d) / f"bucket-{bucket:03d}.arrow" for d in directories]
    aggregate = plan.aggregate
    found = aggregate.reduce_query([f for f in files if f.exists()], ordered=False)
    staging = Path(staging_root) / f"reduce-{bucket:03d}.{uuid.uuid4().hex[:12]}"
    staging.mkdir(parents=True)
    if aggregate.sort:
        rows = _write_arrow(found, staging / f"reduced-{bucket:03d}.arrow")
        return {"bucket": bucket, "staging": str(staging), "rows": rows}
    info, rows = _stage_output(plan, found, staging, f"{bucket:03d}")
    return {"bucket": bucket, "staging": str(staging), "rows": rows, **info}


def write_sorted(plan: PhysicalPlan, directories: list[str], staging_root: str) -> dict[str, Any]:
    """Stage the final rows ``reduce_bucket`` left in ``directories`` as one output, in key order."""
    files = sorted(str(f) for d in directories for f in Path(d).glob("reduced-*.arrow"))
    staging = Path(staging_root) / f"reduce-sorted.{uuid.uuid4().hex[:12]}"
    staging.mkdir(parents=True)
    info, rows = _stage_output(plan, plan.aggregate.sorted_query(files), staging, "000")
    return {"bucket": 0, "staging": str(staging), "rows": rows, **info}


def _stage_output(
    plan: PhysicalPlan, found: tuple[str, dict[str, Any]] | None, staging: Path, name: str
) -> tuple[dict[str, Any], int]:
    from .engine import query

    sink = plan.sink
    if found is None:
        table = plan.aggregate.empty_output()
        return sink.stage(table, staging, name=name), table.num_rows
    if isinstance(sink, StagesQueries):
        sql, tables = found
        return sink.stage_query(sql, tables, staging, name)
    table = query(*found)
    return sink.stage(table, staging, name=name), table.num_rows


def _write_arrow(found: tuple[str, dict[str, Any]] | None, path: Path) -> int:
    """Stream the rows of the query ``found`` into the Arrow IPC file ``path``; their number."""
    import pyarrow.ipc as ipc

    from .engine import query_batches

    if found is None:
        return 0
    rows = 0
    batches = query_batches(*found)
    first = next(batches)  # there is always one, perhaps empty: it holds the schema
    with ipc.new_file(str(path), first.schema) as writer:
        for batch in itertools.chain([first], batches):
            writer.write_batch(batch)
            rows += batch.num_rows
    return rows


def _checksum(info: Mapping[str, Any], staging: Path) -> str | None:
    """A digest of the checksums of the files the sink staged; None when it listed none.

    An aggregate's batch stages bucket files that never leave the work area: it has
    no checksum (reading every bucket file again would cost the job its speed), and
    the published output's files carry theirs in the manifest. dbatch's own files
    (``_result.json``, ``_quarantine.parquet``) are not output.
    """
    import hashlib

    digests = [str(f["sha256"]) for f in info.get("files") or () if f.get("sha256")]
    if not digests:
        return None
    h = hashlib.sha256()
    for d in digests:
        h.update(d.encode())
    return h.hexdigest()[:32]


def gather_quarantine(
    bad_input: str, batches: list[tuple[str, str]], target: str, stamp: str = ""
) -> int:
    """Write the quarantined rows and files of ``batches`` (id, directory) to ``target``.

    A quarantined file is one row with an empty ``line`` and no ``raw`` text. Only
    committed batches are given, so each bad row or file appears exactly once however
    often batches were retried or replayed. ``target`` is a file of the run's staging
    area, which the driver renames into place; ``stamp`` (what it was gathered from)
    goes into its schema metadata as ``dbatch.inputs``. Returns the number of rows
    written (nothing is written when there are none).
    """
    import pyarrow.parquet as pq

    schema = QUARANTINE_SCHEMA.append(pa.field("batch_id", pa.string())).append(
        pa.field("run_id", pa.string())
    )
    tables = []
    for batch_id, directory in batches:
        d = Path(directory)
        if (d / QUARANTINE_FILE).exists():
            rows = pq.read_table(d / QUARANTINE_FILE)
            tables.append(rows.select(schema.names).cast(schema))
        stats = read_result(d)
        files = stats.files_quarantined if bad_input != "drop" else []
        if files:
            run_of = Path(stats.staging).parent.name
            tables.append(
                pa.table(
                    {
                        "source": [f.key for f in files],
                        "line": [None] * len(files),
                        "kind": [f.kind for f in files],
                        "reason": [f.message for f in files],
                        "raw": [None] * len(files),
                        "batch_id": [batch_id] * len(files),
                        "run_id": [run_of] * len(files),
                    },
                    schema=schema,
                )
            )
    if not tables:
        return 0
    table = pa.concat_tables(tables)
    pq.write_table(table.replace_schema_metadata({QUARANTINE_STAMP: stamp}), target)
    return table.num_rows
