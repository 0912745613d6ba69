"""Local Parquet files read by DuckDB inside the batch's query, with the same checks as ``load``."""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from ..context import BatchContext
from ..core import Batch
from ..engine import query
from ..schema import row_json

if TYPE_CHECKING:
    import pyarrow.parquet as pq

    from ..schema import Column, Schema
    from .files import Files

__all__ = ["Scan", "parquet_scan"]

# Declared types DuckDB reads back as exactly the same Arrow type.
_DUCK = {
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
}


@dataclass(frozen=True)
class Scan:
    """A batch as a DuckDB query over its files: the good rows, in the declared columns.

    The source has already counted every row read and quarantined the rows
    that break a constraint; ``rows`` is how many rows ``sql`` returns.
    """

    sql: str
    columns: tuple[str, ...]
    rows: int


def parquet_scan(source: Files, batch: Batch, ctx: BatchContext) -> Scan | None:
    """The batch as a ``Scan``, or None when only ``Files.load`` gives the exact result.

    Taken only when every file is a local Parquet file whose footer reads and
    whose columns have the declared types (or widen exactly to them), and every
    constraint has an exact SQL form. Rows breaking a constraint are found by a
    query and put through ``Schema.check_constraints`` as in ``load``, so the
    reasons and raw text are the same. Anything else - a file that cannot be
    read, schema drift, ``unique``, ``fail_fast`` - goes through ``load``.
    """
    schema = source.schema
    if schema is None or source.source_column or ctx.mode == "fail_fast":
        return None
    predicates = _predicates(schema)
    if predicates is None:
        return None
    files = []
    for unit in batch.units:
        found = _footer(source, unit.key, schema)
        if found is None:
            return None
        files.append(found)
    total = sum(f.rows for f in files)
    quarantined = 0
    if predicates and ctx.mode == "drop":
        # Dropped rows are only counted: no need to read them, let alone all their columns.
        quarantined = _bad_count(schema, files)
        ctx.read_rows(total)
        ctx.drop_rows(quarantined)
    elif predicates:
        calls = _bad_rows(schema, batch, files)
        if calls is None:
            return None
        ctx.read_rows(total)
        for call in calls:
            ctx.quarantine_rows(*call)
            quarantined += len(call[3])
    else:
        ctx.read_rows(total)
    sql = " UNION ALL ".join(
        f"SELECT * FROM ({_select(schema, f.path, f.casts)}) AS f{i} WHERE {_ok(schema, f)}"
        for i, f in enumerate(files)
    )
    return Scan(sql=sql, columns=tuple(schema.names), rows=total - quarantined)


@dataclass(frozen=True)
class _File:
    path: str
    casts: dict[str, str]  # column -> DuckDB type it is widened to
    rows: int
    clean: bool  # the file's statistics prove that no row breaks a constraint
    no_nulls: frozenset[str]  # columns the statistics prove hold no null


def _footer(source: Files, key: str, schema: Schema) -> _File | None:
    """What the footer says of a local Parquet file that matches the schema, else None."""
    import pyarrow.parquet as pq

    if "://" in key and not key.startswith("file://"):
        return None
    path = key.removeprefix("file://")
    if source._format_of(key) != "parquet" or not path.lower().endswith((".parquet", ".pq")):
        return None
    try:
        with pq.ParquetFile(path) as meta:
            found = meta.schema_arrow
            metadata = meta.metadata
    except Exception:  # noqa: BLE001 - load() quarantines it with the right reason
        return None
    casts: dict[str, str] = {}
    for col in schema.columns:
        if found.names.count(col.name) != 1 or col.type not in _DUCK:
            return None
        have = found.field(col.name).type
        if have == col.type:
            continue
        if not _exact_widening(have, col.type):
            return None
        casts[col.name] = _DUCK[col.type]
    return _File(
        path, casts, metadata.num_rows, _clean(metadata, schema), _no_nulls(metadata, schema)
    )


