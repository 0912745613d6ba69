"""Input triggers: new files arriving, and a stream polled for messages."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..batching import SIZE_SCHEMA, make_batches
from ..config import parse_bytes
from ..core import Unit
from ..errors import JobSpecError, SourceError
from ..options import refuse_unknown, summary

if TYPE_CHECKING:
    from ..ledger import Ledger
    from ..pipeline import Pipeline

from .base import DURATION_SCHEMA, Trigger, parse_duration

__all__ = ["Arrival", "Poll"]


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

    @classmethod
    def job_schema(cls) -> dict[str, Any]:
        """``{poll: 1s}``."""
        return {
            "type": "object",
            "description": summary(cls),
            "properties": {"poll": DURATION_SCHEMA},
            "required": ["poll"],
            "additionalProperties": False,
        }

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
