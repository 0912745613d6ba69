"""DuckDB: one connection per worker thread, queries over Arrow tables, SQL quoting, relations."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

__all__ = [
    "Relation",
    "Guard",
    "connection",
    "copy_to_parquet",
    "quote_literal",
    "quote_name",
    "query",
    "query_batches",
]

_local = threading.local()


def quote_name(name: str) -> str:
    """A SQL identifier, double-quoted.

    Examples
    --------
    >>> print(quote_name("amount usd"))
    "amount usd"
    """
    return '"' + name.replace('"', '""') + '"'


def quote_literal(text: str) -> str:
    """A SQL string literal, single-quoted.

    Examples
    --------
    >>> quote_literal("O'Brien")
    "'O''Brien'"
    """
    return "'" + text.replace("'", "''") + "'"


@dataclass(frozen=True)
class Guard:
    """Rows a step set aside travel on through a query, flagged, until the query ends.

    ``step`` decides what becomes of them (``set_aside(rows, ctx)``): an ``Enrich``
    whose unmatched rows are filtered or quarantined. ``columns`` and ``sql`` are the
    relation just after that step, from which the rows are read as the step saw them.
    """

    step: Any
    flag: str
    columns: tuple[str, ...]
    sql: str


@dataclass(frozen=True)
class Relation:
    """A query being built from a batch: its SQL, its columns and the tables it reads.

    Sources that read a batch inside a query (``Scannable.scan``) and SQL steps
    (``SqlStep.to_relation``) hand these on; ``rows`` is the number of rows the
    query starts from when that is known before it runs (a scan counted them).
    ``guard`` marks rows a step set aside: the steps after it leave them alone.
    """

    sql: str
    columns: tuple[str, ...]
    tables: Mapping[str, Any] = field(default_factory=dict)
    rows: int | None = None
    guard: Guard | None = None

    @property
    def alive(self) -> str:
        """SQL true for the rows the steps still apply to ("" when that is every row)."""
        return self.guard.flag if self.guard is not None else ""

    def hidden(self) -> tuple[str, ...]:
        """Columns the query carries that are not part of the data (a guard's flag)."""
        return (self.guard.flag,) if self.guard is not None else ()


def connection():
    """This thread's DuckDB connection (one thread each: Dask provides the parallelism)."""
    con = getattr(_local, "con", None)
    if con is None:
        import duckdb

        con = duckdb.connect(config={"threads": 1, "preserve_insertion_order": True})
        _local.con = con
    return con


def query(sql: str, tables: dict[str, Any], params: list | None = None) -> pa.Table:
    """Run ``sql`` over Arrow tables registered under the given names."""
    con = connection()
    for name, table in tables.items():
        con.register(name, table)
    try:
        relation = con.sql(sql, params=params) if params else con.sql(sql)
        if relation is None:  # a statement that returns no rows
            return pa.table({})
        fetch = getattr(relation, "to_arrow_table", None) or relation.fetch_arrow_table
        return fetch()
    finally:
        for name in tables:
            con.unregister(name)


def query_batches(
    sql: str, tables: dict[str, Any], rows: int = 1 << 17
) -> Iterator[pa.RecordBatch]:
    """Run ``sql`` and yield its result ``rows`` at a time, never all of it at once.

    At least one batch is yielded (an empty one for an empty result).

    The query runs on a cursor of its own, so ``query`` can be used while the
    batches are read; the cursor is closed when the iterator ends or is dropped.
    """
    cursor = connection().cursor()
    try:
        for name, table in tables.items():
            cursor.register(name, table)
        reader = cursor.sql(sql).to_arrow_reader(rows)
        empty = True
        for batch in reader:
            empty = False
            yield batch
        if empty:  # one empty batch: the consumer still learns the columns
            yield pa.RecordBatch.from_pylist([], schema=reader.schema)
    finally:
        cursor.close()


def copy_to_parquet(
    sql: str, tables: dict[str, Any], path: str | Path, compression: str, types: frozenset[str]
) -> int | None:
    """Write the result of ``sql`` to the Parquet file ``path``; return its row count.

    Returns None, writing nothing, when a result column's DuckDB type is not in ``types``.
    """
    con = connection()
    for name, table in tables.items():
        con.register(name, table)
    try:
        if any(str(t) not in types for t in con.sql(sql).types):
            return None
        target = str(path).replace("'", "''")
        copied = con.execute(
            f"COPY ({sql}) TO '{target}' (FORMAT parquet, COMPRESSION {compression})"
        ).fetchone()
        return int(copied[0])
    finally:
        for name in tables:
            con.unregister(name)
