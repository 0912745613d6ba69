"""Backfills: run only the batches whose units' times fall in a range."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from .core import Batch, Event, Plan, Unit
from .errors import JobSpecError
from .estimate import Cost

if TYPE_CHECKING:
    from .monitor.result import RunResult
    from .pipeline import Pipeline

__all__ = ["UnitsBetween", "backfill", "BackfillPreview", "preview_backfill"]


def _instant(value: Any, which: str) -> float:
    """Seconds since the epoch from a date, timestamp or datetime (UTC unless it names a zone)."""
    import pandas as pd

    try:
        stamp = pd.Timestamp(value)
    except (TypeError, ValueError):
        stamp = pd.NaT
    if stamp is pd.NaT or not isinstance(stamp, pd.Timestamp):
        raise JobSpecError(
            f"backfill {which} {value!r} is not a date or timestamp such as 2026-11-01 "
            "or 2026-11-01T06:00"
        )
    if stamp.tzinfo is None:
        stamp = stamp.tz_localize("UTC")
    return stamp.timestamp()


@dataclass(frozen=True)
class UnitsBetween:
    """Select the batches whose units' times all fall in ``[start, end)``.

    A unit's time is a date in its path (``time_pattern``) or its modification time.
    Dates without a zone are UTC, like dates in paths. Call it with a ``Batch``;
    ``select(plan)`` returns the selected batches and refuses a batch that straddles
    ``start`` or ``end``.

    Examples
    --------
    >>> window = UnitsBetween("2026-11-01", "2026-11-03")
    >>> pipeline.run(select=window)  # doctest: +SKIP
    """

    start: Any
    end: Any
    _bounds: tuple[float, float] = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        lo, hi = _instant(self.start, "start"), _instant(self.end, "end")
        if not lo < hi:
            raise JobSpecError(
                f"backfill start {self.start!r} must come before end {self.end!r} "
                "(the range is [start, end): start included, end excluded)"
            )
        object.__setattr__(self, "_bounds", (lo, hi))

    def _inside(self, unit: Unit) -> bool:
        lo, hi = self._bounds
        return unit.time is not None and lo <= unit.time < hi

    def __call__(self, batch: Batch) -> bool:
        return bool(batch.units) and all(self._inside(u) for u in batch.units)

    def describe(self) -> str:
        lo, hi = (datetime.fromtimestamp(t, UTC).isoformat() for t in self._bounds)
        return f"[{lo}, {hi})"

    def select(self, plan: Plan) -> list[Batch]:
        """The batches of ``plan`` inside the range; a straddling batch or no batch is an error."""
        chosen = []
        for batch in plan:
            timeless = [u.key for u in batch.units if u.time is None]
            if timeless:
                raise JobSpecError(
                    f"unit {timeless[0]!r} has no time, so a backfill cannot place it; "
                    "set time_pattern in the source",
                    key="source",
                )
            inside = [self._inside(u) for u in batch.units]
            if all(inside):
                chosen.append(batch)
            elif any(inside):
                raise JobSpecError(
                    f"batch {batch.id} holds units inside and outside {self.describe()} "
                    f"(for example {batch.units[inside.index(False)].key!r}); a backfill runs "
                    "whole batches: use window batching (batching: {window: 1D}) so each "
                    "batch is one time window, or widen the range",
                    key="batching",
                )
        if not chosen:
            times = [u.time for b in plan for u in b.units if u.time is not None]
            span = (
                f"the input spans {datetime.fromtimestamp(min(times), UTC):%Y-%m-%d %H:%M} to "
                f"{datetime.fromtimestamp(max(times), UTC):%Y-%m-%d %H:%M} UTC"
                if times
                else "the input has no units"
            )
            raise JobSpecError(f"no batch falls in {self.describe()}; {span}")
        return chosen


def backfill(
    pipeline: Pipeline,
    start: Any,
    end: Any,
    *,
    client: Any = None,
    force: bool = False,
    listeners: Sequence[Callable[[Event], None]] = (),
    progress: bool | str | None = None,
    params: dict | None = None,
) -> RunResult:
    """Run only the batches whose units' times fall in ``[start, end)``.

    Windows already committed with the same inputs are not redone unless
    ``force`` (which re-runs them, as a replay does). The other committed
    batches stay in the published output; batches outside the range that were
    never run stay undone.

    Examples
    --------
    >>> backfill(pipeline, "2026-11-01", "2026-11-03")  # doctest: +SKIP
    """
    window = UnitsBetween(start, end)
    window.select(pipeline.plan())
    return pipeline.run(
        client=client,
        select=window,
        force=force,
        listeners=list(listeners),
        progress=progress,
        params={**(params or {}), "backfill": window.describe(), "force": force},
    )


@dataclass(frozen=True)
class BackfillPreview:
    """What ``backfill`` would do, worked out without a cluster (``dbatch backfill --dry-run``).

    ``batches``: one dict per batch in the range, in plan order: ``batch_id``,
    ``first`` and ``last`` (its units' times, UTC), ``units``, ``bytes``, ``action``
    (``run``, ``skip``: committed with the same inputs, ``adopt``, ``keep_quarantined``)
    and, with a history, ``seconds`` and ``memory`` estimates. ``cost`` is what the
    ledger's earlier batches of the job cost (None for a job never run).
    """

    job: str
    window: str
    batches: list[dict[str, Any]]
    cost: Cost | None
    threads: int

    @property
    def to_run(self) -> list[dict[str, Any]]:
        return [b for b in self.batches if b["action"] == "run"]

    def summary(self) -> dict[str, Any]:
        """Counts and estimates: what ``--json`` prints besides the batches."""
        run = self.to_run
        seconds = sum(b.get("seconds") or 0.0 for b in run) if self.cost else None
        memory = [b["memory"] for b in run if b.get("memory") is not None]
        return {
            "job": self.job,
            "window": self.window,
            "batches": len(self.batches),
            "to_run": len(run),
            "committed": sum(b["action"] == "skip" for b in self.batches),
            "quarantined": sum(b["action"] == "keep_quarantined" for b in self.batches),
            "bytes_to_run": sum(b["bytes"] for b in run),
            "history_batches": self.cost.batches if self.cost else 0,
            "batch_seconds": seconds,
            "wall_seconds": None if seconds is None else seconds / max(1, self.threads),
            "threads": self.threads,
            "peak_batch_memory": max(memory) if memory else None,
        }

    def to_dict(self) -> dict[str, Any]:
        return {**self.summary(), "batch_list": self.batches}


def _moment(seconds: float | None) -> str | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC).isoformat()


def preview_backfill(
    pipeline: Pipeline, start: Any, end: Any, *, force: bool = False, threads: int | None = None
) -> BackfillPreview:
    """The windows and batches ``backfill(pipeline, start, end)`` would run; nothing runs.

    Reads the plan, the ledger and the work area; estimates each batch's seconds
    and peak memory from the job's committed batches in the ledger. ``threads``
    (default: the LocalCluster's workers x threads of the config) turns
    batch-seconds into an estimate of the wall time.

    Examples
    --------
    >>> preview_backfill(pipeline, "2026-11-01", "2026-11-03").summary()  # doctest: +SKIP
    """
    from . import config
    from .estimate import cost_from_history
    from .ledger import Ledger
    from .reconcile import reconcile
    from .workarea import WorkArea

    window = UnitsBetween(start, end)
    plan = pipeline.plan()
    chosen = plan.only(window.select(plan))
    ledger = Ledger(pipeline.ledger_url())
    try:
        records = ledger.batch_states(plan.job)
        cost = cost_from_history(ledger.history(plan.job))
    finally:
        ledger.close()
    committed = WorkArea(pipeline.work_area()).state(chosen)
    rerun = {b.id for b in chosen} if force else set()
    rows = []
    for d in reconcile(chosen, records, committed, rerun=rerun):
        times = [u.time for u in d.batch.units if u.time is not None]
        row: dict[str, Any] = {
            "batch_id": d.batch.id,
            "first": _moment(min(times, default=None)),
            "last": _moment(max(times, default=None)),
            "units": len(d.batch.units),
            "bytes": d.batch.size,
            "action": str(d.action),
        }
        if cost is not None:
            row["seconds"] = cost.seconds(d.batch.size, len(d.batch.units))
            row["memory"] = cost.memory(d.batch.size)
        rows.append(row)
    if threads is None:
        threads = int(config.get("cluster.n-workers")) * int(
            config.get("cluster.threads-per-worker")
        )
    return BackfillPreview(plan.job, window.describe(), rows, cost, threads)
