"""Declared table schemas: column types plus row rules, checked in Arrow or inside a query."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import pyarrow as pa
import pyarrow.compute as pc

from ..errors import JobSpecError
from .casting import cast_column, cast_rowwise, is_text, nulls_for, with_nulls
from .rules import AtLeast, AtMost, ColumnStats, NotNull, OneOf, Rule, Unique
from .types import parse_type, type_name

__all__ = [
    "Column",
    "Schema",
    "parse_type",
    "row_json",
    "RawText",
    "DUCKDB_TYPES",
    "QuarantinesRows",
    "null_markers",
]

_ENCODER = json.JSONEncoder(default=str)


def row_json(row: Mapping[str, Any]) -> str:
    """A row as the JSON text the quarantine keeps as its raw form (other values as ``str``)."""
    return _ENCODER.encode(row)


#: Turns line (or row) numbers of a file into the raw text of those rows.
RawText = Callable[[list], list]


@dataclass(frozen=True)
class Column:
    """One declared column: its type, its rules, and the text that reads as null in it."""

    name: str
    type: pa.DataType
    not_null: bool = False
    min: float | None = None
    max: float | None = None
    allowed: tuple[Any, ...] | None = None
    unique: bool = False
    null_values: tuple[str, ...] | None = None

    def rules(self) -> list[Rule]:
        """The column's rules, in the order a broken one is reported."""
        found: list[Rule] = []
        if self.not_null:
            found.append(NotNull(self.name, self.type))
        if self.min is not None:
            found.append(AtLeast(self.name, self.type, self.min))
        if self.max is not None:
            found.append(AtMost(self.name, self.type, self.max))
        if self.allowed is not None:
            found.append(OneOf(self.name, self.type, self.allowed))
        if self.unique:
            found.append(Unique(self.name, self.type))
        return found

    @property
    def duckdb_type(self) -> str | None:
        """The DuckDB type that reads back as exactly this Arrow type, if there is one."""
        if pa.types.is_decimal128(self.type):
            return f"DECIMAL({self.type.precision}, {self.type.scale})"
        return DUCKDB_TYPES.get(self.type)


#: Declared types DuckDB reads back as exactly the same Arrow type.
DUCKDB_TYPES: dict[pa.DataType, str] = {
    pa.int8(): "TINYINT",
    pa.int16(): "SMALLINT",
    pa.int32(): "INTEGER",
    pa.int64(): "BIGINT",
    pa.float32(): "FLOAT",
    pa.float64(): "DOUBLE",
    pa.string(): "VARCHAR",
    pa.bool_(): "BOOLEAN",
    pa.date32(): "DATE",
    pa.timestamp("us"): "TIMESTAMP",
    pa.uint8(): "UTINYINT",
    pa.uint16(): "USMALLINT",
    pa.uint32(): "UINTEGER",
    pa.uint64(): "UBIGINT",
    pa.time64("us"): "TIME",
}


class QuarantinesRows(Protocol):
    """Where rows that break a rule go: a batch's context (or a stand-in that records them)."""

    mode: Any

    def quarantine_rows(
        self,
        source: str,
        kind: str,
        reasons: Sequence[str] | str,
        raw: Sequence[str | None],
        lines: Sequence[int | None] | None = None,
    ) -> None: ...


_FLAG = {"type": "boolean", "default": False}
#: One column of a job file's ``schema:`` in its long form (``_column`` reads it).
COLUMN_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "type": {"type": "string", "description": "A pyarrow type name or an alias."},
        "not_null": dict(_FLAG, description="A missing value makes the row bad."),
        "min": {"description": "The smallest allowed value, inclusive."},
        "max": {"description": "The largest allowed value, inclusive."},
        "allowed": {"type": "array", "description": "The allowed values."},
        "unique": dict(_FLAG, description="A value repeated in the same file makes a bad row."),
        "null_values": {
            "type": "array",
            "items": {"type": "string"},
            "description": "Text that reads as a missing value in this column.",
        },
    },
    "required": ["type"],
    "additionalProperties": False,
}
_COLUMN_KEYS = set(COLUMN_SCHEMA["properties"])


