"""The commit markers a SQL sink keeps beside its tables, and the watermark read from them."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from .database import database_error, engine
from .errors import JobSpecError

__all__ = ["MARKERS", "COMMITS", "PUBLISHES", "committed_watermark"]

MARKERS = sa.MetaData()
COMMITS = sa.Table(
    "dbatch_sink_commits",
    MARKERS,
    sa.Column("table_name", sa.String(400), primary_key=True),
    sa.Column("batch_id", sa.String(200), primary_key=True),
    sa.Column("fingerprint", sa.String(64), nullable=False),
    sa.Column("published", sa.Boolean, nullable=False, default=False),
    sa.Column("committed_at", sa.Float, nullable=False),
)
PUBLISHES = sa.Table(
    "dbatch_sink_publishes",
    MARKERS,
    sa.Column("table_name", sa.String(400), primary_key=True),
    sa.Column("run_id", sa.String(64), nullable=False),
    sa.Column("published_at", sa.Float, nullable=False),
    sa.Column("manifest", sa.Text, nullable=False),
)


def committed_watermark(
    url: str,
    table: str,
    column: str,
    *,
    db_schema: str | None = None,
    batch_column: str = "_dbatch_batch",
) -> Any:
    """The highest ``column`` among rows that ``SqlSink`` committed *and* published in ``table``.

    Rows of a run that failed are left out (their batches are planned again),
    so a gap left by a failed batch never moves the watermark past it. For a
    table that dbatch did not write, the plain maximum of ``column`` is used.
    Returns None when the table does not exist or is empty.

    Examples
    --------
    >>> committed_watermark("sqlite:///warehouse.db", "orders", "id")  # doctest: +SKIP
    41999
    """
    try:
        with engine(url).connect() as con:
            insp = sa.inspect(con)
            if not insp.has_table(table, schema=db_schema):
                return None
            target = sa.Table(table, sa.MetaData(), schema=db_schema, autoload_with=con)
            if column not in target.c:
                raise JobSpecError(
                    f"the watermark table {table!r} has no column {column!r}; keep that column "
                    "in the output (the watermark is its highest committed value)",
                    key="source.watermark_table",
                )
            stmt = sa.select(sa.func.max(target.c[column]))
            if batch_column in target.c and insp.has_table(COMMITS.name):
                qualified = f"{db_schema}.{table}" if db_schema else table
                published = sa.select(COMMITS.c.batch_id).where(
                    COMMITS.c.table_name == qualified, COMMITS.c.published.is_(True)
                )
                stmt = stmt.where(target.c[batch_column].in_(published))
            return con.execute(stmt).scalar()
    except sa.exc.SQLAlchemyError as e:
        raise database_error(e, url, "read the committed watermark from") from e
