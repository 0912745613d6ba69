"""Triggers: what starts a run (a cron calendar, an interval, the arrival of new input)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import protocols
from ._lazy import lazy_exports
from .batching import SIZE_SCHEMA, make_batches
from .config import parse_bytes
from .core import Unit
from .errors import JobSpecError, SourceError
from .options import configure, refuse_unknown, schema_of, summary

if TYPE_CHECKING:
    from .backfill import UnitsBetween as UnitsBetween
    from .backfill import backfill as backfill
    from .ledger import Ledger
    from .pipeline import Pipeline
    from .watch import WatchResult as WatchResult
    from .watch import summary_line as summary_line
    from .watch import watch as watch

__all__ = [
    "Trigger",
    "Cron",
    "Interval",
    "Arrival",
    "Poll",
    "SCHEDULES",
    "SCHEDULE_FORMS",
    "parse_duration",
    "trigger_from_config",
    "schedule_schema",
]

# The watch loop and backfills live in dbatch.watch and dbatch.backfill; their old
# names here keep working, imported on first use.
__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "watch": "dbatch.watch",
        "WatchResult": "dbatch.watch",
        "summary_line": "dbatch.watch",
        "backfill": "dbatch.backfill",
        "UnitsBetween": "dbatch.backfill",
    },
)


#: A duration in a job file, as ``parse_duration`` reads it.
DURATION_SCHEMA: dict[str, Any] = {
    "type": ["string", "number"],
    "description": "A duration such as 30s, 15min or 1h, or a number of seconds.",
}


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


class Trigger(protocols.Trigger):
    """The base of the built-in triggers: the ``Trigger`` protocol, always ready by default.

    What starts a run: when to look next (``next_fire``) and whether to run then
    (``ready``). A trigger is plain data; it needs no cluster. ``next_fire(now, last)`` gets the
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

    @classmethod
    def from_config(cls, value: Any, *, key: str, file: str | None, base_dir: Path | None) -> Cron:
        """``schedule: {cron: "0 2 * * *", tz: Europe/Berlin}`` (the whole mapping)."""
        refuse_unknown(value, cls.job_schema()["properties"], key=key, file=file)
        return cls(value["cron"], tz=value.get("tz", "UTC"))

    @classmethod
    def job_schema(cls) -> dict[str, Any]:
        """``{cron: "0 2 * * *", tz: Europe/Berlin}``."""
        cron = "Five fields: minute hour day-of-month month day-of-week (quote it in YAML)."
        tz = "The IANA time zone the expression's times are in."
        return {
            "type": "object",
            "description": summary(cls),
            "properties": {
                "cron": {"type": "string", "description": cron},
                "tz": {"type": "string", "default": "UTC", "description": tz},
            },
            "required": ["cron"],
            "additionalProperties": False,
        }

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

    @classmethod
    def from_config(
        cls, value: Any, *, key: str, file: str | None, base_dir: Path | None
    ) -> Interval:
        """``schedule: {every: 1h}`` (the whole mapping)."""
        refuse_unknown(value, cls.job_schema()["properties"], key=key, file=file)
        return cls(value["every"])

    @classmethod
    def job_schema(cls) -> dict[str, Any]:
        """``{every: 1h}``."""
        return {
            "type": "object",
            "description": summary(cls),
            "properties": {"every": DURATION_SCHEMA},
            "required": ["every"],
            "additionalProperties": False,
        }

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

    @classmethod
    def from_config(
        cls, value: Any, *, key: str, file: str | None, base_dir: Path | None
    ) -> Arrival:
        """``schedule: {arrival: {count: 10, poll: 30s}}`` (the whole mapping)."""
        schema = cls.job_schema()
        refuse_unknown(value, schema["properties"], key=key, file=file)
        spec = value["arrival"]
        forms = schema["properties"]["arrival"]["properties"]
        if not isinstance(spec, Mapping) or set(spec) - set(forms):
            raise JobSpecError(
                f"expected {{count: N}} or {{bytes: SIZE}}, with an optional poll: 30s; "
                f"got {spec!r}",
                key=f"{key}.arrival",
                file=file,
            )
        return cls(**dict(spec))

    @classmethod
    def job_schema(cls) -> dict[str, Any]:
        """``{arrival: {count: 10, poll: 30s}}`` or ``{arrival: {bytes: 1GiB}}``."""
        new = {
            "count": {"type": "integer", "minimum": 1, "description": "New units to wait for."},
            "bytes": dict(SIZE_SCHEMA, description="New data to wait for, such as 1GiB."),
            "poll": dict(DURATION_SCHEMA, default=30, description="How often to look."),
        }
        arrival = {
            "type": "object",
            "properties": new,
            "additionalProperties": False,
            "oneOf": [{"required": ["count"]}, {"required": ["bytes"]}],
        }
        return {
            "type": "object",
            "description": summary(cls),
            "properties": {"arrival": arrival},
            "required": ["arrival"],
            "additionalProperties": False,
        }

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


