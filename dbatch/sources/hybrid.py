"""History from files, what follows from a stream: one source, split at a hand-over time.

Every event is taken from exactly one side, by its own time ``t`` (the
``time_column``) against the hand-over time ``W``:

* a history file's rows with ``t < W`` are kept, those with ``t >= W`` are left
  to the stream;
* a stream message with ``t >= W`` is kept, one with ``t < W`` is left to the
  history (the files hold it).

So no event is in the output twice (each side keeps a half-line of time the
other does not), and none is missing as long as the files hold every event
before ``W`` and the stream, from where the job begins reading it, every event
from ``W`` on. ``W`` is part of every unit the ledger keeps (``dbatch_cuts``):
a later run plans with the same boundary, and a job file that moves it is refused.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

import pyarrow as pa
import pyarrow.compute as pc

from ..arrow import as_arrow
from ..context import BatchContext
from ..core import Batch, Unit
from ..errors import JobSpecError, SourceError
from ..options import options_schema, refuse_unknown
from ..protocols import Positioned, Source
from ..registry import component
from .files import Files

__all__ = ["Hybrid"]

_SIDES = ("history", "live")


@dataclass(frozen=True)
class Hybrid:
    """History from files up to a hand-over time, the live stream from then on, as one source.

    A history file's rows before ``handover`` and a stream's messages from
    ``handover`` on are kept, each by its own event time: no event twice, none
    left out (see docs/streams.md, "History and live in one job"). The files are
    read first, each once; then the stream, by offset ranges as any stream source.

    Parameters
    ----------
    history
        The files that hold the past (a `files` source): every event before ``handover``.
        A file found later is read too; a file read once is not read again.
    live
        The stream that holds what comes next (`redis_stream`, `nats` or `mqtt`): every
        event from ``handover`` on. Keep `start: earliest`; what it holds from before
        ``handover`` is left to the history.
    time_column
        The event-time column both sides carry (a timestamp, date or number).
    handover
        The hand-over time W: an ISO 8601 time (UTC without a zone), or a number for a
        numeric time column. Fixed once the job has planned with it.

    Examples
    --------
    >>> Hybrid(Files("landing/*.csv", schema=cols), RedisStream(stream="orders", schema=cols),
    ...        time_column="ts", handover="2026-11-28T00:00:00Z")  # doctest: +SKIP
    """

    history: Files
    live: Source
    time_column: str
    handover: str | datetime | date | int | float
    at: Any = field(init=False, repr=False, compare=False)  # W, as it is compared

    kind: ClassVar[str] = "hybrid"
    incremental: ClassVar[bool] = True  # an empty plan is "nothing new"

    def __post_init__(self) -> None:
        if not isinstance(self.history, Files):
            raise JobSpecError(
                "the history must be files (type: files): a hybrid reads each history file "
                f"once, by its name; got {type(self.history).__name__}",
                key="source.history",
            )
        if not isinstance(self.live, Positioned) or isinstance(self.live, Hybrid):
            raise JobSpecError(
                "the live side must be a stream (type: redis_stream, nats or mqtt); got "
                f"{type(self.live).__name__}",
                key="source.live",
            )
        if not isinstance(self.time_column, str) or not self.time_column:
            raise JobSpecError(
                "name the event-time column both sides carry", key="source.time_column"
            )
        object.__setattr__(self, "at", _instant(self.handover))
        for side in _SIDES:
            declared = _declared(getattr(self, side))
            if declared is not None:
                _check_column(declared, self.time_column, self.at, f"source.{side}.schema")

    @property
    def mark(self) -> str:
        """W as the ledger keeps it in every unit (ISO 8601 in UTC, or the number)."""
        if isinstance(self.at, datetime):
            return self.at.isoformat().replace("+00:00", "Z")
        return repr(self.at)

    # -- job files ------------------------------------------------------------------------

    @classmethod
    def from_config(
        cls, value: Any, *, key: str, file: str | None, base_dir: Path | None
    ) -> Hybrid:
        """``{history: {type: files, ...}, live: {type: nats, ...}, time_column, handover}``."""
        if not isinstance(value, Mapping):
            raise JobSpecError(
                "expected a mapping: history, live, time_column, handover", key=key, file=file
            )
        names = [f.name for f in dataclasses.fields(cls) if f.init]
        refuse_unknown(value, names, key=key, file=file)
        missing = [n for n in names if n not in value]
        if missing:
            raise JobSpecError(f"missing required key(s) {missing}", key=key, file=file)
        options = {k: v for k, v in value.items() if k not in _SIDES}
        for side in _SIDES:
            options[side] = component(
                "source", value[side], key=f"{key}.{side}", file=file, base_dir=base_dir
            )
        try:
            return cls(**options)
        except JobSpecError as e:
            raise JobSpecError(e.message, key=e.key or key, file=file) from None

    @classmethod
    def job_schema(cls) -> dict[str, Any]:
        schema = options_schema(cls)
        props = schema["properties"]
        for side in _SIDES:
            text = props[side].get("description", "")
            props[side] = {"$ref": "#/properties/source", "type": "object", "description": text}
        props["handover"] = {"type": ["string", "number"], **props["handover"]}
        return schema

    # -- planning, on the client ----------------------------------------------------------

    def describe(self) -> str:
        return (
            f"hybrid: {self.history.describe()} before {self.mark}, "
            f"then {self.live.describe()} (by {self.time_column})"
        )

    def __repr__(self) -> str:
        return (
            f"Hybrid(history={self.history!r}, live={self.live!r}, "
            f"time_column={self.time_column!r}, handover={self.mark!r})"
        )

    def token(self) -> list[Any]:
        return ["hybrid", self.history.token(), self.live.token(), self.time_column, self.mark]

    def list_units(self) -> list[Unit]:
        return self.units_after([])

    def units_after(self, planned: Sequence[Unit]) -> list[Unit]:
        """History files not planned yet, then the stream's ranges after the last planned one."""
        sides = self._split(planned)
        read = {u.key for u in sides["history"]}
        try:
            files = self.history.list_units()
        except SourceError:
            if not read:
                raise
            files = []  # the landing area was cleared after the backfill: nothing new there
        assert isinstance(self.live, Positioned)
        history = [u for u in files if u.key not in read]
        live = self.live.units_after(sides["live"])
        return [self._wrap("history", u) for u in history] + [self._wrap("live", u) for u in live]

    def acknowledge(self, done: Sequence[Unit]) -> None:
        """Move the stream's position over the live ranges of ``done``."""
        assert isinstance(self.live, Positioned)
        self.live.acknowledge(self._split(done)["live"])

    def batch_schema(self, unit: Unit) -> pa.Schema | None:
        side, inner = _unwrap(unit)
        if side == "history":
            return self.history.batch_schema(inner)
        declared = _declared(self.live)
        return declared.arrow() if declared is not None else None

    # -- loading, on a worker -------------------------------------------------------------

    def load(self, batch: Batch, ctx: BatchContext) -> pa.Table:
        tables = []
        for side in _SIDES:
            units = [inner for s, inner in map(_unwrap, batch.units) if s == side]
            if not units:
                continue
            part = dataclasses.replace(batch, units=tuple(units))
            data = as_arrow(getattr(self, side).load(part, ctx))
            if data.num_columns == 0:
                continue  # nothing readable in these units (each was quarantined)
            tables.append(self._keep(side, data, ctx, part))
        if not tables:
            declared = _declared(self.history) or _declared(self.live)
            return declared.arrow().empty_table() if declared is not None else pa.table({})
        return _concat(tables, self.describe())

    def _keep(self, side: str, table: pa.Table, ctx: BatchContext, part: Batch) -> pa.Table:
        """The rows of ``table`` that ``side`` covers; the others counted as filtered."""
        where = f"{side} {part.units[0].key}"
        if self.time_column not in table.column_names:
            raise SourceError(
                f"{self.describe()}: the {where} has no column {self.time_column!r} "
                f"(it has {table.column_names}); both sides must carry the event time"
            )
        column = table.column(self.time_column)
        before = pc.less(column, _bound(column.type, self.at, f"{side} {self.time_column}"))
        keep = pc.fill_null(before if side == "history" else pc.invert(before), False)
        missing = pc.is_null(column)
        if pc.any(missing).as_py():
            bad = table.filter(missing)
            raw = [json.dumps(r, default=str) for r in bad.to_pylist()]
            ctx.quarantine_rows(
                where,
                "no_event_time",
                f"no {self.time_column}: neither side can say it covers the row",
                raw,
            )
        kept = table.filter(keep)
        ctx.filtered(table.num_rows - kept.num_rows - _count(missing))
        return kept

    # -- units of either side -----------------------------------------------------------------

    def _wrap(self, side: str, unit: Unit) -> Unit:
        identity = (("side", side), ("handover", self.mark), *unit.identity)
        return dataclasses.replace(unit, identity=identity)

    def _split(self, units: Sequence[Unit]) -> dict[str, list[Unit]]:
        """The units of each side, as that side listed them; W of each checked against ours."""
        out: dict[str, list[Unit]] = {side: [] for side in _SIDES}
        for unit in units:
            mark = dict(unit.identity).get("handover")
            if mark != self.mark:
                raise JobSpecError(
                    f"the ledger holds batches of this job planned with the hand-over at {mark}; "
                    f"the job now says {self.mark}. Moving it would take the events between the "
                    f"two from both sides or from neither: set handover back to {mark}, or run "
                    "the job afresh under another name (a new ledger and output)",
                    key="source.handover",
                )
            side, inner = _unwrap(unit)
            out[side].append(inner)
        return out


