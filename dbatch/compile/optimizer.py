"""The optimizer pass: source + steps + aggregate + sink -> a physical plan.

It decides, before any batch runs, what every batch does:

- **fusion**: each run of consecutive SQL steps becomes one SQL stage, compiled
  into as few queries as the steps allow;
- **read path**: a source that can be read inside a query (``Scannable``) is, when
  the first stage is SQL and nothing in the plan rules it out;
- **handoff**: with an aggregate, the last SQL stage hands on only the columns
  the aggregate reads, and streams its rows into the aggregate's buckets;
- **partial aggregates**: with an aggregate, whether each batch writes one row
  of partial results per group or its rows as they are, estimated from a
  sample of the first batch (``partials.decide_partials``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from ..core import BadInputMode, Batch
from ..protocols import Scannable, Sink, Source, SqlStep, Step
from .partials import decide_partials
from .physical import Handoff, PhysicalPlan, SqlStage, Stage, StepStage

__all__ = ["optimize"]


def optimize(
    *,
    job: str,
    source: Source,
    steps: Sequence[Step],
    sink: Sink,
    aggregate: Any = None,
    mode: BadInputMode = BadInputMode.QUARANTINE,
    max_bad_fraction: float = 1.0,
    sample: Batch | None = None,
) -> PhysicalPlan:
    """The physical plan of a pipeline.

    ``sample``: a batch (the plan's first) whose first unit the steps run over, on
    this process, to decide whether batches write partial aggregates; without it
    each batch decides from its own first rows.

    Examples
    --------
    >>> from dbatch import Files, ParquetSink, Filter, Derive
    >>> plan = optimize(job="j", source=Files("in/*.csv"), sink=ParquetSink("out"),
    ...                 steps=[Filter("a > 0"), Derive({"b": "a * 2"})])
    >>> [type(s).__name__ for s in plan.stages]
    ['SqlStage']
    """
    keep = tuple(aggregate.input_columns()) if aggregate is not None else None
    stages = _fuse(steps)
    obstacle = _scan_obstacle(source, mode)
    if obstacle is None and keep and not stages:
        stages = [SqlStage(())]  # a query that hands on just the aggregate's columns
    scan = obstacle is None and bool(stages) and isinstance(stages[0], SqlStage)
    if keep and stages and isinstance(stages[-1], SqlStage):
        stages[-1] = SqlStage(stages[-1].steps, keep=keep)
    if aggregate is None:
        handoff = Handoff.SINK
    elif stages and isinstance(stages[-1], SqlStage):
        handoff = Handoff.STREAM
    else:
        handoff = Handoff.BUCKETS
    if scan:
        note = "each batch's files read by DuckDB when their footers match the schema"
    elif obstacle is None:
        note = "the first step is not a SQL step"
    else:
        note = f"not scanned: {obstacle}"
    plan = PhysicalPlan(
        job=job,
        source=source,
        stages=tuple(stages),
        sink=sink,
        aggregate=aggregate,
        handoff=handoff,
        mode=mode,
        max_bad_fraction=max_bad_fraction,
        scan=scan,
        read_note=note,
    )
    return _partial_aggregates(plan, sample)


def _partial_aggregates(plan: PhysicalPlan, sample: Batch | None) -> PhysicalPlan:
    """The pass that decides, from data, what batches write into the aggregate's buckets."""
    partials, note = decide_partials(plan, sample)
    return dataclasses.replace(plan, partials=partials, partials_note=note)


def _fuse(steps: Sequence[Step]) -> list[Stage]:
    """Each run of consecutive SQL steps as one stage; every other step a stage of its own."""
    stages: list[Stage] = []
    run: list[SqlStep] = []
    for step in steps:
        if isinstance(step, SqlStep):
            run.append(step)
            continue
        if run:
            stages.append(SqlStage(tuple(run)))
            run = []
        stages.append(StepStage(step))
    if run:
        stages.append(SqlStage(tuple(run)))
    return stages


def _scan_obstacle(source: Source, mode: BadInputMode) -> str | None:
    if not isinstance(source, Scannable):
        return f"{type(source).__name__} cannot be read inside a query"
    return source.scan_obstacle(mode)
