"""Triggers (cron, interval, arrival of new input), the watch loop that runs a job on them, and backfills."""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from .batching import make_batches
from .config import parse_bytes
from .core import Batch, Event, EventKind, Plan, Unit
from .errors import DBatchError, JobSpecError, SourceError

if TYPE_CHECKING:
    from .ledger import Ledger
    from .monitor.result import RunResult
    from .pipeline import Pipeline

__all__ = [
    "Trigger",
    "Cron",
    "Interval",
    "Arrival",
    "UnitsBetween",
    "WatchResult",
    "watch",
    "backfill",
    "parse_duration",
    "summary_line",
]

log = logging.getLogger("dbatch")


def parse_duration(value: Any, *, key: str = "schedule.every") -> float:
    """Seconds from a number of seconds or a pandas Timedelta string (``"1h"``, ``"30min"``).

    Examples
    --------
    >>> parse_duration("30min")
    1800.0
    >>> parse_duration(90)
    90.0
    """
    seconds: float | None = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        try:
            seconds = float(text)  # a bare number is seconds, not pandas' nanoseconds
        except ValueError:
            import pandas as pd

            try:
                seconds = pd.Timedelta(text).total_seconds()
            except ValueError:
                seconds = None
    if seconds is None or not math.isfinite(seconds) or seconds <= 0:
        raise JobSpecError(
            f"expected a positive duration such as 30s, 15min, 1h or a number of seconds, "
            f"got {value!r}",
            key=key,
        )
    return seconds


class Trigger:
    """What starts a run: when to look next (``next_fire``) and whether to run then (``ready``).

    A trigger is plain data; it needs no cluster. ``next_fire(now, last)`` gets the
    current time and the time the trigger last fired (``None`` before the first
    time) and returns a time-zone aware ``datetime``. ``ready`` is asked at that
    time; time-based triggers are always ready, ``Arrival`` only when enough new
    input is there.
    """

    def next_fire(self, now: datetime, last: datetime | None = None) -> datetime:
        raise NotImplementedError  # pragma: no cover

    def ready(self, pipeline: Pipeline, ledger: Ledger) -> bool:
        return True

    def describe(self) -> str:
        return type(self).__name__


@dataclass(frozen=True)
class Cron(Trigger):
    """Fire at the times of a cron expression, in a time zone.

    Parsing and the calendar arithmetic are croniter's. On the night clocks go back,
    an expression with fixed hours (``"30 2 * * *"``) fires once, at the first of the
    two 02:30s; one with every hour (``"0 * * * *"``) fires in both repeated hours.
    A time skipped when clocks go forward fires at the moment of the change. A fire
    time that passes while a run is still going is skipped, not queued.

    Examples
    --------
    >>> from datetime import datetime, UTC
    >>> Cron("0 2 * * *").next_fire(datetime(2026, 11, 1, 3, tzinfo=UTC)).isoformat()
    '2026-11-02T02:00:00+00:00'
    """

    expression: str
    tz: str = "UTC"

    def __post_init__(self):
        from croniter import croniter

        if not isinstance(self.expression, str) or not croniter.is_valid(self.expression):
            raise JobSpecError(
                f"{self.expression!r} is not a cron expression; expected five fields "
                '"minute hour day-of-month month day-of-week" such as "0 2 * * *" '
                "(quote it in YAML)",
                key="schedule.cron",
            )
        self._zone()

    def _zone(self):
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            return ZoneInfo(str(self.tz))
        except (ZoneInfoNotFoundError, ValueError):
            raise JobSpecError(
                f"unknown time zone {self.tz!r}; use an IANA name such as UTC or Europe/Berlin",
                key="schedule.tz",
            ) from None

    def next_fire(self, now: datetime, last: datetime | None = None) -> datetime:
        from croniter import croniter

        zone = self._zone()
        start = max(now, last) if last is not None else now
        it = croniter(self.expression, start.astimezone(zone))
        fixed_hours = it.expanded[1] != ["*"]
        while True:
            fire = it.get_next(datetime)
            if not (fixed_hours and _second_of_repeated_hour(fire, zone)):
                return fire

    def describe(self) -> str:
        return f"cron {self.expression!r} ({self.tz})"


def _second_of_repeated_hour(moment: datetime, zone) -> bool:
    """Whether ``moment`` is the second time its wall-clock time happens (clocks went back)."""
    first = moment.replace(tzinfo=None).replace(tzinfo=zone, fold=0)
    return first.utcoffset() != moment.utcoffset()


