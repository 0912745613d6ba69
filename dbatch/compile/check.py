"""SQL steps checked before any batch runs: each compiled over an empty table of the batch's columns.

A typo in a filter (``stat = 'settled'``) or a derived column that names a
column the batch does not have is found in milliseconds, with DuckDB's own
message and the step's place in the job, before a batch is sent; not on every
worker after the run has started.

A run does this on a worker, together with the partial-aggregates estimate
(``preflight``): DuckDB is loaded there already, while the driver would pay for
it (about 80 MiB and 0.3 s: the engine, a connection, its ICU extension) only to
compile a few statements. ``Pipeline.check`` and ``dbatch validate`` do it here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import pyarrow as pa

from ..arrow import empty_table
from ..context import BatchContext
from ..core import Batch
from ..errors import JobSpecError
from ..protocols import Described
from .partials import decide_partials
from .physical import PhysicalPlan, SqlStage
from .sql import SqlChain

__all__ = ["check_batch", "check_steps", "preflight"]


def preflight(
    plan: PhysicalPlan, sample: Batch | None, shared: Mapping[str, Any] | None = None
) -> PhysicalPlan | JobSpecError:
    """The run's checks of its first batch, where its tasks run: ``plan`` with its partials decided.

    Every SQL step is compiled over ``sample``'s columns and, with an aggregate,
    ``sample``'s first unit decides what batches write into the buckets. A step
    that cannot compile is returned, not raised, so the worker logs no failed task
    for what is the job file's mistake; the driver raises it. ``shared``: the shared
    objects by token (a lookup), as the batches get them.
    """
    if sample is not None:
        try:
            check_batch(plan, sample, shared)
        except JobSpecError as e:
            return e
    partials, note = decide_partials(plan, sample, shared)
    return dataclasses.replace(plan, partials=partials, partials_note=note)


def check_batch(
    plan: PhysicalPlan, batch: Batch | None, shared: Mapping[str, Any] | None = None
) -> list[str]:
    """Compile every SQL step over the columns of ``batch``'s first unit (see ``check_steps``).

    The columns are the source's declared schema, or those the unit says of itself
    (a Parquet footer, the first block of a text file).
    """
    source = plan.source
    if not isinstance(source, Described):
        return [f"{type(source).__name__} cannot tell its columns before it loads a batch"]
    if batch is None or not batch.units:
        return []
    schema = source.batch_schema(batch.units[0])
    if schema is None:
        return ["the batches' columns are not known before they load (declare a schema)"]
    return check_steps(plan, schema, shared)


def check_steps(
    plan: PhysicalPlan, schema: pa.Schema, shared: Mapping[str, Any] | None = None
) -> list[str]:
    """Compile every SQL step over an empty table of ``schema``; raise on the first that fails.

    Returns notes on what could not be checked (the columns after a Python
    step are not known before it runs).
    """
    import duckdb

    ctx = BatchContext(batch=Batch("check", (), ""), run_id="check", shared=shared or {})
    data: pa.Table = empty_table(schema)
    position = 0
    for stage in plan.stages:
        if not isinstance(stage, SqlStage):
            name = type(stage.step).__name__
            return [f"steps after {name} (steps[{position}]) are checked when they run"]
        for step in stage.steps:
            try:
                data = SqlChain((step,)).apply(data, ctx)
            except duckdb.Error as e:
                raise JobSpecError(
                    f"{_show(step)} cannot run on the batch's columns "
                    f"{list(data.column_names)}: {_first_line(e)}",
                    key=f"steps[{position}]",
                ) from None
            position += 1
    if plan.aggregate is not None:
        missing = [c for c in plan.aggregate.input_columns() if c not in data.column_names]
        if missing:
            raise JobSpecError(
                f"the aggregate reads column(s) {missing}, which the steps do not give; "
                f"they give {list(data.column_names)}",
                key="aggregate",
            )
    return []


def _show(step: Any) -> str:
    text = repr(step)
    return text if len(text) <= 200 else text[:197] + "..."


def _first_line(e: BaseException) -> str:
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    return " ".join(lines[:3])
