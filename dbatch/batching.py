"""Batchers: turn a source's units into batches by size, count, time window or threshold."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from .config import parse_bytes
from .core import Batch, Unit
from .errors import JobSpecError
from .options import configure, schema_of
from .windows import frequency, window_start

if TYPE_CHECKING:  # pandas is imported where windows are computed, not with the package
    import pandas as pd

__all__ = [
    "BySize",
    "ByCount",
    "ByWindow",
    "ByThreshold",
    "Batcher",
    "BATCHERS",
    "batcher_from_config",
    "batching_schema",
    "SIZE_SCHEMA",
    "make_batches",
    "MAX_UNITS_PER_BATCH",
    "MAX_BATCH_BYTES",
    "frequency",
    "window_start",
]


#: The most units one batch may hold (``count``): a batch is one task on one worker.
MAX_UNITS_PER_BATCH = 1_000_000
#: The largest batch size (``size``, ``threshold.bytes``): 1 TiB.
MAX_BATCH_BYTES = 2**40


def _bounded_count(count: Any, key: str, what: str = "") -> None:
    """Refuse a unit count that is not a whole number in 1..MAX_UNITS_PER_BATCH."""
    if not isinstance(count, int) or isinstance(count, bool) or count <= 0:
        raise JobSpecError(f"{what}must be a positive whole number, got {count!r}", key=key)
    if count > MAX_UNITS_PER_BATCH:
        raise JobSpecError(
            f"{what}{count:,} units per batch is more than the {MAX_UNITS_PER_BATCH:,} a batch "
            "may hold (a batch is one task on one worker); use a smaller count",
            key=key,
        )


def _bounded_bytes(size: int, key: str, what: str = "") -> None:
    """Refuse a batch size that is not in 1 byte..MAX_BATCH_BYTES."""
    if size <= 0:
        raise JobSpecError(f"{what}must be a positive size such as 64MiB", key=key)
    if size > MAX_BATCH_BYTES:
        from dask.utils import format_bytes

        raise JobSpecError(
            f"{what}{format_bytes(size)} is more than the 1 TiB a batch may hold (a batch is one "
            "task on one worker); use a smaller size such as 256MiB",
            key=key,
        )


#: A size in a job file: ``64MiB``, ``1GB`` or a number of bytes.
SIZE_SCHEMA: dict[str, Any] = {
    "type": ["string", "integer"],
    "description": "A size such as 64MiB or 1GB, or a number of bytes.",
}
_WHOLE: dict[str, Any] = {"type": "integer", "minimum": 1}


class Batcher:
    """Groups ordered units; each unit lands in exactly one batch."""

    def groups(self, units: Sequence[Unit]) -> list[list[Unit]]:  # pragma: no cover
        raise NotImplementedError

    def token(self) -> list:
        return [type(self).__name__, *self.__dict__.values()]


@dataclass(frozen=True)
class BySize(Batcher):
    """Fill each batch up to ``target_bytes`` (a unit larger than that is a batch alone).

    ``"auto"``: the pipeline picks the size that fits a worker's memory, from the
    ledger's history of the job (see ``dbatch.sizing``), when it plans.
    """

    target_bytes: int | str = "256MiB"

    def __post_init__(self):
        if self.auto:
            return
        object.__setattr__(self, "target_bytes", parse_bytes(self.target_bytes))
        _bounded_bytes(self.target_bytes, "batching.size")

    @property
    def auto(self) -> bool:
        """Whether the size is left to the pipeline (``size: auto``)."""
        return isinstance(self.target_bytes, str) and self.target_bytes.strip().lower() == "auto"

    @classmethod
    def from_config(
        cls, value: Any, *, key: str, file: str | None, base_dir: Path | None
    ) -> BySize:
        """``batching: {size: 64MiB}`` (or a number of bytes, or ``auto``)."""
        _expect(
            _is_size, value, "a size such as 64MiB, a number of bytes or auto, got {!r}", key, file
        )
        return _checked(lambda: cls(value), "a size such as 64MiB", key=key, file=file)

    @classmethod
    def job_schema(cls) -> dict[str, Any]:
        """``size:`` takes a size."""
        return dict(SIZE_SCHEMA, description="Fill each batch up to this size, such as 64MiB.")

    def groups(self, units):
        if self.auto:
            raise JobSpecError(
                "size: auto is chosen when a pipeline plans; use Pipeline.plan(), or give a size",
                key="batching.size",
            )
        out: list[list[Unit]] = []
        current: list[Unit] = []
        size = 0
        for u in units:
            if current and size + u.size > self.target_bytes:
                out.append(current)
                current, size = [], 0
            current.append(u)
            size += u.size
        if current:
            out.append(current)
        return out


@dataclass(frozen=True)
class ByCount(Batcher):
    """``count`` units per batch."""

    count: int = 8

    def __post_init__(self):
        _bounded_count(self.count, "batching.count")

    @classmethod
    def from_config(
        cls, value: Any, *, key: str, file: str | None, base_dir: Path | None
    ) -> ByCount:
        """``batching: {count: 8}``."""
        message = "a whole number of units per batch, such as 8; got {!r}"
        _expect(_is_whole, value, message, key, file)
        return _checked(lambda: cls(value), "a positive whole number", key=key, file=file)

    @classmethod
    def job_schema(cls) -> dict[str, Any]:
        """``count:`` takes a positive whole number."""
        return dict(_WHOLE, description="Units (files, key ranges, pages) per batch.")

    def groups(self, units):
        return [list(units[i : i + self.count]) for i in range(0, len(units), self.count)]


@dataclass(frozen=True)
class ByWindow(Batcher):
    """One batch per time window (``"1D"``, ``"1h"``, ``"MS"`` for calendar months).

    Windows follow each unit's ``time`` (a date in its path, or its modification time).
    """

    freq: str = "1D"

    def __post_init__(self):
        frequency(self.freq, key="batching.window")

    @classmethod
    def from_config(
        cls, value: Any, *, key: str, file: str | None, base_dir: Path | None
    ) -> ByWindow:
        """``batching: {window: 1D}`` (a pandas frequency)."""
        message = "a pandas frequency such as 1D, 6h or MS, got {!r}"
        _expect(lambda v: isinstance(v, str), value, message, key, file)
        return _checked(lambda: cls(value), "a frequency such as 1D, 6h or MS", key=key, file=file)

    @classmethod
    def job_schema(cls) -> dict[str, Any]:
        """``window:`` takes a pandas frequency."""
        return {
            "type": "string",
            "description": "One batch per time window: a pandas frequency such as 1D, 6h or MS.",
        }

    def groups(self, units):
        import pandas as pd

        offset = frequency(self.freq, key="batching.window")
        buckets: dict[pd.Timestamp, list[Unit]] = {}
        for u in units:
            if u.time is None:
                raise JobSpecError(
                    f"unit {u.key!r} has no time; set time_pattern in the source",
                    key="batching.window",
                )
            ts = pd.Timestamp(datetime.fromtimestamp(u.time, tz=UTC)).tz_localize(None)
            start = window_start(ts, offset)
            buckets.setdefault(start, []).append(u)
        return [buckets[k] for k in sorted(buckets)]


@dataclass(frozen=True)
class ByThreshold(Batcher):
    """Arrival threshold: a batch closes at ``count`` (or ``bytes``); a partial tail waits.

    Units in an incomplete last batch are left for a later run, which is what a
    file-arrival trigger wants: work starts once enough has arrived. ``count``
    counts files, or messages for a stream's units (offset ranges). With
    ``max_wait`` (seconds, or ``"30s"``) the tail is taken too once its oldest
    unit is that old: a micro-batch waits for ``count`` messages, or that long.
    """

    count: int | None = None
    bytes: int | str | None = None
    max_wait: float | str | None = None

    def __post_init__(self):
        if self.count is None and self.bytes is None:
            raise JobSpecError("set count, bytes or both", key="batching.threshold")
        if self.count is not None:
            _bounded_count(self.count, "batching.threshold.count", "count ")
        if self.bytes is not None:
            size = parse_bytes(self.bytes)
            object.__setattr__(self, "bytes", size)
            _bounded_bytes(size, "batching.threshold.bytes", "bytes ")
        if self.max_wait is not None:
            object.__setattr__(self, "max_wait", _seconds(self.max_wait))

    @classmethod
    def from_config(
        cls, value: Any, *, key: str, file: str | None, base_dir: Path | None
    ) -> ByThreshold:
        """``batching: {threshold: {count: 10}}``, ``{bytes: 1GiB}``, with an optional ``max_wait``."""
        allowed = {"count", "bytes", "max_wait"}
        if not isinstance(value, Mapping) or set(value) - allowed or not set(value) - {"max_wait"}:
            raise JobSpecError(
                f"expected {{count: N}} or {{bytes: SIZE}} (or both), with an optional "
                f"max_wait: 30s; got {value!r}",
                key=key,
                file=file,
            )
        if "count" in value:
            _expect(_is_whole, value["count"], "a whole number, got {!r}", f"{key}.count", file)
        if "bytes" in value:
            _expect(_is_size, value["bytes"], "a size such as 1GiB, got {!r}", f"{key}.bytes", file)
        return _checked(
            lambda: cls(**dict(value)), "{count: N} or {bytes: SIZE}", key=key, file=file
        )

    @classmethod
    def job_schema(cls) -> dict[str, Any]:
        """``threshold:`` takes ``count``, ``bytes`` or both, and an optional ``max_wait``."""
        wait = {
            "type": ["string", "number"],
            "description": "Take a partial batch too once its oldest unit is this old (30s).",
        }
        return {
            "type": "object",
            "description": "Full batches only; a partial last batch waits for a later run "
            "(or for max_wait).",
            "properties": {"count": _WHOLE, "bytes": SIZE_SCHEMA, "max_wait": wait},
            "additionalProperties": False,
            "anyOf": [{"required": ["count"]}, {"required": ["bytes"]}],
        }

    def groups(self, units):
        out: list[list[Unit]] = []
        current: list[Unit] = []
        n = size = 0
        for u in units:
            if self.bytes is not None and current and size + u.size > self.bytes:
                out.append(current)
                current, n, size = [], 0, 0
            current.append(u)
            n, size = n + _weight(u), size + u.size
            if self.count is not None and n >= self.count:
                out.append(current)
                current, n, size = [], 0, 0
        if current and (self.bytes is not None and size >= self.bytes or self._waited(current)):
            out.append(current)
        return out

    def _waited(self, units: list[Unit]) -> bool:
        if self.max_wait is None:
            return False
        times = [u.time for u in units if u.time is not None]
        return bool(times) and time.time() - min(times) >= float(self.max_wait)


def _weight(unit: Unit) -> int:
    """What ``count`` counts in a unit: its messages (a stream's range), else one."""
    return int(dict(unit.identity).get("messages", 1))


def _seconds(value: Any) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0:
        return float(value)
    import pandas as pd

    try:
        seconds = pd.Timedelta(str(value)).total_seconds()
    except (TypeError, ValueError):
        seconds = -1.0
    if seconds < 0:
        raise JobSpecError(
            f"expected a duration such as 30s or 5min, got {value!r}",
            key="batching.threshold.max_wait",
        )
    return seconds


#: The forms of ``batching:`` in a job file -> the batcher that parses each.
BATCHERS: dict[str, type[Batcher]] = {
    "size": BySize,
    "count": ByCount,
    "window": ByWindow,
    "threshold": ByThreshold,
}


def batcher_from_config(value: Any, *, file: str | None) -> Batcher:
    """A job file's ``batching:`` (one form such as ``{count: 8}``) -> its batcher.

    Examples
    --------
    >>> batcher_from_config({"window": "1D"}, file=None)
    ByWindow(freq='1D')
    """
    if not isinstance(value, Mapping) or len(value) != 1:
        raise JobSpecError(
            "give one of {size: 64MiB}, {count: 8}, {window: 1D}, {threshold: {count: 10}}",
            key="batching",
            file=file,
        )
    ((form, option),) = value.items()
    if form not in BATCHERS:
        raise JobSpecError(
            f"unknown batching {form!r}; use {', '.join(list(BATCHERS)[:-1])} or "
            f"{list(BATCHERS)[-1]}",
            key="batching",
            file=file,
        )
    return configure(BATCHERS[form], option, key=f"batching.{form}", file=file, base_dir=None)


def batching_schema() -> dict[str, Any]:
    """The JSON Schema of ``batching:``: one of the forms of ``BATCHERS``."""
    return {
        "type": "object",
        "description": "How units are grouped into batches: one of " + ", ".join(BATCHERS) + ".",
        "properties": {form: schema_of(cls) for form, cls in BATCHERS.items()},
        "additionalProperties": False,
        "minProperties": 1,
        "maxProperties": 1,
    }


def _is_size(value: Any) -> bool:
    return isinstance(value, (int, str)) and not isinstance(value, bool)


def _is_whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _expect(
    accepts: Callable[[Any], bool], value: Any, expected: str, key: str, file: str | None
) -> None:
    """Refuse a YAML value of the wrong type: "expected <expected>" (``{!r}`` is the value)."""
    if not accepts(value):
        raise JobSpecError("expected " + expected.format(value), key=key, file=file)


_B = TypeVar("_B", bound=Batcher)


def _checked(make: Callable[[], _B], expected: str, *, key: str, file: str | None) -> _B:
    """``make()``, with the batcher's own refusal placed at ``key`` in the job file."""
    try:
        return make()
    except JobSpecError as e:
        raise JobSpecError(e.message, key=key, file=file) from None
    except (TypeError, ValueError) as e:
        raise JobSpecError(f"expected {expected}: {e}", key=key, file=file) from None


def make_batches(units: Sequence[Unit], batcher: Batcher, salt: str = "") -> list[Batch]:
    """Group ``units`` and give each group a stable id and a fingerprint."""
    return [
        Batch.from_units(group, index=i, salt=salt)
        for i, group in enumerate(batcher.groups(list(units)))
    ]
