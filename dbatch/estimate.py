"""What batches will cost, from what batches of the same job cost before (plain data)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["Cost", "cost_from_history"]


@dataclass(frozen=True)
class Cost:
    """Seconds and peak memory of a batch, by its bytes (or its units, when bytes are unknown).

    ``memory_per_byte`` is the largest ratio seen (a batch's peak growth over its
    input bytes), so an estimate errs on the side of too much memory; ``base_memory``
    the most a batch grew by whatever its size (the engines' fixed share).

    Examples
    --------
    >>> cost = cost_from_history([{"units": 2, "bytes": 1000, "duration": 2.0, "peak_memory": 5000}])
    >>> cost.seconds(500, 1), cost.memory(500)
    (1.0, 5000)
    """

    batches: int
    seconds_per_byte: float | None
    seconds_per_unit: float
    memory_per_byte: float | None
    base_memory: int

    def seconds(self, size: int, units: int) -> float:
        """The estimated seconds of a batch of ``size`` bytes in ``units`` units."""
        if self.seconds_per_byte is not None and size:
            return size * self.seconds_per_byte
        return units * self.seconds_per_unit

    def memory(self, size: int) -> int | None:
        """The estimated peak memory a batch of ``size`` bytes adds to a worker, if known."""
        if self.memory_per_byte is None:
            return None
        return max(self.base_memory, math.ceil(size * self.memory_per_byte))


def cost_from_history(rows: Sequence[Mapping[str, Any]]) -> Cost | None:
    """A ``Cost`` from ledger rows (``Ledger.history``), or None without any."""
    rows = [r for r in rows if r.get("duration") is not None]
    if not rows:
        return None
    units = sum(int(r.get("units") or 0) for r in rows)
    seconds = sum(float(r["duration"]) for r in rows)
    sized = [r for r in rows if r.get("bytes")]
    per_byte = (
        sum(float(r["duration"]) for r in sized) / sum(int(r["bytes"]) for r in sized)
        if sized
        else None
    )
    measured = [r for r in sized if r.get("peak_memory") is not None]
    memory_ratio = max((int(r["peak_memory"]) / int(r["bytes"]) for r in measured), default=None)
    base = max((int(r.get("peak_memory") or 0) for r in rows), default=0)
    return Cost(
        batches=len(rows),
        seconds_per_byte=per_byte,
        seconds_per_unit=seconds / max(1, units),
        memory_per_byte=memory_ratio,
        base_memory=base,
    )
