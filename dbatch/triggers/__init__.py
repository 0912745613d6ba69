"""Triggers: what starts a run (a cron calendar, an interval, the arrival of new input).

``base`` holds the trigger class and durations, ``clock`` the calendar and interval
triggers, ``arrival`` the input-driven ones; the job-file forms are read here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .._lazy import lazy_exports
from ..errors import JobSpecError
from ..options import configure, schema_of
from .arrival import Arrival, Poll
from .base import DURATION_SCHEMA, Trigger, parse_duration
from .clock import Cron, Interval

if TYPE_CHECKING:
    from ..backfill import UnitsBetween as UnitsBetween
    from ..backfill import backfill as backfill
    from ..watch import WatchResult as WatchResult
    from ..watch import summary_line as summary_line
    from ..watch import watch as watch

__all__ = [
    "Trigger",
    "Cron",
    "Interval",
    "Arrival",
    "Poll",
    "SCHEDULES",
    "SCHEDULE_FORMS",
    "parse_duration",
    "DURATION_SCHEMA",
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
