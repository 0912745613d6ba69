"""The trigger base class and durations, as job files write them."""

from __future__ import annotations

import math
from datetime import datetime
from typing import TYPE_CHECKING, Any

from .. import protocols
from ..errors import JobSpecError

if TYPE_CHECKING:
    from ..ledger import Ledger
    from ..pipeline import Pipeline

__all__ = ["Trigger", "DURATION_SCHEMA", "parse_duration"]


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
