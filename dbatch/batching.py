"""Batchers: turn a source's units into batches by size, count, time window or threshold."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from .config import parse_bytes
from .core import Batch, Unit
from .errors import JobSpecError
from .options import configure
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
    "make_batches",
    "frequency",
    "window_start",
]


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
        if self.target_bytes <= 0:
            raise JobSpecError("must be a positive size such as 64MiB", key="batching.size")

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
        if not isinstance(self.count, int) or self.count <= 0:
            raise JobSpecError("must be a positive whole number", key="batching.count")

    @classmethod
    def from_config(
        cls, value: Any, *, key: str, file: str | None, base_dir: Path | None
    ) -> ByCount:
        """``batching: {count: 8}``."""
        message = "a whole number of units per batch, such as 8; got {!r}"
        _expect(_is_whole, value, message, key, file)
        return _checked(lambda: cls(value), "a positive whole number", key=key, file=file)

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
    """Arrival threshold: full batches of ``count`` units (or ``bytes``); a partial tail waits.

    Units in an incomplete last batch are left for a later run, which is what a
    file-arrival trigger wants: work starts once enough has arrived.
    """

    count: int | None = None
    bytes: int | str | None = None

    def __post_init__(self):
        if (self.count is None) == (self.bytes is None):
            raise JobSpecError("set exactly one of count or bytes", key="batching.threshold")
        if self.count is not None and (
            not isinstance(self.count, int) or isinstance(self.count, bool) or self.count <= 0
        ):
            raise JobSpecError(
                f"count must be a positive whole number, got {self.count!r}",
                key="batching.threshold.count",
            )
        if self.bytes is not None:
            size = parse_bytes(self.bytes)
            object.__setattr__(self, "bytes", size)
            if size <= 0:
                raise JobSpecError(
                    "bytes must be a positive size such as 1GiB", key="batching.threshold.bytes"
                )

    @classmethod
    def from_config(
        cls, value: Any, *, key: str, file: str | None, base_dir: Path | None
    ) -> ByThreshold:
        """``batching: {threshold: {count: 10}}`` or ``{threshold: {bytes: 1GiB}}``."""
        if not isinstance(value, Mapping) or set(value) - {"count", "bytes"} or len(value) != 1:
            raise JobSpecError(
                f"expected {{count: N}} or {{bytes: SIZE}}, got {value!r}", key=key, file=file
            )
        ((which, amount),) = value.items()
        if which == "count":
            _expect(_is_whole, amount, "a whole number, got {!r}", f"{key}.count", file)
        else:
            _expect(_is_size, amount, "a size such as 1GiB, got {!r}", f"{key}.bytes", file)
        return _checked(
            lambda: cls(**{which: amount}), "{count: N} or {bytes: SIZE}", key=key, file=file
        )

    def groups(self, units):
        if self.count is not None:
            full = len(units) - len(units) % self.count
            return ByCount(self.count).groups(list(units)[:full])
        groups = BySize(self.bytes).groups(units)
        if groups and sum(u.size for u in groups[-1]) < self.bytes:
            groups = groups[:-1]
        return groups


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
