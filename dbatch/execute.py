"""What runs on a worker: load one batch, apply the steps, stage the output (no Dask here)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from .context import BatchContext
from .core import Batch, BatchResult, QuarantinedFile
from .errors import BadInputError
from .steps.fusion import BatchStream, FusedSql, fusable, fuse

if TYPE_CHECKING:
    from .pipeline import Pipeline

__all__ = [
    "process_batch",
    "run_steps",
    "reduce_bucket",
    "count_rows",
    "gather_quarantine",
    "read_result",
    "warm_worker",
]


def count_rows(data: Any, dim: str | None = None) -> int:
    if isinstance(data, pa.Table):
        return data.num_rows
    if hasattr(data, "sizes"):  # an xarray Dataset: rows are points along the batch dimension
        if dim is not None and dim in data.sizes:
            return int(data.sizes[dim])
        dims = list(data.sizes.values())
        return int(dims[0]) if dims else 0
    return len(data)


def run_steps(
    pipeline: Pipeline,
    batch: Batch,
    ctx: BatchContext,
    keep: list[str] | None = None,
    extra: dict[str, str] | None = None,
    stream: bool = False,
) -> Any:
    """Load the batch and apply the steps; consecutive SQL steps run as one query.

    ``keep``: the only columns the caller reads afterwards (the aggregate's), so
    that a final SQL step hands back just those, plus ``extra`` (name -> SQL).
    ``stream``: a final SQL step returns a ``BatchStream`` instead of a table.
    """
    steps = fuse(pipeline.steps, keep=keep, extra=extra)
    scan = getattr(pipeline.source, "scan", None)
    if scan is not None and steps and fusable(steps[0]):
        steps[0] = FusedSql((steps[0],))
    if scan is not None and not steps and keep:
        steps = [FusedSql((), keep=tuple(keep), extra=tuple((extra or {}).items()))]
    if scan is not None and steps and isinstance(steps[0], FusedSql):
        # The source's files read by the first query itself; load() when that is not exact.
        saved = _snapshot(ctx)
        try:
            found = scan(batch, ctx)
            last = stream and len(steps) == 1
            data = _apply(steps[0], found, ctx, last) if found is not None else None
        except Exception:  # noqa: BLE001 - load() gives the error, or quarantines the file
            data = None
        if data is not None:
            for step in steps[1:]:
                data = _apply(step, data, ctx, last=step is steps[-1] and stream)
            return data
        vars(ctx).update(saved)
    data = pipeline.source.load(batch, ctx)
    for step in steps:
        data = _apply(step, data, ctx, last=step is steps[-1] and stream)
    return data


def _apply(step, data, ctx: BatchContext, last: bool):
    """``step.apply``; the last SQL step streams its rows when the caller asked for that."""
    if last and isinstance(step, FusedSql):
        return step.stream(data, ctx)
    return step.apply(data, ctx)


def _snapshot(ctx: BatchContext) -> dict[str, Any]:
    """The context's counters and lists as they are now, to go back to."""
    return {k: list(v) if isinstance(v, list) else v for k, v in vars(ctx).items()}


def process_batch(
    pipeline: Pipeline,
    batch: Batch,
    run_id: str,
    staging_root: str,
    shared: dict[str, Any],
    attempt: int = 1,
    fault: Any = None,
) -> BatchResult:
    """Load, transform and stage one batch; return counts and where the files are.

    Writes only below a fresh directory of ``staging_root``; the driver commits by
    renaming it, so a worker that dies mid-write leaves nothing a reader can see.
    """
    started = time.perf_counter()
    ctx = BatchContext(batch=batch, run_id=run_id, mode=pipeline.bad_input, shared=shared)
    if fault is not None:
        fault(batch, attempt)
    keep = extra = None
    if pipeline.aggregate is not None:  # hand over only what the aggregate reads
        keep = pipeline.aggregate.input_columns()
        extra = pipeline.aggregate.bucket_column(pipeline.buckets_for_run)
    staging = Path(staging_root) / f"{batch.id}.{uuid.uuid4().hex[:12]}"
    before = _snapshot(ctx)
    # An aggregate writes the rows into its buckets as they come: a batch is never
    # all in memory at once.
    data = run_steps(pipeline, batch, ctx, keep=keep, extra=extra, stream=keep is not None)
    streamed = isinstance(data, BatchStream)
    staged = _stage_stream(pipeline, batch, ctx, data, staging) if streamed else None
    if streamed and staged is None:
        # The query failed while its rows were read (a damaged page that the footer
        # did not show): redo the batch as a whole, which falls back to the source's
        # own load() and quarantines such a file, or raises the error.
        vars(ctx).update(before)
        data = run_steps(pipeline, batch, ctx, keep=keep, extra=extra)
    if staged is not None:
        info, rows_out = staged
    else:
        rows_out = count_rows(data, getattr(pipeline.source, "dim", None))
        _check_bad_fraction(pipeline, batch, ctx)
        staging.mkdir(parents=True, exist_ok=False)
        if pipeline.aggregate is not None:
            info = pipeline.aggregate.map_side(data, staging, pipeline.buckets_for_run)
        else:
            info = pipeline.sink.stage(data, staging, name=batch.id)
    quarantined = ctx.quarantined_rows()
    if quarantined.num_rows:
        import pyarrow.parquet as pq

        tagged = quarantined.append_column(
            "batch_id", pa.array([batch.id] * quarantined.num_rows, pa.string())
        ).append_column("run_id", pa.array([run_id] * quarantined.num_rows, pa.string()))
        pq.write_table(tagged, staging / "_quarantine.parquet")
    result = BatchResult(
        batch_id=batch.id,
        fingerprint=batch.fingerprint,
        staging=str(staging),
        rows_in=ctx.rows_in,
        rows_out=rows_out,
        rows_filtered=ctx.rows_filtered,
        rows_quarantined=ctx.rows_quarantined,
        files_quarantined=list(ctx.files),
        checksum=_checksum(info),
        duration=time.perf_counter() - started,
        worker=f"{socket.gethostname()}:{os.getpid()}",
        extra=info,
    )
    (staging / "_result.json").write_text(json.dumps(result.to_dict(), default=str))
    return result


def _stage_stream(
    pipeline: Pipeline, batch: Batch, ctx: BatchContext, data: BatchStream, staging: Path
) -> tuple[dict, int] | None:
    """Write a streamed batch into the aggregate's buckets: (info, rows out), or None
    when its query failed while the rows were read (nothing is left staged then)."""
    staging.mkdir(parents=True, exist_ok=False)
    try:
        info = pipeline.aggregate.map_side(data, staging, pipeline.buckets_for_run)
        _check_bad_fraction(pipeline, batch, ctx)  # complete once the rows have been read
    except BadInputError:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    except Exception:  # noqa: BLE001 - the caller redoes the batch, which gives the error
        shutil.rmtree(staging, ignore_errors=True)
        return None
    return info, data.rows


def warm_worker() -> bool:
    """Import what batches use and open this thread's DuckDB connection, ahead of the first one.

    pandas is among them: pyarrow loads it when it converts Python objects, which
    every batch with a quarantine does.
    """
    import duckdb  # noqa: F401
    import pandas  # noqa: F401
    import pyarrow.compute  # noqa: F401
    import pyarrow.ipc  # noqa: F401
    import pyarrow.parquet  # noqa: F401

    from .engine import connection

    connection()
    return True


def _check_bad_fraction(pipeline: Pipeline, batch: Batch, ctx: BatchContext) -> None:
    bad = ctx.rows_quarantined
    if ctx.rows_in and bad / ctx.rows_in > pipeline.max_bad_fraction:
        raise BadInputError(
            f"{bad} of {ctx.rows_in} rows are bad ({bad / ctx.rows_in:.1%}), more than "
            f"max_bad_fraction={pipeline.max_bad_fraction:.1%}; nothing of this batch was committed. "
            "Inspect the files named in the quarantine, or raise max_bad_fraction.",
            kind="too_many_bad_rows",
            where=f"batch {batch.id}",
        )


def reduce_bucket(
    pipeline: Pipeline, bucket: int, directories: list[str], staging_root: str
) -> dict:
    """Combine bucket ``bucket`` of every committed batch and stage that part of the output."""
    files = [Path(d) / f"bucket-{bucket:03d}.arrow" for d in directories]
    found = pipeline.aggregate.reduce_query([f for f in files if f.exists()])
    staging = Path(staging_root) / f"reduce-{bucket:03d}.{uuid.uuid4().hex[:12]}"
    staging.mkdir(parents=True)
    name = f"{bucket:03d}"
    if found is None:
        table = pipeline.aggregate.empty_output()
        info, rows = pipeline.sink.stage(table, staging, name=name), table.num_rows
    else:
        info, rows = pipeline.sink.stage_query(*found, staging, name=name)
    return {"bucket": bucket, "staging": str(staging), "rows": rows, **info}


def _checksum(info: dict) -> str:
    import hashlib

    h = hashlib.sha256()
    for f in info.get("files", []):
        h.update(f.get("sha256", "").encode())
    return h.hexdigest()[:32]


def read_result(directory: Path) -> BatchResult:
    """The ``BatchResult`` a worker left next to a staged (later committed) batch."""
    raw = json.loads((Path(directory) / "_result.json").read_text())
    raw["files_quarantined"] = [QuarantinedFile(**f) for f in raw.get("files_quarantined", [])]
    return BatchResult(**raw)


def gather_quarantine(bad_input: str, batches: list[tuple[str, str]], target: str) -> int:
    """Write the quarantined rows and files of ``batches`` (id, directory) to ``target``.

    A quarantined file is one row with an empty ``line`` and no ``raw`` text. Only
    committed batches are given, so each bad row or file appears exactly once however
    often batches were retried or replayed. ``target`` is a file of the run's staging
    area, which the driver renames into place. Returns the number of rows written
    (nothing is written when there are none).
    """
    import pyarrow.parquet as pq

    from .context import QUARANTINE_SCHEMA

    schema = QUARANTINE_SCHEMA.append(pa.field("batch_id", pa.string())).append(
        pa.field("run_id", pa.string())
    )
    tables = []
    for batch_id, directory in batches:
        d = Path(directory)
        if (d / "_quarantine.parquet").exists():
            rows = pq.read_table(d / "_quarantine.parquet")
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
    pq.write_table(table, target)
    return table.num_rows