@dataclass(frozen=True)
class Interval(Trigger):
    """Fire at once, then every ``every`` (seconds, or ``"1h"``, ``"30min"``) after the last start.

    Examples
    --------
    >>> Interval("30min").seconds
    1800.0
    """

    every: float | str

    def __post_init__(self):
        object.__setattr__(self, "every", parse_duration(self.every, key="schedule.every"))

    @property
    def seconds(self) -> float:
        return float(self.every)

    def next_fire(self, now: datetime, last: datetime | None = None) -> datetime:
        return now if last is None else last + timedelta(seconds=self.seconds)

    def describe(self) -> str:
        return f"every {timedelta(seconds=self.seconds)}"


@dataclass(frozen=True)
class Arrival(Trigger):
    """Fire when at least ``count`` new units (or ``bytes`` of them) wait; look every ``poll``.

    A unit is new when no batch holding it is recorded in the ledger with the
    same fingerprint (committed, quarantined or failed), so a failed batch is
    tried again with the next arrivals rather than at every poll. Units a
    threshold batcher holds back (an incomplete last batch) count as new. An input
    that is still empty counts as nothing new. With count or size batching the last
    batch is regrouped as units arrive; threshold or window batching keeps a
    committed batch as it is, which makes the count exact.

    Examples
    --------
    >>> Arrival(count=10, poll="30s").poll
    30.0
    """

    count: int | None = None
    bytes: int | str | None = None
    poll: float | str = 30.0

    def __post_init__(self):
        if (self.count is None) == (self.bytes is None):
            raise JobSpecError(
                "set exactly one of count (new units) or bytes (new data)",
                key="schedule.arrival",
            )
        if self.count is not None and (
            not isinstance(self.count, int) or isinstance(self.count, bool) or self.count < 1
        ):
            raise JobSpecError(
                f"expected a positive whole number of new units, got {self.count!r}",
                key="schedule.arrival.count",
            )
        if self.bytes is not None:
            try:
                size = parse_bytes(self.bytes)
            except (TypeError, ValueError):
                size = 0
            if isinstance(self.bytes, bool) or size <= 0:
                raise JobSpecError(
                    f"expected a size such as 1GiB or a number of bytes, got {self.bytes!r}",
                    key="schedule.arrival.bytes",
                )
            object.__setattr__(self, "bytes", size)
        object.__setattr__(self, "poll", parse_duration(self.poll, key="schedule.arrival.poll"))

    def next_fire(self, now: datetime, last: datetime | None = None) -> datetime:
        return now if last is None else last + timedelta(seconds=float(self.poll))

    def pending(self, pipeline: Pipeline, ledger: Ledger) -> list[Unit]:
        """The units no ledger record covers with the same fingerprint."""
        try:
            units = pipeline.source.list_units()
        except SourceError:
            return []  # nothing has landed yet
        batches = make_batches(units, pipeline.batching, salt=pipeline.definition_token)
        records = ledger.batch_states(pipeline.name)
        seen = {
            u.key
            for b in batches
            if (rec := records.get(b.id)) is not None and rec.fingerprint == b.fingerprint
            for u in b.units
        }
        return [u for u in units if u.key not in seen]

    def ready(self, pipeline: Pipeline, ledger: Ledger) -> bool:
        new = self.pending(pipeline, ledger)
        if self.count is not None:
            return len(new) >= self.count
        return sum(u.size for u in new) >= int(self.bytes or 0)

    def describe(self) -> str:
        what = f"{self.count} new units" if self.count is not None else f"{self.bytes} new bytes"
        return f"on arrival of {what} (looking every {timedelta(seconds=float(self.poll))})"


# -- the watch loop ------------------------------------------------------------------


@dataclass(frozen=True)
class WatchResult:
    """How a watch ended: runs started, runs that failed, the last result, stopped by a signal."""

    runs: int
    failed: int
    last: RunResult | None
    last_failed: bool
    stopped: bool


def summary_line(result: RunResult) -> str:
    """One line per run, for logs: time, run id, status, batch and row counts.

    Examples
    --------
    >>> summary_line(result)  # doctest: +SKIP
    '2026-11-02T02:00:04Z nightly run 20261102T020000-1a2b3c: succeeded, 4 committed, ...'
    """
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return (
        f"{stamp} {result.job} run {result.run_id}: {result.status}, "
        f"{result.committed} committed, {result.skipped} already done, "
        f"{result.quarantined} quarantined, {result.failed} failed; "
        f"rows {result.rows_in:,} in, {result.rows_out:,} out, {result.rows_filtered:,} filtered, "
        f"{result.rows_quarantined:,} quarantined; {result.duration:.1f} s"
    )


