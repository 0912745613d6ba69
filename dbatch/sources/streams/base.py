"""What every stream source shares: offset ranges as units, decoding, the broker's position.

A unit is a range of offsets ``(lo, hi]`` of one stream: from just after the
last offset planned before it up to an offset the broker holds. Planning asks
the broker for its current end only (never for the messages); a worker reads
exactly the messages of its ranges, so a retried batch reads the same ones. The
ledger keeps every planned range; once a batch commits, the broker's own record
of the consumer (a consumer group, a durable consumer) is moved past it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import pyarrow as pa

from ...context import BatchContext
from ...core import Batch, Unit
from ...errors import JobSpecError, SourceError, TransientError
from ...schema import Schema
from .decode import FORMATS, Message, decode

__all__ = ["Range", "StreamSource", "StreamGapError", "bounds"]


class StreamGapError(SourceError):
    """Messages the job has not read yet were removed by the broker (its retention)."""


@dataclass(frozen=True)
class Range:
    """Offsets ``(lo, hi]`` as a broker reports them: how many messages, bytes, and when."""

    lo: Any
    hi: Any
    messages: int
    bytes: int
    time: float | None = None
    counter: int | None = None  # the broker's count of messages ever added, up to ``hi``
    since: int | None = None  # the same count up to ``lo``


def bounds(unit: Unit) -> tuple[Any, Any]:
    """The offsets ``(lo, hi]`` of a stream unit."""
    ident = dict(unit.identity)
    return ident["lo"], ident["hi"]


@dataclass(frozen=True, kw_only=True)
class StreamSource:
    """The options every stream source has (see ``RedisStream``, ``NatsStream``, ``MqttTopic``).

    Parameters
    ----------
    format
        ``json`` (one object per message), ``csv`` (one line per message, columns in
        the schema's order) or ``arrow`` (an Arrow IPC stream per message).
    schema
        The columns and their rules (as for files); required for ``csv``.
    chunk
        Messages per unit at most (a batch holds whole units).
    start
        Where a job with nothing in its ledger begins when the broker keeps no position
        for it: ``earliest`` (all the broker holds) or ``latest`` (only what comes next).
    on_gap
        What messages the broker removed before the job read them do: ``fail``
        (default: the run stops and the error names the gap) or ``skip`` (the gap is
        kept in the quarantine as one entry, and the job goes on).
    """

    format: str = "json"
    schema: Mapping[str, Any] | Schema | None = None
    chunk: int = 10_000
    start: str = "earliest"
    on_gap: str = "fail"

    kind: ClassVar[str] = "stream"
    incremental: ClassVar[bool] = True  # an empty plan is "nothing new"

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise JobSpecError(
                f"unknown format {self.format!r}; use one of {FORMATS}", key="source.format"
            )
        object.__setattr__(self, "schema", Schema.from_mapping(self.schema))
        if self.format == "csv" and self.schema is None:
            raise JobSpecError("CSV messages need a schema: their columns in order", key="source")
        if not isinstance(self.chunk, int) or isinstance(self.chunk, bool) or self.chunk <= 0:
            raise JobSpecError("must be a positive whole number", key="source.chunk")
        if self.start not in ("earliest", "latest"):
            raise JobSpecError("use earliest or latest", key="source.start")
        if self.on_gap not in ("fail", "skip"):
            raise JobSpecError("use fail or skip", key="source.on_gap")

    # -- what a broker implements -------------------------------------------------------

    def _name(self) -> str:  # pragma: no cover - each broker names its stream
        raise NotImplementedError

    def _where(self) -> str:  # pragma: no cover
        raise NotImplementedError

    def _first_position(self) -> Any:  # pragma: no cover
        """Where a job without ranges in the ledger begins (the broker's position, or ``start``)."""
        raise NotImplementedError

    def _ranges(self, after: Any, last: Unit | None) -> tuple[list[Range], str | None]:
        """Ranges of at most ``chunk`` messages from ``after`` (the end of ``last``, the
        unit planned before) to the end, and what of them the broker no longer holds."""
        raise NotImplementedError

    def _read(self, unit: Unit) -> tuple[list[Message], str | None]:  # pragma: no cover
        """The messages of the unit's ``(lo, hi]`` the broker holds, and which of them are gone."""
        raise NotImplementedError

    def _move_position(self, upto: Any) -> None:  # pragma: no cover
        """Record on the broker that the job consumed everything up to ``upto``."""
        raise NotImplementedError

    # -- the Source contract --------------------------------------------------------------

    def describe(self) -> str:
        return f"{self.kind} {self._where()}"

    def token(self) -> list[Any]:
        declared = self.declared
        return [self.kind, self._where(), self.format, declared.token() if declared else None]

    @property
    def declared(self) -> Schema | None:
        """The schema, as ``__post_init__`` made it."""
        return self.schema if isinstance(self.schema, Schema) else None

    def batch_schema(self, unit: Unit) -> pa.Schema | None:
        declared = self.declared
        return declared.arrow() if declared is not None else None

    def list_units(self) -> list[Unit]:
        """The units from the broker's position (or ``start``) to its end now."""
        return self.units_after([])

    def units_after(self, planned: Sequence[Unit]) -> list[Unit]:
        after = bounds(planned[-1])[1] if planned else self._first_position()
        ranges, lost = self._ranges(after, planned[-1] if planned else None)
        if lost and self.on_gap == "fail":
            raise self._gap(lost)
        return [self._unit(r) for r in ranges]

    def acknowledge(self, done: Sequence[Unit]) -> None:
        """Move the broker's position to the end of ``done``: the plan's first units, all done."""
        if done:
            self._move_position(bounds(done[-1])[1])

    def load(self, batch: Batch, ctx: BatchContext) -> pa.Table:
        messages: list[Message] = []
        for unit in batch.units:
            got, lost = self._read(unit)
            if lost and self.on_gap == "fail":
                raise self._gap(lost)
            if lost:
                ctx.quarantine_file(unit.key, "gap", f"{self.describe()}: {lost}")
            messages.extend(got)
        where = f"{self.describe()} {batch.units[0].key}" if batch.units else self.describe()
        return decode(messages, self.format, self.declared, ctx, where)

    def _unit(self, r: Range) -> Unit:
        extra: tuple[tuple[str, Any], ...] = ()
        if r.counter is not None:
            extra += (("counter", r.counter),)
        extra += (("since", r.since),) if r.since is not None else ()
        return Unit(
            key=f"{self._name()}:({r.lo},{r.hi}]",
            size=r.bytes,
            time=r.time,
            identity=(("lo", r.lo), ("hi", r.hi), ("messages", r.messages), *extra),
        )

    def _gap(self, lost: str) -> StreamGapError:
        return StreamGapError(
            f"{self.describe()}: {lost}: the broker removed them (its retention) before this "
            "job read them. Keep messages longer on the broker (or run the job more often); "
            "to go on without them, set on_gap: skip (the gap is kept in the quarantine)."
        )

    def _unreachable(self, e: BaseException, what: str) -> TransientError:
        return TransientError(
            f"{self.describe()}: could not {what} ({type(e).__name__}: {e}); the batch is "
            "tried again. Check that the broker runs and the address is right."
        )
