"""What runs on a worker: load one batch, apply the steps, stage the output (no Dask here)."""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from .context import BatchContext
from .core import Batch, BatchResult
from .errors import BadInputError

if TYPE_CHECKING:
    from .pipeline import Pipeline

__all__ = ["process_batch", "run_steps", "reduce_bucket", "count_rows"]


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
) -> Any:
    """Load the batch and apply the steps; consecutive SQL steps run as one query.

    ``keep``: the only columns the caller reads afterwards (the aggregate's), so
    that a final SQL step hands back just those, plus ``extra`` (name -> SQL).
    """
    from .steps.fusion import FusedSql, fusable, fuse

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
            data = steps[0].apply(found, ctx) if found is not None else None
        except Exception:  # noqa: BLE001 - load() gives the error, or quarantines the file
            data = None
        if data is not None:
            for step in steps[1:]:
                data = step.apply(data, ctx)
            return data
        vars(ctx).update(saved)
    data = pipeline.source.load(batch, ctx)
    for step in steps:
        data = step.apply(data, ctx)
    return data


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
    data = run_steps(pipeline, batch, ctx, keep=keep, extra=extra)
    rows_out = count_rows(data, getattr(pipeline.source, "dim", None))
    bad = ctx.rows_quarantined
    if ctx.rows_in and bad / ctx.rows_in > pipeline.max_bad_fraction:
        raise BadInputError(
            f"{bad} of {ctx.rows_in} rows are bad ({bad / ctx.rows_in:.1%}), more than "
            f"max_bad_fraction={pipeline.max_bad_fraction:.1%}; nothing of this batch was committed. "
            "Inspect the files named in the quarantine, or raise max_bad_fraction.",
            kind="too_many_bad_rows",
            where=f"batch {batch.id}",
        )
    staging = Path(staging_root) / f"{batch.id}.{uuid.uuid4().hex[:12]}"
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


def reduce_bucket(
    pipeline: Pipeline, bucket: int, directories: list[str], staging_root: str
) -> dict:
    """Combine bucket ``bucket`` of every committed batch and stage that part of the output."""
    files = [Path(d) / f"bucket-{bucket:03d}.arrow" for d in directories]
    table = pipeline.aggregate.reduce_side([f for f in files if f.exists()])
    staging = Path(staging_root) / f"reduce-{bucket:03d}.{uuid.uuid4().hex[:12]}"
    staging.mkdir(parents=True)
    info = pipeline.sink.stage(table, staging, name=f"{bucket:03d}")
    return {"bucket": bucket, "staging": str(staging), "rows": table.num_rows, **info}


def _checksum(info: dict) -> str:
    import hashlib

    h = hashlib.sha256()
    for f in info.get("files", []):
        h.update(f.get("sha256", "").encode())
    return h.hexdigest()[:32]
