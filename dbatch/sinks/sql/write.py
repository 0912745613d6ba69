"""Staged Parquet rows into a table, inside the caller's transaction: INSERT, upsert or COPY."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import sqlalchemy as sa

from ...errors import JobSpecError

__all__ = ["insert_rows"]


def insert_rows(
    con: sa.Connection,
    target: sa.Table,
    files: list[Path],
    *,
    batch_column: str,
    batch_id: str,
    upsert_key: Sequence[str] | None,
    chunk_rows: int,
) -> int:
    """Insert the rows of ``files`` (``chunk_rows`` at a time) and return how many.

    Rows get ``batch_id`` in ``batch_column`` when the table has that column.
    With ``upsert_key``, a row whose key exists updates it (``ON CONFLICT``);
    without, PostgreSQL streams plain rows with ``COPY``.
    """
    with_batch = batch_column in target.c
    if not upsert_key and con.dialect.name == "postgresql" and _flat(files):
        named = batch_column if with_batch else None
        return _copy(con, target, files, named, batch_id, chunk_rows)
    statement = _upsert(con, target, upsert_key) if upsert_key else sa.insert(target)
    n = 0
    for rows in _read_rows(files, chunk_rows):
        if with_batch:
            for r in rows:
                r[batch_column] = batch_id
        if upsert_key:
            rows = _last_per_key(rows, upsert_key)
        if rows:
            con.execute(statement, rows)
            n += len(rows)
    return n


def _copy(
    con: sa.Connection,
    target: sa.Table,
    files: list[Path],
    batch_column: str | None,
    batch_id: str,
    chunk_rows: int,
) -> int:
    """PostgreSQL: ``COPY ... FROM STDIN`` inside the commit's transaction."""
    import psycopg
    import pyarrow.parquet as pq
    from psycopg import sql

    names = pq.read_schema(files[0]).names
    columns = names + ([batch_column] if batch_column is not None else [])
    where = (target.schema, target.name) if target.schema else (target.name,)
    statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
        sql.Identifier(*where), sql.SQL(", ").join(sql.Identifier(c) for c in columns)
    )
    n = 0
    raw: Any = con.connection.dbapi_connection  # psycopg, for its COPY support
    try:
        with raw.cursor() as cursor, cursor.copy(statement) as copy:
            for f in files:
                for rb in pq.ParquetFile(f).iter_batches(batch_size=chunk_rows, columns=names):
                    values = [rb.column(i).to_pylist() for i in range(rb.num_columns)]
                    if batch_column is not None:
                        values.append([batch_id] * rb.num_rows)
                    for row in zip(*values, strict=True):
                        copy.write_row(row)
                    n += rb.num_rows
    except psycopg.Error as e:  # the transaction rolls back; report it like SQLAlchemy's
        raise sa.exc.DBAPIError("COPY", None, e) from e
    return n


def _upsert(con: sa.Connection, target: sa.Table, key: Sequence[str]) -> Any:
    from sqlalchemy.dialects import postgresql, sqlite

    dialect = con.dialect.name
    stmt: postgresql.Insert | sqlite.Insert
    if dialect == "postgresql":
        stmt = postgresql.insert(target)
    elif dialect == "sqlite":
        stmt = sqlite.insert(target)
    else:
        raise JobSpecError(
            f"mode upsert uses ON CONFLICT, which dbatch supports on PostgreSQL and SQLite, "
            f"not {dialect}; use mode: replace",
            key="sink.mode",
        )
    keys = set(key)
    update = {c.name: stmt.excluded[c.name] for c in target.c if c.name not in keys}
    if not update:
        return stmt.on_conflict_do_nothing(index_elements=list(key))
    return stmt.on_conflict_do_update(index_elements=list(key), set_=update)


def _flat(files: list[Path]) -> bool:
    """Whether every column is a plain value (COPY's text format has no JSON adapter)."""
    import pyarrow.parquet as pq

    return not any(pa.types.is_nested(f.type) for path in files for f in pq.read_schema(path))


def _read_rows(files: list[Path], chunk: int) -> Iterator[list[dict[str, Any]]]:
    import pyarrow.parquet as pq

    for f in files:
        for rb in pq.ParquetFile(f).iter_batches(batch_size=chunk):
            yield rb.to_pylist()


def _last_per_key(rows: list[dict[str, Any]], key: Sequence[str]) -> list[dict[str, Any]]:
    """Within one statement a key may appear once (ON CONFLICT); the last row wins."""
    latest: dict[tuple, dict[str, Any]] = {}
    for r in rows:
        latest[tuple(r[k] for k in key)] = r
    return list(latest.values())