@dataclass(frozen=True)
class Poll(Trigger):
    """Look every ``every`` and run when the plan holds a batch the ledger has not done.

    The trigger of a stream (``dbatch watch`` of a job over one without a
    schedule): a message waits at most ``every`` plus one run, or the threshold's
    ``max_wait`` when its batch is not full yet.

    Examples
    --------
    >>> Poll("2s").every
    2.0
    """

    every: float | str = 1.0

    def __post_init__(self):
        object.__setattr__(self, "every", parse_duration(self.every, key="schedule.poll"))

    @classmethod
    def from_config(cls, value: Any, *, key: str, file: str | None, base_dir: Path | None) -> Poll:
        """``schedule: {poll: 1s}`` (the whole mapping)."""
        refuse_unknown(value, {"poll"}, key=key, file=file)
        return cls(value["poll"])

    def next_fire(self, now: datetime, last: datetime | None = None) -> datetime:
        return now if last is None else last + timedelta(seconds=float(self.every))

    def ready(self, pipeline: Pipeline, ledger: Ledger) -> bool:
        done = ledger.batch_states(pipeline.name)
        for batch in pipeline.plan():
            record = done.get(batch.id)
            if record is None or record.fingerprint != batch.fingerprint:
                return True
            if record.state not in ("committed", "quarantined"):
                return True
        return False

    def describe(self) -> str:
        return f"polling every {timedelta(seconds=float(self.every))}"


#: The forms of ``schedule:`` in a job file -> the trigger that parses each.
SCHEDULES: dict[str, type[Trigger]] = {
    "cron": Cron,
    "every": Interval,
    "arrival": Arrival,
    "poll": Poll,
}

SCHEDULE_FORMS = (
    '{cron: "0 2 * * *"} (add tz: Europe/Berlin for local time), {every: 1h} '
    "{arrival: {count: 10, poll: 30s}} or {poll: 1s} (a stream)"
)


def schedule_schema() -> dict[str, Any]:
    """The JSON Schema of ``schedule:``: one of the forms of ``SCHEDULES``."""
    forms = [schema_of(cls) for cls in SCHEDULES.values()]
    return {"description": f"When `dbatch watch` runs the job: {SCHEDULE_FORMS}.", "oneOf": forms}


def trigger_from_config(value: Any, *, file: str | None) -> Trigger | None:
    """A job file's ``schedule:`` -> its trigger (``None`` when there is none).

    Examples
    --------
    >>> trigger_from_config({"every": "1h"}, file=None)
    Interval(every=3600.0)
    """
    if value is None:
        return None
    forms = set(value) & set(SCHEDULES) if isinstance(value, Mapping) else set()
    if len(forms) != 1:
        raise JobSpecError(
            f"expected one of {SCHEDULE_FORMS}; got {value!r}", key="schedule", file=file
        )
    (form,) = forms
    return configure(SCHEDULES[form], value, key="schedule", file=file, base_dir=None)
