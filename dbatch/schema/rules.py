"""Row rules of a declared column, each in three forms: Arrow, SQL and file statistics.

A rule says what breaks it once: ``broken`` finds the rows on Arrow data,
``sql`` is the same test as a DuckDB condition (true for the rows that keep
it, or None where no exact SQL form exists), and ``proven`` tells whether a
file's column statistics rule out any breaking row. Sources that check rows
in Arrow and sources that check them inside a query therefore agree.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from ..engine import quote_literal, quote_name

__all__ = ["Rule", "NotNull", "AtLeast", "AtMost", "OneOf", "Unique", "ColumnStats"]


@dataclass(frozen=True)
class ColumnStats:
    """What a file says of one column of a row group: nulls, smallest and largest value."""

    null_count: int | None
    low: Any = None
    high: Any = None
    values: int = 0
    has_bounds: bool = False


class Rule:
    """A constraint on one column; ``kind`` names it in the quarantine."""

    kind: str = ""

    def __init__(self, column: str, type_: pa.DataType):
        self.column = column
        self.type = type_

    def broken(self, arr: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
        """True for each value that breaks the rule."""
        raise NotImplementedError  # pragma: no cover

    def reason(self) -> str:
        raise NotImplementedError  # pragma: no cover

    def sql(self, nullable: bool = True) -> str | None:
        """A condition true exactly for the rows that keep the rule ("" if all do), or None.

        ``nullable=False``: the column is known to hold no null here.
        """
        return None

    def proven(self, stats: ColumnStats) -> bool:
        """Whether ``stats`` rule out a breaking value in that row group."""
        return False

    @property
    def name(self) -> str:
        return quote_name(self.column)


class NotNull(Rule):
    kind = "not_null"

    def broken(self, arr):
        return pc.is_null(arr)

    def reason(self) -> str:
        return f"column '{self.column}' is null"

    def sql(self, nullable: bool = True) -> str | None:
        return f"{self.name} IS NOT NULL" if nullable else ""

    def proven(self, stats: ColumnStats) -> bool:
        return stats.null_count is not None and stats.null_count == 0


class _Bound(Rule):
    kind = "range"
    op = ""

    def __init__(self, column: str, type_: pa.DataType, bound: Any):
        super().__init__(column, type_)
        self.bound = bound

    def _literal(self) -> str | None:
        value = self.bound
        if isinstance(value, bool):
            return None
        numeric = (
            pa.types.is_integer(self.type)
            or pa.types.is_floating(self.type)
            or pa.types.is_decimal(self.type)
        )
        if isinstance(value, (int, float)) and numeric:
            return repr(value) if math.isfinite(value) else None
        if isinstance(value, str) and pa.types.is_string(self.type):
            return quote_literal(value)
        return None

    def reason(self) -> str:
        return f"column '{self.column}' {self.op} {self.bound}"


class AtLeast(_Bound):
    op = "<"

    def broken(self, arr):
        return pc.fill_null(pc.less(arr, self.bound), False)

    def sql(self, nullable: bool = True) -> str | None:
        lit = self._literal()
        return None if lit is None else f"NOT coalesce({self.name} < {lit}, false)"

    def proven(self, stats: ColumnStats) -> bool:
        if not stats.has_bounds or stats.values == 0:
            return False
        try:
            return bool(stats.low >= self.bound)
        except TypeError:  # statistics in another type than the bound
            return False


class AtMost(_Bound):
    op = ">"

    def broken(self, arr):
        return pc.fill_null(pc.greater(arr, self.bound), False)

    def sql(self, nullable: bool = True) -> str | None:
        lit = self._literal()
        if lit is None:
            return None
        # Arrow never finds NaN beyond a bound; DuckDB sorts NaN above every number.
        nan = f" AND NOT isnan({self.name})" if pa.types.is_floating(self.type) else ""
        return f"NOT coalesce({self.name} > {lit}{nan}, false)"

    def proven(self, stats: ColumnStats) -> bool:
        if not stats.has_bounds or stats.values == 0:
            return False
        try:
            return bool(stats.high <= self.bound)
        except TypeError:
            return False


class OneOf(Rule):
    kind = "allowed"

    def __init__(self, column: str, type_: pa.DataType, allowed: Sequence[Any]):
        super().__init__(column, type_)
        self.allowed = tuple(allowed)

    def broken(self, arr):
        inside = pc.is_in(arr, value_set=pa.array(list(self.allowed), type=arr.type))
        return pc.and_(pc.invert(inside), pc.is_valid(arr))

    def reason(self) -> str:
        return f"column '{self.column}' not in {list(self.allowed)}"

    def _literal(self, value: Any) -> str | None:
        if pa.types.is_string(self.type) and isinstance(value, str):
            return quote_literal(value)
        if (
            pa.types.is_integer(self.type)
            and isinstance(value, int)
            and not isinstance(value, bool)
        ):
            return repr(value)
        if pa.types.is_boolean(self.type) and isinstance(value, bool):
            return "TRUE" if value else "FALSE"
        return None

    def sql(self, nullable: bool = True) -> str | None:
        literals = [self._literal(v) for v in self.allowed]
        if not literals or any(v is None for v in literals):
            return None
        inside = f"{self.name} IN ({', '.join(str(v) for v in literals)})"
        return f"({self.name} IS NULL OR {inside})" if nullable else inside

    def proven(self, stats: ColumnStats) -> bool:
        if not stats.has_bounds or stats.values == 0:
            return False
        return bool(stats.low == stats.high and stats.low in self.allowed)


class Unique(Rule):
    """No value twice within one file (checked in Arrow only: it needs the whole file)."""

    kind = "unique"

    def broken(self, arr):
        import numpy as np
        import pandas as pd

        values = pd.Series(arr.to_pandas())
        dup = values.duplicated(keep="first").to_numpy() & values.notna().to_numpy()
        return pa.array(np.asarray(dup, dtype=bool))

    def reason(self) -> str:
        return f"column '{self.column}' repeats an earlier value"
