"""Backfills: run only the batches whose units' times fall in a range."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from .core import Batch, Event, Plan, Unit
from .errors import JobSpecError

if TYPE_CHECKING:
    from .monitor.result import RunResult
    from .pipeline import Pipeline

__all__ = ["UnitsBetween", "backfill"]


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
