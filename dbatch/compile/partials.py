"""The partial-aggregates decision: does a batch shrink enough when grouped by the aggregate's keys?

A batch's rows go into the aggregate's hash buckets either as they are (the
keys and metric columns) or grouped first, one row of partial results (sums,
counts, minima, maxima) per group. Grouping costs a hash aggregation per batch;
it pays only when it leaves well under half the rows, as with few keys per
batch (a day's files grouped by account and day). The decision is made once,
from data: the steps run over the first file of the first batch, only the keys
are kept, and the number of groups is extrapolated from that sample to a whole
batch (``extrapolate``: keys that repeat within the sample stay few). Without a
sample that is cheap to take (a step that is not SQL, a source that must be
loaded), each batch decides from its own first rows.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from ..arrow import as_arrow
from ..context import BatchContext
from ..core import BadInputMode, Batch
from ..engine import query, quote_name
from ..protocols import Scannable
from .physical import Partials, SqlStage

if TYPE_CHECKING:
    from .physical import PhysicalPlan

__all__ = ["GroupEstimate", "estimate_groups", "decide_partials", "SHRINK"]

#: Partial aggregates are written when a batch keeps at most this share of its rows.
SHRINK = 0.5


@dataclass(frozen=True)
class GroupEstimate:
    """Groups against rows: measured on a sample, extrapolated to one batch."""

    sample_rows: int
    sample_groups: int
    batch_rows: float
    batch_groups: float

    @property
    def ratio(self) -> float:
        return self.batch_groups / self.batch_rows if self.batch_rows else 1.0

    def describe(self) -> str:
        return (
            f"{self.sample_groups:,} groups in {self.sample_rows:,} rows of the first unit; "
            f"about {self.batch_groups:,.0f} in {self.batch_rows:,.0f} rows per batch "
            f"({self.ratio:.2f})"
        )


def extrapolate(rows: int, groups: int, batch_rows: float) -> float:
    """Distinct keys in ``batch_rows`` rows, from ``groups`` distinct in a sample of ``rows``.

    The sample's keys are taken as drawn from ``K`` equally likely keys, the ``K``
    for which ``rows`` draws give ``groups`` distinct ones on average
    (``K * (1 - exp(-rows / K))``); a batch's rows are drawn from the same keys.
    Keys that repeat within the sample stay few; keys that never repeat grow with
    the rows.

    Examples
    --------
    >>> extrapolate(1000, 10, 8000)  # ten keys, each seen often: still ten
    10.0
    >>> extrapolate(1000, 1000, 8000)  # every row a key of its own
    8000.0
    >>> round(extrapolate(250_000, 240_000, 2_000_000) / 2_000_000, 2)  # 3.2 M keys
    0.73
    """
    if rows <= 0 or groups <= 0:
        return 0.0
    batch_rows = float(max(batch_rows, rows))
    if groups >= rows:
        return batch_rows
    share = groups / rows  # (1 - exp(-x)) / x, with x = rows / K; it falls as x grows
    low, high = 0.0, 2.0 / share + 1.0
    for _ in range(200):
        x = (low + high) / 2
        if x > 0 and -math.expm1(-x) / x > share:
            low = x
        else:
            high = x
    keys = rows / high
    found = keys * -math.expm1(-batch_rows / keys)
    return float(round(found, 6))


def estimate_groups(
    plan: PhysicalPlan, batch: Batch, shared: Mapping[str, Any] | None = None
) -> GroupEstimate | str:
    """Run the plan's SQL stages over ``batch``'s first unit, keep the keys, count their groups.

    A text saying why not when the stages include a step that is not SQL or the
    unit cannot be read inside a query (running or loading it here may cost as
    much as a batch), or the sample has no rows.
    """
    stages = [s for s in plan.stages if isinstance(s, SqlStage)]
    if not batch.units or len(stages) != len(plan.stages):
        return "a step that is not SQL comes before the aggregate"
    if not plan.scan or not isinstance(plan.source, Scannable):
        return "the source is not read inside a query"
    by = tuple(plan.aggregate.by)
    first = dataclasses.replace(batch, units=batch.units[:1])
    ctx = BatchContext(
        batch=first, run_id="estimate", mode=BadInputMode.DROP, sample=True, shared=shared or {}
    )
    data: Any = plan.source.scan(first, ctx)
    if data is None:
        return "the first unit would have to be loaded, not read inside a query"
    for stage in stages:
        data = dataclasses.replace(stage, keep=by).run(data, ctx, {}, stream=False)
    table = as_arrow(data).select(list(by))
    if table.num_rows == 0:
        return "the first unit has no rows after the steps"
    groups = _groups(table, by)
    batch_rows = table.num_rows * _batch_scale(batch)
    return GroupEstimate(
        table.num_rows, groups, batch_rows, extrapolate(table.num_rows, groups, batch_rows)
    )


def _groups(table: pa.Table, by: tuple[str, ...]) -> int:
    """The number of distinct keys (nulls are a key, as in ``GROUP BY``)."""
    keys = ", ".join(quote_name(k) for k in by)
    sql = f"SELECT count(*) AS n FROM (SELECT DISTINCT {keys} FROM sample)"
    return int(query(sql, {"sample": table}).column("n")[0].as_py())


def _batch_scale(batch: Batch) -> float:
    """How many times the first unit the whole batch is, by size (by count without sizes)."""
    first = batch.units[0].size
    total = sum(u.size for u in batch.units)
    return total / first if first > 0 and total > 0 else float(len(batch.units))


def decide_partials(
    plan: PhysicalPlan, sample: Batch | None, shared: Mapping[str, Any] | None = None
) -> tuple[Partials, str]:
    """What a batch writes into the buckets, and why, for an explain line.

    ``shared``: the shared objects by token, where the plan's steps hold only their tokens.
    """
    if plan.aggregate is None:
        return Partials.NONE, ""
    if sample is None:
        return Partials.PER_BATCH, "no batch to sample before the run: decided per batch"
    try:
        found = estimate_groups(plan, sample, shared)
    except Exception as e:  # noqa: BLE001 - the estimate is an optimisation, never a failure
        return Partials.PER_BATCH, f"not estimated ({type(e).__name__}): decided per batch"
    if isinstance(found, str):
        return Partials.PER_BATCH, f"not estimated, {found}: decided per batch from its first rows"
    if found.ratio <= SHRINK:
        return Partials.PRE, found.describe()
    return Partials.RAW, found.describe()
