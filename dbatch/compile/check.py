"""SQL steps checked before any batch runs: each compiled over an empty table of the batch's columns.

A typo in a filter (``stat = 'settled'``) or a derived column that names a
column the batch does not have is found on the client, in milliseconds, with
DuckDB's own message and the step's place in the job; not on every worker
after the run has started.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from ..context import BatchContext
from ..core import Batch
from ..errors import JobSpecError
from .physical import PhysicalPlan, SqlStage
from .sql import SqlChain

__all__ = ["check_steps"]


def check_steps(plan: PhysicalPlan, schema: pa.Schema) -> list[str]:
    """Compile every SQL step over an empty table of ``schema``; raise on the first that fails.

    Returns notes on what could not be checked (the columns after a Python
    step are not known before it runs).
    """
    import duckdb

    ctx = BatchContext(batch=Batch("check", (), ""), run_id="check")
    data: pa.Table = schema.empty_table()
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