@dataclass(frozen=True)
class Schema:
    """Column types and constraints, as a job file declares them.

    ``Schema.from_mapping({"amount": "float64", "id": {"type": "string", "unique": True}})``
    """

    columns: tuple[Column, ...] = field(default_factory=tuple)
    #: The source's null markers, for columns that declare none of their own.
    null_values: tuple[str, ...] | None = None

    @classmethod
    def job_schema(cls) -> dict[str, Any]:
        """``schema:`` in a job file: column -> a type name, or a type and its rules."""
        name = {"type": "string", "description": "A pyarrow type name or an alias."}
        return {
            "type": "object",
            "description": "Declared columns: column -> a type name, or a type and its rules.",
            "additionalProperties": {"anyOf": [name, COLUMN_SCHEMA]},
        }

    @classmethod
    def from_mapping(
        cls, spec: Mapping[str, Any] | Schema | None, null_values: Sequence[str] | None = None
    ) -> Schema | None:
        """A schema from a job file's mapping (or a Schema, or None)."""
        markers = null_markers(null_values, key="null_values")
        if spec is None:
            return None
        if isinstance(spec, Schema):
            return spec if markers is None else dataclasses.replace(spec, null_values=markers)
        if not isinstance(spec, Mapping):
            raise JobSpecError(
                "a schema is a mapping of column name to a type or to "
                "{type, not_null, min, max, allowed, unique, null_values}",
                key="schema",
            )
        return cls(tuple(_column(str(n), v) for n, v in spec.items()), null_values=markers)

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    def arrow(self) -> pa.Schema:
        return pa.schema([(c.name, c.type) for c in self.columns])

    def token(self) -> list[Any]:
        # Markers only when declared: a schema without them keeps the token it had.
        return [
            (c.name, str(c.type), c.not_null, c.min, c.max, c.allowed, c.unique)
            + ((c.null_values,) if c.null_values is not None else ())
            for c in self.columns
        ] + ([("null_values", self.null_values)] if self.null_values is not None else [])

    def markers(self, col: Column) -> tuple[str, ...]:
        """The text that reads as null in ``col`` (see ``nulls_for``)."""
        return nulls_for(col.type, col.null_values, self.null_values)

    # -- the rules in SQL and in file statistics ---------------------------------

    def sql_predicates(self, no_nulls: frozenset[str] = frozenset()) -> list[str] | None:
        """Conditions that hold exactly for the rows ``check_constraints`` keeps, or None.

        None when a column's type or a rule has no exact DuckDB form. ``no_nulls``:
        columns known to hold no null, whose null tests are left out.
        """
        out = []
        for col in self.columns:
            if col.duckdb_type is None:
                return None
            for rule in col.rules():
                condition = rule.sql(nullable=col.name not in no_nulls)
                if condition is None:
                    return None
                if condition:
                    out.append(condition)
        return out

    def proven_clean(self, stats: Mapping[str, list[ColumnStats | None]]) -> bool:
        """Whether the statistics of every row group rule out a row breaking a rule.

        ``stats``: column -> its statistics in each row group (None where a group has none).
        """
        for col in self.columns:
            rules = col.rules()
            if not rules:
                continue
            groups = stats.get(col.name)
            if groups is None:
                return False
            for rule in rules:
                if not all(g is not None and rule.proven(g) for g in groups):
                    return False
        return True

    # -- row-level enforcement ------------------------------------------------

    def cast_strings(
        self, table: pa.Table, ctx: QuarantinesRows, source: str, raw_of: RawText, lines: pa.Array
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
            arr = with_nulls(table.column(col.name).combine_chunks(), self.markers(col))
            if is_text(col.type):
                casted[col.name] = arr if col.type == arr.type else arr.cast(col.type)
                continue
            try:
                casted[col.name] = cast_column(arr, col.type)
                continue
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                pass
            ok, values = cast_rowwise(arr, col.type)
            casted[col.name] = values
            for i in pc.indices_nonzero(pc.invert(ok)).to_pylist():
                reasons.setdefault(
                    i,
                    f"column '{col.name}': value {arr[i].as_py()!r} is not a valid "
                    f"{type_name(col.type)}",
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
        self, table: pa.Table, ctx: QuarantinesRows, source: str, raw_of: RawText, lines: pa.Array
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
            for rule in col.rules():
                hits = pc.indices_nonzero(rule.broken(arr))
                if len(hits) == 0:
                    continue
                values = arr.take(hits).to_pylist()
                why = rule.reason()
                for i, value in zip(hits.to_pylist(), values, strict=True):
                    reasons.setdefault(i, (rule.kind, why + f" (value {value!r})"))
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


def null_markers(value: Any, *, key: str) -> tuple[str, ...] | None:
    """``null_values`` as given in a job file: a list of text markers (or None)."""
    if value is None:
        return None
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise JobSpecError(f'expected a list of text such as ["", NA, "-"], got {value!r}', key=key)
    if not all(isinstance(v, str) for v in value):
        raise JobSpecError(
            f"every null marker is text (quote numbers: '-999'), got {list(value)!r}", key=key
        )
    return tuple(value)


def _column(name: str, value: Any) -> Column:
    """One column of a schema mapping: a type name, or a mapping with a type and rules."""
    if isinstance(value, (str, pa.DataType)):
        return Column(name, parse_type(value, key=f"schema.{name}"))
    if not isinstance(value, Mapping) or "type" not in value:
        raise JobSpecError("expected a type name or a mapping with a 'type'", key=f"schema.{name}")
    unknown = set(value) - _COLUMN_KEYS
    if unknown:
        from ..registry import did_you_mean

        raise JobSpecError(
            f"unknown key(s) {sorted(unknown)}{did_you_mean(sorted(unknown), _COLUMN_KEYS)}; "
            f"allowed: {sorted(_COLUMN_KEYS)}",
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
    return Column(
        name,
        parse_type(value["type"], key=f"schema.{name}.type"),
        not_null=value.get("not_null", False),
        min=value.get("min"),
        max=value.get("max"),
        allowed=tuple(allowed) if allowed is not None else None,
        unique=value.get("unique", False),
        null_values=null_markers(value.get("null_values"), key=f"schema.{name}.null_values"),
    )
