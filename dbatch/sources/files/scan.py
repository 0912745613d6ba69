"""Local Parquet files read by DuckDB inside the batch's query, with the same rules as ``load``."""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from ...context import BatchContext
from ...core import BadInputMode, Batch
from ...engine import Relation, query, quote_literal, quote_name
from ...schema import ColumnStats, row_json

if TYPE_CHECKING:
    import pyarrow.parquet as pq

    from ...schema import Schema
    from .source import Files

__all__ = ["scan_obstacle", "parquet_scan", "damaged_file"]


def scan_obstacle(source: Files, mode: BadInputMode | str) -> str | None:
    """None when the batches of ``source`` may be read inside their query; else why not."""
    if source.declared is None:
        return "no declared schema"
    if source.source_column:
        return "source_column is set"
    if mode == BadInputMode.FAIL_FAST:
        return "bad_input is fail_fast (the first bad row must stop the batch)"
    if source.declared.sql_predicates() is None:
        return "a column type or rule has no exact SQL form (unique, say)"
    return None


def parquet_scan(source: Files, batch: Batch, ctx: BatchContext) -> Relation | None:
    """The batch as a relation over its files, or None when ``Files.load`` must read it.

    Decided from the files' footers before a row is read: every file must be a
    local Parquet file whose footer reads and whose columns have the declared
    types (or widen exactly to them). Rows breaking a rule are found by a query
    and put through ``Schema.check_constraints`` as in ``load``, so the reasons and
    raw text are the same. The plan-wide conditions are ``scan_obstacle``'s.
    """
    schema = source.declared
    assert schema is not None  # scan_obstacle said so when the plan was made
    predicates = schema.sql_predicates()
    assert predicates is not None
    files = []
    for unit in batch.units:
        found = _footer(source, unit.key, schema)
        if found is None:
            return None
        files.append(found)
    total = sum(f.rows for f in files)
    quarantined = 0
    if not predicates or ctx.sample:  # a sample's bad rows are left out below, not looked for
        ctx.read_rows(total)
    elif ctx.mode == "drop":
        # Dropped rows are only counted: no need to read them, let alone all their columns.
        quarantined = _bad_count(schema, files)
        ctx.read_rows(total)
        ctx.drop_rows(quarantined)
    else:
        calls = _bad_rows(schema, batch, files)
        ctx.read_rows(total)
        for call in calls:
            ctx.quarantine_rows(*call)
            quarantined += len(call[3])
    sql = " UNION ALL ".join(
        f"SELECT * FROM ({_select(schema, f.path, f.casts)}) AS f{i} WHERE {_ok(schema, f)}"
        for i, f in enumerate(files)
    )
    return Relation(sql, tuple(schema.names), rows=total - quarantined)


def damaged_file(source: Files, batch: Batch, error: BaseException) -> str | None:
    """The unit of ``batch`` that cannot be read although its footer could, if there is one.

    A file whose footer reads can still hold a damaged page, which DuckDB finds
    only while it reads the rows. When ``error`` names the file ("Failed to read
    file ...") that is it; otherwise each file of the batch is read alone, the way
    the scan reads it, and the first that fails is the one.
    """
    text = str(error)
    for unit in batch.units:
        path = unit.key.removeprefix("file://")
        if f'"{path}"' in text or f"'{path}'" in text:
            return unit.key
    import duckdb

    from ...engine import query_batches

    schema = source.declared
    assert schema is not None
    for unit in batch.units:
        found = _footer(source, unit.key, schema)
        if found is None:
            continue
        try:
            for _ in query_batches(_select(schema, found.path, found.casts), {}):
                pass
        except (duckdb.Error, pa.ArrowException, OSError):
            return unit.key
    return None


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
    if source.format_of(key) != "parquet" or not path.lower().endswith((".parquet", ".pq")):
        return None
    try:
        with pq.ParquetFile(path) as meta:
            found = meta.schema_arrow
            metadata = meta.metadata
    except (OSError, pa.ArrowException):  # load() quarantines it with the right reason
        return None
    casts: dict[str, str] = {}
    for col in schema.columns:
        duck = col.duckdb_type
        if found.names.count(col.name) != 1 or duck is None:
            return None
        have = found.field(col.name).type
        if have == col.type:
            continue
        if not _exact_widening(have, col.type):
            return None
        casts[col.name] = duck
    stats = _statistics(metadata, schema)
    no_nulls = frozenset(
        name
        for name, groups in stats.items()
        if all(g is not None and g.null_count == 0 for g in groups)
    )
    return _File(path, casts, metadata.num_rows, schema.proven_clean(stats), no_nulls)


