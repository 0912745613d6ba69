"""The table a SQL sink writes to: reflected and checked when it exists, else created from data."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import sqlalchemy as sa

from ...database import redact_url
from ...errors import CommitError
from ...sqltypes import sql_type

__all__ = ["Target", "target_table"]


@dataclass(frozen=True)
class Target:
    """Where a sink's rows go: the table, its schema, its key and the batch id column.

    Examples
    --------
    >>> Target("sqlite:////tmp/dw.db", "orders", "sales", ("id",), "_dbatch_batch").qualified
    'sales.orders'
    """

    url: str
    table: str
    db_schema: str | None
    key: Sequence[str]
    batch_column: str

    @property
    def qualified(self) -> str:
        return f"{self.db_schema}.{self.table}" if self.db_schema else self.table


def target_table(
    con: sa.Connection, where: Target, files: list[Path], *, keyed: bool, replace: bool
) -> sa.Table:
    """The target table: reflected if it exists (and checked), else created from the data.

    ``keyed``: a created table gets the key as its primary key; ``replace``: an
    existing table must have the batch id column (mode ``replace`` finds a
    batch's earlier rows by it).
    """
    import pyarrow.parquet as pq

    schema = _unified_schema([pq.read_schema(f) for f in files])
    insp = sa.inspect(con)
    if not insp.has_table(where.table, schema=where.db_schema):
        table = _table_for(where, schema, keyed=keyed)
        table.create(con)
        return table
    table = sa.Table(where.table, sa.MetaData(), schema=where.db_schema, autoload_with=con)
    missing = [n for n in schema.names if n not in table.c]
    if missing:
        raise CommitError(
            f"table {where.qualified!r} in {redact_url(where.url)} has no column(s) {missing}; "
            "add them (ALTER TABLE ... ADD COLUMN), drop them in a step, or write to a "
            "new table"
        )
    if replace and where.batch_column not in table.c:
        raise CommitError(
            f"table {where.qualified!r} has no column {where.batch_column!r}, which mode "
            "replace needs to find a batch's earlier rows; add it (a text column), "
            "use mode: upsert with a key, or write to a new table"
        )
    return table


def _table_for(where: Target, schema: pa.Schema, keyed: bool) -> sa.Table:
    cols = [
        sa.Column(
            f.name,
            sql_type(f.type),
            primary_key=keyed and f.name in where.key,
            nullable=not (keyed and f.name in where.key),
            autoincrement=False,
        )
        for f in schema
    ]
    cols.append(sa.Column(where.batch_column, sa.String(200), index=True))
    return sa.Table(where.table, sa.MetaData(), *cols, schema=where.db_schema)


def _unified_schema(schemas: list[pa.Schema]) -> pa.Schema:
    try:
        return pa.unify_schemas(schemas, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
        raise CommitError(f"the parts to publish disagree on their columns: {e}") from None