def _clean(metadata: pq.FileMetaData, schema: Schema) -> bool:
    """Whether every row group's statistics rule out a row breaking a constraint."""
    for col in schema.columns:
        if not (col.not_null or col.min is not None or col.max is not None or col.allowed):
            continue
        stats = _statistics(metadata, col.name)
        if stats is None or not all(s is not None and _holds(s, col) for s in stats):
            return False
    return True


def _no_nulls(metadata: pq.FileMetaData, schema: Schema) -> frozenset[str]:
    """The schema's columns whose every row group's statistics count no null."""
    found = set()
    for col in schema.columns:
        stats = _statistics(metadata, col.name)
        if stats is not None and all(
            s is not None and s.has_null_count and not s.null_count for s in stats
        ):
            found.add(col.name)
    return frozenset(found)


def _statistics(metadata: pq.FileMetaData, name: str) -> list[Any] | None:
    """The statistics of column ``name`` in each row group (None where a group has none);
    None if the file has no single column of that name."""
    names = [metadata.schema.column(i).path for i in range(metadata.num_columns)]
    if names.count(name) != 1:
        return None
    index = names.index(name)
    return [metadata.row_group(g).column(index).statistics for g in range(metadata.num_row_groups)]


def _ok(schema: Schema, file: _File) -> str:
    """SQL true for the rows of ``file`` that break no constraint.

    What the file's statistics prove is left out: nothing at all for a clean
    file, and the null tests of columns without nulls, which also lets DuckDB
    push an ``allowed`` check into its Parquet reader (a quarter less time for
    the batch's main query in the reference benchmark).
    """
    if file.clean:
        return "TRUE"
    predicates = _predicates(schema, file.no_nulls)
    assert predicates is not None  # parquet_scan checked that the schema has a SQL form
    return " AND ".join(predicates) or "TRUE"


def _holds(stats: Any, col: Column) -> bool:
    if col.not_null and (not stats.has_null_count or stats.null_count > 0):
        return False
    if col.min is None and col.max is None and col.allowed is None:
        return True
    if not stats.has_min_max or stats.num_values == 0:
        return False
    low, high = stats.min, stats.max
    try:
        if col.min is not None and not low >= col.min:
            return False
        if col.max is not None and not high <= col.max:
            return False
    except TypeError:  # statistics in another type than the bound
        return False
    return col.allowed is None or (low == high and low in col.allowed)


def _exact_widening(have: pa.DataType, want: pa.DataType) -> bool:
    """Conversions DuckDB and Arrow both make without loss or error."""
    if pa.types.is_integer(have) and pa.types.is_integer(want):
        same_sign = pa.types.is_signed_integer(have) == pa.types.is_signed_integer(want)
        return same_sign and want.bit_width >= have.bit_width
    if pa.types.is_floating(have) and pa.types.is_floating(want):
        return want.bit_width >= have.bit_width
    if pa.types.is_string(want):
        return pa.types.is_large_string(have) or (
            pa.types.is_dictionary(have) and pa.types.is_string(have.value_type)
        )
    return False


def _select(schema: Schema, path: str, casts: dict[str, str], extra: str = "") -> str:
    cols = ", ".join(
        f"CAST({_name(c.name)} AS {casts[c.name]}) AS {_name(c.name)}"
        if c.name in casts
        else _name(c.name)
        for c in schema.columns
    )
    options = ", file_row_number = true" if extra else ""
    return f"SELECT {cols}{extra} FROM read_parquet({_literal(path)}{options})"


def _bad_count(schema: Schema, files: list[_File]) -> int:
    """How many rows of the files break a constraint (files proven clean are not read)."""
    counts = [
        f"SELECT count_if(NOT ({_ok(schema, f)})) AS n "
        f"FROM ({_select(schema, f.path, f.casts)}) AS f{i}"
        for i, f in enumerate(files)
        if not f.clean
    ]
    if not counts:
        return 0
    found = query(f"SELECT CAST(sum(n) AS BIGINT) AS n FROM ({' UNION ALL '.join(counts)})", {})
    return int(found.column("n")[0].as_py() or 0)


