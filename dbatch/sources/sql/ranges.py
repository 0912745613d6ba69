"""A split column cut into units on a fixed grid: key ranges or time windows, and their filters."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pandas as pd
import sqlalchemy as sa

from ...core import Unit
from ...errors import JobSpecError
from ...windows import frequency, window_start

__all__ = ["Grid", "plan_units", "unit_condition"]


@dataclass(frozen=True)
class Grid:
    """How a split column is cut: ranges of ``chunk`` keys, or windows of ``window`` when timed.

    Examples
    --------
    >>> grid = Grid("id", timed=False, chunk=10, window="1D", row_bytes=100, incremental=False)
    >>> [u.key for u in plan_units(grid, 3, 25, n_all=23, n_key=23, since=None)]
    ['id:[0,10)', 'id:[10,20)', 'id:[20,30)']
    """

    column: str
    timed: bool
    chunk: int
    window: str
    row_bytes: int
    incremental: bool


def plan_units(grid: Grid, lo: Any, hi: Any, *, n_all: Any, n_key: Any, since: Any) -> list[Unit]:
    """Units from ``lo`` (or past the watermark ``since``) to ``hi``, plus one for NULL keys.

    ``n_all`` counts all rows and ``n_key`` those with a key, for the units' sizes;
    an incremental listing leaves the rows without a key out.
    """
    if lo is None:
        units = []
    elif grid.timed:
        units = _time_units(grid, lo, hi, n_key, since)
    else:
        units = _key_units(grid, lo, hi, n_key, since)
    nulls = int(n_all or 0) - int(n_key or 0)
    if nulls and not grid.incremental:
        units.append(
            Unit(
                key=f"{grid.column}:NULL",
                size=nulls * grid.row_bytes,
                identity=(("nulls", nulls),),
            )
        )
    return units


def unit_condition(col: Any, unit: Unit, *, timed: bool) -> Any:
    """The WHERE clause that selects a unit's rows of ``col``."""
    ident = dict(unit.identity)
    if "nulls" in ident:
        return col.is_(None)
    lo, hi = ident["lo"], ident["hi"]
    if timed:
        lo, hi = _bound(lo), _bound(hi)
    low = col >= lo if ident["lo_op"] == ">=" else col > lo
    high = col < hi if ident["hi_op"] == "<" else col <= hi
    return sa.and_(low, high)


def _key_units(grid: Grid, lo: Any, hi: Any, n: int, since: Any) -> list[Unit]:
    lo, hi = _as_int(lo, grid.column), _as_int(hi, grid.column)
    density = n / (hi - lo + 1)
    start = lo
    if since is not None:
        start = max(lo, _as_int(since, grid.column) + 1)
    if start > hi:
        return []
    units = []
    chunk = grid.chunk
    cell = (start // chunk) * chunk
    while cell <= hi:
        a, b = max(cell, start), min(cell + chunk, hi + 1)
        name = f"[{a if grid.incremental else cell},{cell + chunk})"
        units.append(
            Unit(
                key=f"{grid.column}:{name}",
                size=max(1, math.ceil((b - a) * density)) * grid.row_bytes,
                identity=(("lo", a), ("lo_op", ">="), ("hi", b), ("hi_op", "<")),
            )
        )
        cell += chunk
    return units


def _time_units(grid: Grid, lo: Any, hi: Any, n: int, since: Any) -> list[Unit]:
    offset = frequency(grid.window, key="source.window")
    first, last = _timestamp(lo, grid.column), _timestamp(hi, grid.column)
    start, lo_op = first, ">="
    if since is not None:
        mark = _timestamp(since, grid.column)
        if mark >= last:
            return []
        if mark >= first:
            start, lo_op = mark, ">"
    span = max((last - first).total_seconds(), 1e-6)
    units = []
    cell = window_start(start, offset)
    while cell <= last:
        end = cell + offset
        a, a_op = (start, lo_op) if start >= cell else (cell, ">=")
        b, b_op = (end, "<") if end <= last else (last, "<=")
        name = f"[{cell.isoformat()},{end.isoformat()})"
        if grid.incremental and a_op == ">":
            name = f"({a.isoformat()},{end.isoformat()})"
        share = (b - a).total_seconds() / span
        units.append(
            Unit(
                key=f"{grid.column}:{name}",
                size=max(1, math.ceil(n * share)) * grid.row_bytes,
                time=_epoch(cell),
                identity=(
                    ("lo", a.isoformat()),
                    ("lo_op", a_op),
                    ("hi", b.isoformat()),
                    ("hi_op", b_op),
                ),
            )
        )
        cell = end
    return units


def _as_int(value: Any, column: str) -> int:
    try:
        number = int(value)
        if number == value or isinstance(value, str) and str(number) == value.strip():
            return number
    except (TypeError, ValueError):
        pass
    raise JobSpecError(
        f"key column {column!r} holds {value!r}, not whole numbers; use an integer column as "
        "key, or time_key for a timestamp column",
        key="source.key",
    )


def _timestamp(value: Any, column: str) -> pd.Timestamp:
    try:
        ts = pd.Timestamp(value)
    except (TypeError, ValueError):
        ts = None
    if ts is None or ts is pd.NaT or isinstance(value, int | float):
        raise JobSpecError(
            f"time_key column {column!r} holds {value!r}, not timestamps; use a timestamp "
            "column, or key for an integer column",
            key="source.time_key",
        )
    return ts.tz_convert(UTC) if ts.tzinfo else ts


def _bound(iso: str) -> datetime:
    return pd.Timestamp(iso).to_pydatetime()


def _epoch(ts: pd.Timestamp) -> float:
    return ts.timestamp() if ts.tzinfo else ts.tz_localize(UTC).timestamp()
