"""Clock triggers: a cron calendar and a fixed interval."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import JobSpecError
from ..options import refuse_unknown, summary

if TYPE_CHECKING:
    pass

from .base import DURATION_SCHEMA, Trigger, parse_duration

__all__ = ["Cron", "Interval"]


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