def _count(missing: pa.ChunkedArray | pa.Array) -> int:
    """How many rows ``missing`` marks."""
    return int(pc.sum(missing).as_py() or 0)


def _unwrap(unit: Unit) -> tuple[str, Unit]:
    ident = dict(unit.identity)
    side = ident.get("side")
    if side not in _SIDES:
        raise SourceError(f"{unit.key!r} was not planned by a hybrid source (it names no side)")
    inner = tuple((k, v) for k, v in unit.identity if k not in ("side", "handover"))
    return str(side), dataclasses.replace(unit, identity=inner)


def _declared(source: Any) -> Any:
    """The schema a side declares (``Files`` and the stream sources keep it as ``declared``)."""
    from .streams.base import StreamSource

    return source.declared if isinstance(source, (Files, StreamSource)) else None


def _instant(value: Any) -> datetime | int | float:
    """W: a time in UTC (text without a zone is UTC), or a number for a numeric column."""
    if isinstance(value, bool):
        raise JobSpecError(f"expected a time or a number, got {value!r}", key="source.handover")
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, date) and not isinstance(value, datetime):
        value = datetime(value.year, value.month, value.day)
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip())
        except ValueError:
            raise JobSpecError(
                f"{value!r} is no ISO 8601 time; write, for example, 2026-11-28T00:00:00Z",
                key="source.handover",
            ) from None
    if not isinstance(value, datetime):
        raise JobSpecError(f"expected a time or a number, got {value!r}", key="source.handover")
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _check_column(declared: Any, column: str, at: Any, key: str) -> None:
    if column not in declared.names:
        raise JobSpecError(
            f"the schema has no column {column!r}; declare the event time on both sides", key=key
        )
    _bound(declared.arrow().field(column).type, at, column, key=key)


