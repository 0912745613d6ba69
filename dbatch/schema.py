"""Declared table schemas: column types plus row constraints, checked row by row."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from .context import BatchContext
from .errors import JobSpecError

__all__ = ["Column", "Schema", "parse_type"]

_ENCODER = json.JSONEncoder(default=str)


def row_json(row: Mapping[str, Any]) -> str:
    """A row as the JSON text the quarantine keeps as its raw form (other values as ``str``)."""
    return _ENCODER.encode(row)


#: Turns line (or row) numbers of a file into the raw text of those rows.
RawText = Callable[[list], list]

_ALIASES = {
    "int": "int64",
    "integer": "int64",
    "float": "float64",
    "double": "float64",
    "str": "string",
    "text": "string",
    "boolean": "bool",
    "date": "date32",
    "timestamp": "timestamp[us]",
    "datetime": "timestamp[us]",
}


def parse_type(name: str | pa.DataType, *, key: str = "type") -> pa.DataType:
    """``'int64'``, ``'float'``, ``'timestamp[s]'``, ``'date'`` ... -> a pyarrow type."""
    if isinstance(name, pa.DataType):
        return name
    alias = _ALIASES.get(str(name).strip().lower(), str(name).strip())
    try:
        return pa.type_for_alias(alias)
    except (ValueError, KeyError):
        raise JobSpecError(
            f"unknown column type {name!r}; use one of int64, int32, float64, string, bool, "
            "date, timestamp, timestamp[s], timestamp[ms]",
            key=key,
        ) from None


@dataclass(frozen=True)
class Column:
    name: str
    type: pa.DataType
    not_null: bool = False
    min: float | None = None
    max: float | None = None
    allowed: tuple[Any, ...] | None = None
    unique: bool = False


_COLUMN_KEYS = {"type", "not_null", "min", "max", "allowed", "unique"}


@dataclass(frozen=True)
class Schema:
    """Column types and constraints, as a job file declares them.

    ``Schema.from_mapping({"amount": "float64", "id": {"type": "string", "unique": True}})``
    """

    columns: tuple[Column, ...] = field(default_factory=tuple)

    @classmethod
    def from_mapping(cls, spec: Mapping[str, Any] | Schema | None) -> Schema | None:
        if spec is None or isinstance(spec, Schema):
            return spec
        if not isinstance(spec, Mapping):
            raise JobSpecError(
                "a schema is a mapping of column name to a type or to "
                "{type, not_null, min, max, allowed, unique}",
                key="schema",
            )
        cols = []
        for name, value in spec.items():
            if isinstance(value, (str, pa.DataType)):
                cols.append(Column(str(name), parse_type(value, key=f"schema.{name}")))
                continue
            if not isinstance(value, Mapping) or "type" not in value:
                raise JobSpecError(
                    "expected a type name or a mapping with a 'type'", key=f"schema.{name}"
                )
            unknown = set(value) - _COLUMN_KEYS
            if unknown:
                raise JobSpecError(
                    f"unknown key(s) {sorted(unknown)}; allowed: {sorted(_COLUMN_KEYS)}",
                    key=f"schema.{name}",
                )
            for flag in ("not_null", "unique"):
                if not isinstance(value.get(flag, False), bool):
                    raise JobSpecError(
                        f"expected true or false, got {value[flag]!r}", key=f"schema.{name}.{flag}"
                    )
            allowed = value.get("allowed")
            if allowed is not None and not isinstance(allowed, (list, tuple)):
                raise JobSpecError(
                    f"expected a list of values such as [USD, EUR], got {allowed!r}",
                    key=f"schema.{name}.allowed",
                )
            cols.append(
                Column(
                    str(name),
                    parse_type(value["type"], key=f"schema.{name}.type"),
                    not_null=value.get("not_null", False),
                    min=value.get("min"),
                    max=value.get("max"),
                    allowed=tuple(allowed) if allowed is not None else None,
                    unique=value.get("unique", False),
                )
            )
        return cls(tuple(cols))

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    def arrow(self) -> pa.Schema:
        return pa.schema([(c.name, c.type) for c in self.columns])

    def token(self) -> list[Any]:
        return [
            (c.name, str(c.type), c.not_null, c.min, c.max, c.allowed, c.unique)
            for c in self.columns
        ]

    # -- row-level enforcement ------------------------------------------------

    def cast_strings(
        self, table: pa.Table, ctx: BatchContext, source: str, raw_of: RawText, lines: pa.Array
    ) -> tuple[pa.Table, pa.Array]:
        """Cast string columns to their declared types; rows that do not parse are quarantined.

        ``lines`` runs alongside ``table`` (the line or row number of each row in its
        file) and ``raw_of`` turns line numbers into the rows' raw text, so a
        quarantined row keeps both.
        """
        bad = pa.array([False] * table.num_rows) if table.num_rows else pa.array([], pa.bool_())
        reasons: dict[int, str] = {}
        casted = {}
        for col in self.columns:
            arr = table.column(col.name).combine_chunks()
            if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
                casted[col.name] = arr
                continue
            try:
                casted[col.name] = _cast(arr, col.type)
                continue
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                pass
            ok, values = _cast_rowwise(arr, col.type)
            casted[col.name] = values
            for i in pc.indices_nonzero(pc.invert(ok)).to_pylist():
                reasons.setdefault(
                    i,
                    f"column '{col.name}': value {arr[i].as_py()!r} is not a valid {col.type}",
                )
            bad = pc.or_(bad, pc.invert(ok))
        out = pa.table(casted)
        if reasons:
            idx = sorted(reasons)
            where = lines.take(idx).to_pylist()
            ctx.quarantine_rows(source, "type", [reasons[i] for i in idx], raw_of(where), where)
            keep = pc.invert(bad)
            out, lines = out.filter(keep), lines.filter(keep)
        return out, lines

    def check_constraints(
        self, table: pa.Table, ctx: BatchContext, source: str, raw_of: RawText, lines: pa.Array
    ) -> pa.Table:
        """Quarantine rows that break not_null, min/max, allowed or unique.

        Each row is quarantined once, with the kind of its first broken rule
        (``not_null``, ``range``, ``allowed``, ``unique``). ``unique`` holds within
        one call, that is within one file.
        """
        if table.num_rows == 0:
            return table
        reasons: dict[int, tuple[str, str]] = {}
        for col in self.columns:
            arr = table.column(col.name)
            checks = []
            if col.not_null:
                checks.append((pc.is_null(arr), f"column '{col.name}' is null", "not_null"))
            if col.min is not None:
                checks.append(
                    (
                        pc.fill_null(pc.less(arr, col.min), False),
                        f"column '{col.name}' < {col.min}",
                        "range",
                    )
                )
            if col.max is not None:
                checks.append(
                    (
                        pc.fill_null(pc.greater(arr, col.max), False),
                        f"column '{col.name}' > {col.max}",
                        "range",
                    )
                )
            if col.allowed is not None:
                inside = pc.is_in(arr, value_set=pa.array(list(col.allowed), type=arr.type))
                checks.append(
                    (
                        pc.and_(pc.invert(inside), pc.is_valid(arr)),
                        f"column '{col.name}' not in {list(col.allowed)}",
                        "allowed",
                    )
                )
            if col.unique:
                checks.append(
                    (_duplicated(arr), f"column '{col.name}' repeats an earlier value", "unique")
                )
            for mask, why, kind in checks:
                hits = pc.indices_nonzero(mask)
                if len(hits) == 0:
                    continue
                values = arr.take(hits).to_pylist()
                for i, value in zip(hits.to_pylist(), values, strict=True):
                    reasons.setdefault(i, (kind, why + f" (value {value!r})"))
        if not reasons:
            return table
        import numpy as np

        idx = sorted(reasons)
        where = lines.take(idx).to_pylist()
        raw = raw_of(where)
        for kind in dict.fromkeys(reasons[i][0] for i in idx):
            mine = [j for j, i in enumerate(idx) if reasons[i][0] == kind]
            ctx.quarantine_rows(
                source,
                kind,
                [reasons[idx[j]][1] for j in mine],
                [raw[j] for j in mine],
                [where[j] for j in mine],
            )
        keep = np.ones(table.num_rows, dtype=bool)
        keep[idx] = False
        return table.filter(pa.array(keep))


def _cast(arr: pa.Array, to: pa.DataType) -> pa.Array:
    if pa.types.is_string(arr.type) and (pa.types.is_integer(to) or pa.types.is_floating(to)):
        arr = pc.utf8_trim_whitespace(arr)
        # An empty field is a missing value, not a parse error.
        arr = pc.if_else(pc.equal(arr, ""), pa.scalar(None, arr.type), arr)
    if pa.types.is_string(arr.type) and pa.types.is_boolean(to):
        low = pc.utf8_lower(pc.utf8_trim_whitespace(arr))
        low = pc.if_else(pc.equal(low, ""), pa.scalar(None, low.type), low)
        truthy = pc.is_in(low, value_set=pa.array(["true", "1", "t", "yes"]))
        falsy = pc.is_in(low, value_set=pa.array(["false", "0", "f", "no"]))
        if not pc.all(pc.or_(pc.or_(truthy, falsy), pc.is_null(low))).as_py():
            raise pa.ArrowInvalid("not a boolean")
        return pc.if_else(pc.is_null(low), pa.scalar(None, pa.bool_()), truthy)
    return pc.cast(arr, to, safe=True)


_NUMBER = {  # text a number cast surely accepts (after trimming); anything else is tried alone
    "int": r"^[+-]?[0-9]+$",
    "float": r"^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?$",
}


def _cast_rowwise(arr: pa.Array, to: pa.DataType) -> tuple[pa.Array, pa.Array]:
    """Cast value by value where needed: ``(ok mask, values with nulls where not ok)``.

    Numbers: values that look like numbers are cast at once and only the others
    one by one. Other types, or if that fails: chunks of 4096, split in halves
    down to single values where a chunk fails.
    """
    quick = _cast_plausible(arr, to)
    if quick is not None:
        return quick
    import numpy as np

    oks = np.ones(len(arr), dtype=bool)
    values: list[pa.Array] = []

    def cast(start: int, length: int) -> None:
        try:
            values.append(_cast(arr.slice(start, length), to))
            return
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            pass
        if length == 1:
            values.append(pa.nulls(1, to))
            oks[start] = False
            return
        half = length // 2
        cast(start, half)
        cast(start + half, length - half)

    step = 4096
    for start in range(0, len(arr), step):
        cast(start, min(step, len(arr) - start))
    merged = pa.concat_arrays(values) if values else pa.array([], to)
    return pa.array(oks, pa.bool_()), merged


def _cast_plausible(arr: pa.Array, to: pa.DataType) -> tuple[pa.Array, pa.Array] | None:
    if not pa.types.is_string(arr.type):
        return None
    if pa.types.is_integer(to):
        pattern = _NUMBER["int"]
    elif pa.types.is_floating(to):
        pattern = _NUMBER["float"]
    else:
        return None
    import numpy as np

    trimmed = pc.utf8_trim_whitespace(arr)
    plausible = pc.fill_null(
        pc.or_(pc.match_substring_regex(trimmed, pattern), pc.equal(trimmed, "")), True
    )
    try:
        values = _cast(pc.if_else(plausible, arr, pa.scalar(None, arr.type)), to)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None  # e.g. an integer out of range: the slow path finds it
    oks = plausible.to_numpy(zero_copy_only=False).copy()
    fixed: list[pa.Array] = []
    for i in np.flatnonzero(~oks):
        try:
            fixed.append(_cast(arr.slice(int(i), 1), to))
            oks[i] = True
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            pass
    if fixed:
        mask = np.zeros(len(arr), dtype=bool)
        repaired = [i for i in np.flatnonzero(~plausible.to_numpy(zero_copy_only=False)) if oks[i]]
        mask[repaired] = True
        values = pc.replace_with_mask(values, pa.array(mask), pa.concat_arrays(fixed))
    return pa.array(oks, pa.bool_()), values


def _duplicated(arr: pa.ChunkedArray | pa.Array) -> pa.Array:
    """True for each value already seen earlier in the array (nulls never count)."""
    import numpy as np
    import pandas as pd

    values = pd.Series(arr.to_pandas())
    dup = values.duplicated(keep="first").to_numpy() & values.notna().to_numpy()
    return pa.array(np.asarray(dup, dtype=bool))