def _statistics(metadata: pq.FileMetaData, schema: Schema) -> dict[str, list[ColumnStats | None]]:
    """Column -> its statistics in each row group (None where a group has none), for the
    schema's columns that the file holds exactly once."""
    names = [metadata.schema.column(i).path for i in range(metadata.num_columns)]
    out: dict[str, list[ColumnStats | None]] = {}
    for col in schema.columns:
        if names.count(col.name) != 1:
            continue
        index = names.index(col.name)
        out[col.name] = [
            _stats(metadata.row_group(g).column(index).statistics)
            for g in range(metadata.num_row_groups)
        ]
    return out


def _stats(s: Any) -> ColumnStats | None:
    if s is None:
        return None
    bounds = bool(s.has_min_max)
    return ColumnStats(
        null_count=s.null_count if s.has_null_count else None,
        low=s.min if bounds else None,
        high=s.max if bounds else None,
        values=s.num_values,
        has_bounds=bounds,
    )


def _ok(schema: Schema, file: _File) -> str:
    """SQL true for the rows of ``file`` that break no constraint.

    What the file's statistics prove is left out: nothing at all for a clean
    file, and the null tests of columns without nulls, which also lets DuckDB
    push an ``allowed`` check into its Parquet reader (a quarter less time for
    the batch's main query in the reference benchmark).
    """
    if file.clean:
        return "TRUE"
    predicates = schema.sql_predicates(file.no_nulls)
    assert predicates is not None  # scan_obstacle checked that the schema has a SQL form
    return " AND ".join(predicates) or "TRUE"


def _exact_widening(have: pa.DataType, want: pa.DataType) -> bool:
    """Conversions DuckDB and Arrow both make without loss or error."""
    if pa.types.is_integer(have) and pa.types.is_integer(want):
        same_sign = pa.types.is_signed_integer(have) == pa.types.is_signed_integer(want)
        return same_sign and want.bit_width >= have.bit_width
    if pa.types.is_floating(have) and pa.types.is_floating(want):
        return want.bit_width >= have.bit_width
    if pa.types.is_decimal(have) and pa.types.is_decimal(want):  # exact in both engines
        return want.scale >= have.scale and (
            want.precision - want.scale >= have.precision - have.scale
        )
    if pa.types.is_string(want):
        return pa.types.is_large_string(have) or (
            pa.types.is_dictionary(have) and pa.types.is_string(have.value_type)
        )
    return False


def _select(schema: Schema, path: str, casts: dict[str, str], extra: str = "") -> str:
    cols = ", ".join(
        f"CAST({quote_name(c.name)} AS {casts[c.name]}) AS {quote_name(c.name)}"
        if c.name in casts
        else quote_name(c.name)
        for c in schema.columns
    )
    options = ", file_row_number = true" if extra else ""
    return f"SELECT {cols}{extra} FROM read_parquet({quote_literal(path)}{options})"


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


def _bad_rows(schema: Schema, batch: Batch, files: list[_File]) -> list[tuple]:
    """The quarantine calls ``load`` would make, file by file.

    Files whose statistics prove them clean are not read.
    """
    extra = ", {} AS __unit, file_row_number + 1 AS __row"  # row 1 is the first, as in load
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

        def raw_of(ns: list[int], t: dict[int, str] = text) -> list[str | None]:
            return [t.get(n) for n in ns]

        kept = schema.check_constraints(rows, recorder, unit.key, raw_of, pa.array(numbers))
        if kept.num_rows:  # the rules' SQL and Arrow forms must agree; a bug if not
            raise AssertionError(
                f"{kept.num_rows} row(s) of {unit.key} broke a rule in SQL but not in Arrow"
            )
    return calls


class _Recorder:
    """Stands in for the batch context while bad rows are checked; replayed afterwards."""

    mode = "quarantine"

    def __init__(self, calls: list[tuple]):
        self.calls = calls

    def quarantine_rows(self, source, kind, reasons, raw, lines=None) -> None:
        self.calls.append((source, kind, reasons, raw, lines))
