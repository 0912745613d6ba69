"""Batchers: turn a source's units into batches by size, count, time window or threshold."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import pandas as pd

from .config import parse_bytes
from .core import Batch, Unit
from .errors import JobSpecError

__all__ = ["BySize", "ByCount", "ByWindow", "ByThreshold", "Batcher", "make_batches"]


class Batcher:
    """Groups ordered units; each unit lands in exactly one batch."""

    def groups(self, units: Sequence[Unit]) -> list[list[Unit]]:  # pragma: no cover
        raise NotImplementedError

    def token(self) -> list:
        return [type(self).__name__, *self.__dict__.values()]


@dataclass(frozen=True)
class BySize(Batcher):
    """Fill each batch up to ``target_bytes`` (a unit larger than that is a batch alone)."""

    target_bytes: int | str = "256MiB"

    def __post_init__(self):
        object.__setattr__(self, "target_bytes", parse_bytes(self.target_bytes))
        if self.target_bytes <= 0:
            raise JobSpecError("must be a positive size such as 64MiB", key="batching.size")

    def groups(self, units):
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

    def groups(self, units):
        return [list(units[i : i + self.count]) for i in range(0, len(units), self.count)]


@dataclass(frozen=True)
class ByWindow(Batcher):
    """One batch per time window (``"1D"``, ``"1h"``, ``"MS"`` for calendar months).

    Windows follow each unit's ``time`` (a date in its path, or its modification time).
    """

    freq: str = "1D"

    def __post_init__(self):
        try:
            pd.tseries.frequencies.to_offset(self.freq)
        except ValueError:
            raise JobSpecError(
                f"{self.freq!r} is not a pandas frequency such as 1D, 6h or MS",
                key="batching.window",
            ) from None

    def groups(self, units):
        offset = pd.tseries.frequencies.to_offset(self.freq)
        buckets: dict[pd.Timestamp, list[Unit]] = {}
        for u in units:
            if u.time is None:
                raise JobSpecError(
                    f"unit {u.key!r} has no time; set time_pattern in the source",
                    key="batching.window",
                )
            ts = pd.Timestamp(datetime.fromtimestamp(u.time, tz=UTC)).tz_localize(None)
            start = _window_start(ts, offset)
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
        if self.bytes is not None:
            object.__setattr__(self, "bytes", parse_bytes(self.bytes))

    def groups(self, units):
        if self.count is not None:
            full = len(units) - len(units) % self.count
            return ByCount(self.count).groups(list(units)[:full])
        groups = BySize(self.bytes).groups(units)
        if groups and sum(u.size for u in groups[-1]) < self.bytes:
            groups = groups[:-1]
        return groups


def _window_start(ts: pd.Timestamp, offset) -> pd.Timestamp:
    try:
        return ts.floor(offset)  # fixed frequencies: days, hours, minutes
    except ValueError:
        return offset.rollback(ts.normalize())  # calendar ones: months, weeks


def make_batches(units: Sequence[Unit], batcher: Batcher, salt: str = "") -> list[Batch]:
    """Group ``units`` and give each group a stable id and a fingerprint."""
    return [
        Batch.from_units(group, index=i, salt=salt)
        for i, group in enumerate(batcher.groups(list(units)))
    ]