def _bad_rows(schema: Schema, batch: Batch, files: list[_File]) -> list[tuple] | None:
    """The quarantine calls ``load`` would make, file by file; None if the checks disagree.

    Files whose statistics prove them clean are not read.
    """
    extra = ", {} AS __unit, file_row_number AS __row"
    selects = [
        f"SELECT * FROM ({_select(schema, f.path, f.casts, extra.format(i))}) AS f{i} "
        f"WHERE NOT ({_ok(schema, f)})"
        for i, f in enumerate(files)
        if not f.clean
    ]
    if not selects:
        return []
    bad = query(" UNION ALL ".join(selects), {})
    if bad.num_rows == 0:
        return []
    bad = bad.sort_by([("__unit", "ascending"), ("__row", "ascending")])
    units = bad.column("__unit").to_pylist()  # sorted; to_numpy() would import pandas
    calls: list[tuple] = []
    recorder = _Recorder(calls)
    for i, unit in enumerate(batch.units):
        lo, hi = bisect.bisect_left(units, i), bisect.bisect_left(units, i + 1)
        if lo == hi:
            continue
        part = bad.slice(lo, hi - lo)
        rows = part.select(schema.names)
        numbers = part.column("__row").to_pylist()
        text = {n: row_json(r) for n, r in zip(numbers, rows.to_pylist(), strict=True)}
        kept = schema.check_constraints(
            rows, recorder, unit.key, lambda ns, t=text: [t.get(n) for n in ns], pa.array(numbers)
        )
        if kept.num_rows:
            return None  # the SQL form and the checks disagree: let load() decide
    return calls


class _Recorder:
    """Stands in for the batch context while bad rows are checked; replayed afterwards."""

    mode = "quarantine"

    def __init__(self, calls: list[tuple]):
        self.calls = calls

    def quarantine_rows(self, source, kind, reasons, raw, lines=None) -> None:
        self.calls.append((source, kind, reasons, raw, lines))


def _predicates(schema: Schema, no_nulls: frozenset[str] = frozenset()) -> list[str] | None:
    """SQL conditions that hold exactly for the rows ``check_constraints`` keeps, or None.

    ``no_nulls``: columns known to hold no null, whose null tests are left out.
    """
    out = []
    for col in schema.columns:
        if col.unique or col.type not in _DUCK:
            return None
        name = _name(col.name)
        floating = pa.types.is_floating(col.type)
        nullable = col.name not in no_nulls
        if col.not_null and nullable:
            out.append(f"{name} IS NOT NULL")
        for bound, op in ((col.min, "<"), (col.max, ">")):
            if bound is None:
                continue
            lit = _bound(bound, col)
            if lit is None:
                return None
            # Arrow never finds NaN beyond a bound; DuckDB sorts NaN above every number.
            nan = f" AND NOT isnan({name})" if floating and op == ">" else ""
            out.append(f"NOT coalesce({name} {op} {lit}{nan}, false)")
        if col.allowed is not None:
            lits = [_allowed(v, col) for v in col.allowed]
            if not lits or any(v is None for v in lits):
                return None
            allowed = f"{name} IN ({', '.join(lits)})"
            out.append(f"({name} IS NULL OR {allowed})" if nullable else allowed)
    return out


def _bound(value: Any, col: Column) -> str | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)) and (
        pa.types.is_integer(col.type) or pa.types.is_floating(col.type)
    ):
        return repr(value) if math.isfinite(value) else None
    if isinstance(value, str) and pa.types.is_string(col.type):
        return _literal(value)
    return None


def _allowed(value: Any, col: Column) -> str | None:
    if pa.types.is_string(col.type) and isinstance(value, str):
        return _literal(value)
    if pa.types.is_integer(col.type) and isinstance(value, int) and not isinstance(value, bool):
        return repr(value)
    if pa.types.is_boolean(col.type) and isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    return None


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _name(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
