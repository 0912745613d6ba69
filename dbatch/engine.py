"""One DuckDB connection per worker thread, kept for the life of the process."""

from __future__ import annotations

import threading
from typing import Any

import pyarrow as pa

__all__ = ["query", "connection"]

_local = threading.local()


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
