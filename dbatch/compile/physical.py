"""The physical plan: how each batch is read, which steps run together, where the rows go.

Made once on the client by ``optimize`` and sent to the workers with every
batch task; ``run`` applies it to one batch. Nothing here decides anything
while it runs: the read path, the groups of SQL steps and the handoff are
fixed in the plan, and ``explain`` prints them.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..context import BatchContext
from ..core import BadInputMode, Batch
from ..engine import Relation
from ..protocols import Dimensioned, Scannable, SqlStep, Step
from .sql import BatchStream, SqlChain, describe_steps

if TYPE_CHECKING:
    from ..protocols import Sink, Source

__all__ = ["PhysicalPlan", "SqlStage", "StepStage", "Handoff", "Partials", "Stage"]


class Handoff(enum.StrEnum):
    """Where the rows of a batch go after the last stage."""

    SINK = "sink"  # the sink stages the table
    BUCKETS = "buckets"  # the aggregate's map side writes the table into hash buckets
    STREAM = "stream"  # the last query's rows stream into the buckets, a chunk at a time


class Partials(enum.StrEnum):
    """What a batch writes into the aggregate's buckets."""

    NONE = "none"  # no aggregate
    PRE = "pre"  # partial aggregates: one row of sums, counts, minima, maxima per group
    RAW = "raw"  # the rows themselves, keys and metric columns only
    PER_BATCH = "per-batch"  # not estimated before the run: each batch decides from its rows

    @property
    def preaggregate(self) -> bool | None:
        """What the aggregate's map side is told: True, False, or None (decide per batch)."""
        return {Partials.PRE: True, Partials.RAW: False}.get(self)


@dataclass(frozen=True)
class SqlStage:
    """Consecutive SQL steps compiled together; ``keep`` when the last stage hands on columns."""

    steps: tuple[SqlStep, ...]
    keep: tuple[str, ...] | None = None

    def chain(self, extra: dict[str, str] | None = None) -> SqlChain:
        return SqlChain(self.steps, keep=self.keep, extra=tuple((extra or {}).items()))

    def run(self, data: Any, ctx: BatchContext, extra: dict[str, str], stream: bool) -> Any:
        chain = self.chain(extra)
        return chain.stream(data, ctx) if stream else chain.apply(data, ctx)

    def describe(self) -> str:
        what = describe_steps(self.steps) if self.steps else "the columns handed on"
        return f"SQL  {what}"


@dataclass(frozen=True)
class StepStage:
    """One step run on its own (a Python function, a model, an xarray step, a query)."""

    step: Step

    def run(self, data: Any, ctx: BatchContext, extra: dict[str, str], stream: bool) -> Any:
        return self.step.apply(data, ctx)

    def describe(self) -> str:
        return f"step {type(self.step).__name__}"


Stage = SqlStage | StepStage


@dataclass(frozen=True)
class PhysicalPlan:
    """What runs for every batch of a pipeline, decided before any batch runs.

    ``scan``: the first stage's query reads the source's files itself (DuckDB over
    Parquet) instead of loading them; ``read_note`` says why it does or does not.
    ``partials``: with an aggregate, whether each batch writes partial aggregates
    or its rows into the buckets; ``partials_note`` gives the estimate behind it.
    """

    job: str
    source: Source
    stages: tuple[Stage, ...]
    sink: Sink
    aggregate: Any
    handoff: Handoff
    mode: BadInputMode
    max_bad_fraction: float
    scan: bool = False
    read_note: str = ""
    partials: Partials = Partials.NONE
    partials_note: str = ""

    @property
    def dim(self) -> str | None:
        """The dimension along which an xarray source's rows are counted."""
        return self.source.dim if isinstance(self.source, Dimensioned) else None

    @property
    def steps(self) -> list[Step]:
        """Every step of every stage, in order."""
        return [
            s for st in self.stages for s in (st.steps if isinstance(st, SqlStage) else (st.step,))
        ]

    def shared_objects(self) -> list[Any]:
        return [obj for step in self.steps for obj in step.shared_objects()]

    # -- running one batch --------------------------------------------------------

    def read(self, batch: Batch, ctx: BatchContext) -> Any:
        """The batch's data as the first stage takes it: a relation over its files, or a table."""
        if self.scan:
            assert isinstance(self.source, Scannable)
            found: Relation | None = self.source.scan(batch, ctx)
            if found is not None:
                return found
        return self.source.load(batch, ctx)

    def run(self, batch: Batch, ctx: BatchContext, buckets: int = 1) -> Any:
        """Read the batch and apply every stage; a ``BatchStream`` when the plan streams."""
        extra = self.aggregate.bucket_column(buckets) if self.aggregate is not None else {}
        data = self.read(batch, ctx)
        last = len(self.stages) - 1
        for i, stage in enumerate(self.stages):
            data = stage.run(
                data,
                ctx,
                extra if i == last else {},
                stream=i == last and self.handoff is Handoff.STREAM,
            )
        return data

    @staticmethod
    def is_stream(data: Any) -> bool:
        return isinstance(data, BatchStream)

    # -- showing it ---------------------------------------------------------------

    def explain(self) -> str:
        """The plan as text: read path, stages, handoff, reduce and sink."""
        lines = [f"physical plan of {self.job!r}  (bad_input: {self.mode})"]
        how = "scan: read by the first query" if self.scan else "load"
        lines.append(f"  read     {self.source.describe()}  [{how}; {self.read_note}]")
        for i, stage in enumerate(self.stages, start=1):
            lines.append(f"  stage {i}  {stage.describe()}")
        lines.append(f"  handoff  {self._handoff_text()}")
        if self.aggregate is not None:
            lines.append(f"  partials {self._partials_text()}")
            lines.append(f"  reduce   one task per bucket: {self.aggregate!r}")
            if self.aggregate.sort:
                lines.append("  sorted   one task writes the buckets' rows in key order")
        lines.append(f"  sink     {self.sink.describe()}")
        return "\n".join(lines)

    def _handoff_text(self) -> str:
        if self.handoff is Handoff.SINK:
            return "the table to the sink, staged per batch"
        keep = ", ".join(self.aggregate.input_columns())
        if self.handoff is Handoff.STREAM:
            return (
                f"the last query's rows ({keep} and each row's bucket) stream into the "
                "aggregate's hash buckets"
            )
        return f"the table ({keep}) into the aggregate's hash buckets"

    def _partials_text(self) -> str:
        what = {
            Partials.PRE: "partial aggregates per batch (sum, count, min, max; mean as sum and count)",
            Partials.RAW: "raw rows per batch (grouping would not halve them)",
            Partials.PER_BATCH: "partial aggregates where a batch's first rows halve when grouped",
        }.get(self.partials, str(self.partials))
        return f"{what}  [{self.partials_note}]" if self.partials_note else what