def watch(
    pipeline: Pipeline,
    trigger: Trigger,
    *,
    client: Any = None,
    max_runs: int | None = None,
    stop: threading.Event | None = None,
    listeners: Sequence[Callable[[Event], None]] = (),
    on_result: Callable[[RunResult], None] | None = None,
    on_error: Callable[[Exception], None] | None = None,
    params: dict | None = None,
) -> WatchResult:
    """Run ``pipeline`` each time ``trigger`` fires, until ``stop`` is set or ``max_runs`` ran.

    Each run is an ordinary run (the plan minus the ledger). A failed run, or one
    that cannot start (no input yet, another run holds the job's lock), is reported
    and the loop goes on; listeners (such as alerts) get a ``finished`` event with
    status ``failed`` for a run that could not start. The cluster is connected once
    and reused by every run.

    Parameters
    ----------
    client
        Anything ``dbatch.connect`` accepts; default: the active client, else a
        LocalCluster started here and closed when the watch ends.
    max_runs
        Stop after this many runs (``None``: until stopped).
    stop
        Set it (from a signal handler or another thread) to stop after the current run.
    listeners
        Run-event listeners for every run, such as ``Alert``.
    on_result, on_error
        Called with each run's ``RunResult``, or with the error of a run that could not start.

    Examples
    --------
    >>> watch(pipeline, Interval("1h"))  # doctest: +SKIP
    """
    from .cluster import connect, has_active_client, owns_cluster
    from .ledger import Ledger

    stop = stop or threading.Event()
    ledger = Ledger(pipeline.ledger_url())
    # Close at the end only a client made here, never the caller's (nor the notebook's).
    makes_client = client is None and not has_active_client()
    try:
        connected = connect(client, show_link=False)
    except BaseException:
        ledger.close()
        raise
    runs = failed = 0
    last_result = None
    last_failed = False
    fired: datetime | None = None
    try:
        while max_runs is None or runs < max_runs:
            due = trigger.next_fire(datetime.now(UTC), fired)
            if _wait_until(due, stop):
                break
            fired = datetime.now(UTC)
            if not _ready(trigger, pipeline, ledger):
                continue
            outcome = _run_once(pipeline, connected, listeners, params)
            runs += 1
            if isinstance(outcome, Exception):
                failed += 1
                last_failed = True
                (on_error or _log_error)(outcome)
            else:
                last_result = outcome
                last_failed = outcome.status == "failed"
                failed += last_failed
                (on_result or _log_result)(outcome)
    finally:
        ledger.close()
        if makes_client:
            cluster = getattr(connected, "cluster", None) if owns_cluster(connected) else None
            connected.close()
            if cluster is not None:
                cluster.close()
    return WatchResult(runs, failed, last_result, last_failed, stop.is_set())


def _wait_until(due: datetime, stop: threading.Event) -> bool:
    """Sleep until ``due`` (re-reading the clock each second); True when stopped first."""
    while True:
        if stop.is_set():
            return True
        remaining = (due - datetime.now(UTC)).total_seconds()
        if remaining <= 0:
            return False
        stop.wait(min(remaining, 1.0))


def _ready(trigger: Trigger, pipeline: Pipeline, ledger: Ledger) -> bool:
    try:
        return trigger.ready(pipeline, ledger)
    except JobSpecError:
        raise  # the job itself is wrong; looking again will not help
    except (DBatchError, OSError) as e:  # a source or the ledger is unreachable for now
        log.warning("dbatch: %s: could not look for new input (%s); trying again", pipeline.name, e)
        return False


def _run_once(pipeline: Pipeline, client: Any, listeners, params) -> RunResult | Exception:
    from .runner import new_run_id

    try:
        return pipeline.run(client=client, progress=False, listeners=list(listeners), params=params)
    except JobSpecError:
        raise
    except Exception as e:  # noqa: BLE001 - a watcher outlives one bad run; it is reported
        finished = Event(
            EventKind.FINISHED,
            new_run_id(),
            pipeline.name,
            data={"status": "failed", "message": f"the run could not start: {e}"},
        )
        for listener in listeners:
            listener(finished)
        return e


def _log_result(result: RunResult) -> None:
    log.info("dbatch: %s", summary_line(result))


def _log_error(error: Exception) -> None:
    log.error("dbatch: a run could not start: %s", error)


# -- backfills -----------------------------------------------------------------------


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