def _bound(kind: pa.DataType, at: Any, what: str, key: str | None = None) -> pa.Scalar:
    """W as a scalar comparable with a column of type ``kind``."""
    timely = pa.types.is_timestamp(kind) or pa.types.is_date(kind)
    numeric = pa.types.is_integer(kind) or pa.types.is_floating(kind)
    if timely and isinstance(at, datetime):
        if pa.types.is_date(kind):  # a date is its midnight (UTC): before W up to W's day
            day = at.date()
            midnight = at == datetime(day.year, day.month, day.day, tzinfo=UTC)
            return pa.scalar(day if midnight else day + timedelta(days=1), type=kind)
        assert isinstance(kind, pa.TimestampType)
        return pa.scalar(at if kind.tz else at.replace(tzinfo=None), type=kind)
    if numeric and not isinstance(at, datetime):
        return pa.scalar(at)
    want = "a number" if numeric else "a timestamp or date column"
    message = (
        f"{what} is {kind}, which the hand-over {at!r} cannot be compared with: "
        f"give {want}" + ("" if timely or numeric else " (declare its type in the schema)")
    )
    if key is not None:
        raise JobSpecError(message, key=key)
    raise SourceError(message)


def _concat(tables: list[pa.Table], where: str) -> pa.Table:
    first = tables[0].schema
    for t in tables[1:]:
        if not t.schema.equals(first):
            raise SourceError(
                f"{where}: the history gives columns {first} and the stream {t.schema}; declare "
                "the same schema on both sides"
            )
    return pa.concat_tables(tables)
