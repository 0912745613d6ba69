"""A database table as a sink: one transaction per batch, re-runnable, with commit markers."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import sqlalchemy as sa

from ..database import (
    absolute_sqlite,
    check_identifier,
    database_error,
    engine,
    redact_url,
    repr_hiding_passwords,
)
from ..errors import CommitError, JobSpecError
from ..arrow import as_arrow
from .base import Part, Sink, file_checksum

__all__ = ["SqlSink", "committed_watermark", "sql_type"]

_MODES = ("replace", "upsert")
_markers = sa.MetaData()
COMMITS = sa.Table(
    "dbatch_sink_commits",
    _markers,
    sa.Column("table_name", sa.String(400), primary_key=True),
    sa.Column("batch_id", sa.String(200), primary_key=True),
    sa.Column("fingerprint", sa.String(64), nullable=False),
    sa.Column("published", sa.Boolean, nullable=False, default=False),
    sa.Column("committed_at", sa.Float, nullable=False),
)
PUBLISHES = sa.Table(
    "dbatch_sink_publishes",
    _markers,
    sa.Column("table_name", sa.String(400), primary_key=True),
    sa.Column("run_id", sa.String(64), nullable=False),
    sa.Column("published_at", sa.Float, nullable=False),
    sa.Column("manifest", sa.Text, nullable=False),
)


@dataclass(frozen=True)
class SqlSink(Sink):
    """Land each batch in a database table, in one transaction, safe to re-run.

    ``stage`` (on a worker) writes the batch to Parquet in its staging folder;
    ``commit_batch`` (on the driver) reads it back in chunks and, in one
    transaction, removes what an earlier attempt of the same batch wrote,
    inserts the rows and records the batch in ``dbatch_sink_commits``
    (``table_name, batch_id, fingerprint``), which answers ``find_commit``. A
    reader sees all of a batch or none of it, and a re-run never duplicates.

    Parameters
    ----------
    url
        SQLAlchemy URL of the target database (relative SQLite paths are taken
        from the current folder).
    table
        Target table; created from the data's schema when missing.
    mode
        ``replace`` (default): rows carry the batch id in ``batch_column``; a
        batch's earlier rows are deleted before its rows are inserted.
        ``upsert``: insert or update on ``key`` (``ON CONFLICT``, PostgreSQL and
        SQLite); a table created by dbatch gets ``key`` as its primary key.
    key
        Column(s) identifying a row, for ``upsert``.
    db_schema
        Database schema (namespace) of the table, if not the default one.
    chunk_rows
        Rows read from the staged file at a time (one multi-row ``INSERT`` each;
        ``replace`` on PostgreSQL streams them with ``COPY`` instead).
    batch_column
        Name of the column holding the batch id (``_dbatch_batch``).

    With an aggregate, per-batch commits do nothing and ``publish`` replaces
    the table's content with the reduced result in one transaction.

    Examples
    --------
    >>> SqlSink("sqlite:///warehouse.db", table="orders")  # doctest: +SKIP
    >>> SqlSink("postgresql+psycopg://etl@db/dw", table="fx", mode="upsert", key="day")  # doctest: +SKIP
    """

    url: str
    table: str
    mode: str = "replace"
    key: str | Sequence[str] | None = None
    db_schema: str | None = None
    chunk_rows: int = 10_000
    batch_column: str = "_dbatch_batch"

    def __post_init__(self):
        object.__setattr__(self, "url", absolute_sqlite(self.url, key="sink.url"))
        check_identifier(self.table, key="sink.table")
        check_identifier(self.batch_column, key="sink.batch_column")
        if self.db_schema is not None:
            check_identifier(self.db_schema, key="sink.db_schema")
        if self.mode not in _MODES:
            raise JobSpecError(f"mode must be one of {list(_MODES)}", key="sink.mode")
        keys = (self.key,) if isinstance(self.key, str) else tuple(self.key or ())
        for k in keys:
            check_identifier(k, key="sink.key")
        object.__setattr__(self, "key", keys or None)
        if self.mode == "upsert" and not keys:
            raise JobSpecError(
                "mode upsert needs key: the column(s) that identify a row", key="sink.key"
            )
        if not isinstance(self.chunk_rows, int) or self.chunk_rows <= 0:
            raise JobSpecError("must be a positive whole number", key="sink.chunk_rows")

    # -- description ----------------------------------------------------------------

    def __repr__(self) -> str:
        return repr_hiding_passwords(self, ("url",))

    @property
    def qualified(self) -> str:
        return f"{self.db_schema}.{self.table}" if self.db_schema else self.table

    @property
    def location(self) -> str:
        return f"{redact_url(self.url)} table {self.qualified}"

    def describe(self) -> str:
        return f"sql {self.location} ({self.mode})"

    def token(self) -> list[Any]:
        return ["SqlSink", self.mode, list(self.key or ()), self.batch_column]

    # -- worker side ------------------------------------------------------------------

    def stage(self, data: Any, directory: Path, name: str) -> dict[str, Any]:
        import pyarrow.parquet as pq

        table = as_arrow(data)
        if self.batch_column in table.column_names:
            raise JobSpecError(
                f"the output already has a column {self.batch_column!r}, which the sink "
                "fills with the batch id; rename it in a step or set batch_column",
                key="sink.batch_column",
            )
        missing = [k for k in self.key or () if k not in table.column_names]
        if missing:
            raise JobSpecError(
                f"key column(s) {missing} are not in the output; it has {table.column_names}",
                key="sink.key",
            )
        out = directory / f"sql-{name}.parquet"
        pq.write_table(table, out)
        return {
            "files": [{"path": out.name, "rows": table.num_rows, "sha256": file_checksum(out)}],
            "rows": table.num_rows,
        }

    # -- driver side ------------------------------------------------------------------

    def commit_batch(self, batch_id: str, fingerprint: str, part: Part) -> None:
        """Land one committed batch in one transaction (a no-op for aggregate partials)."""
        files = sorted(Path(part.directory).glob("sql-*.parquet"))
        if not files:
            if any(Path(part.directory).glob("bucket-*.arrow")):
                return  # an aggregate's partials: the reduced result lands in publish()
            raise CommitError(
                f"batch {batch_id}: no staged output in {part.directory}; the committed "
                "folder was changed by hand. Delete it and run the job again."
            )
        try:
            with engine(self.url, create=True).begin() as con:
                _markers.create_all(con, checkfirst=True)
                target = self._target(con, files)
                if self.mode == "replace":
                    con.execute(sa.delete(target).where(target.c[self.batch_column] == batch_id))
                self._insert(con, target, files, batch_id)
                con.execute(
                    sa.delete(COMMITS).where(
                        COMMITS.c.table_name == self.qualified, COMMITS.c.batch_id == batch_id
                    )
                )
                con.execute(
                    sa.insert(COMMITS).values(
                        table_name=self.qualified,
                        batch_id=batch_id,
                        fingerprint=fingerprint,
                        published=False,
                        committed_at=time.time(),
                    )
                )
        except sa.exc.SQLAlchemyError as e:
            raise self._error(e, f"commit batch {batch_id} to table {self.qualified!r} in") from e

    def find_commit(self, batch_id: str, fingerprint: str) -> bool:
        try:
            with engine(self.url).connect() as con:
                if not sa.inspect(con).has_table(COMMITS.name):
                    return False
                row = con.execute(
                    sa.select(COMMITS.c.fingerprint).where(
                        COMMITS.c.table_name == self.qualified, COMMITS.c.batch_id == batch_id
                    )
                ).first()
        except sa.exc.SQLAlchemyError as e:
            raise self._error(e, "look up committed batches in") from e
        return row is not None and row[0] == fingerprint

    def publish(
        self, run_id: str, parts: Sequence[Part], summary: dict[str, Any]
    ) -> dict[str, Any]:
        """Mark per-batch commits published, or replace the table with an aggregate's result."""
        manifest = json.dumps({"run_id": run_id, **summary}, default=str, sort_keys=True)
        try:
            with engine(self.url, create=True).begin() as con:
                _markers.create_all(con, checkfirst=True)
                landed = self._landed(con, [p.name for p in parts])
                reduced = [p for p in parts if p.name not in landed]
                files = [f for p in reduced for f in sorted(p.directory.glob("sql-*.parquet"))]
                rows = 0
                if reduced:
                    target = self._target(con, files, replace_all=True)
                    con.execute(sa.delete(target))
                    rows = self._insert(con, target, files, f"run:{run_id}", plain=True)
                for names in _chunks(sorted(landed), 500):
                    con.execute(
                        sa.update(COMMITS)
                        .where(
                            COMMITS.c.table_name == self.qualified, COMMITS.c.batch_id.in_(names)
                        )
                        .values(published=True)
                    )
                con.execute(sa.delete(PUBLISHES).where(PUBLISHES.c.table_name == self.qualified))
                con.execute(
                    sa.insert(PUBLISHES).values(
                        table_name=self.qualified,
                        run_id=run_id,
                        published_at=time.time(),
                        manifest=manifest,
                    )
                )
        except sa.exc.SQLAlchemyError as e:
            raise self._error(e, f"publish table {self.qualified!r} in") from e
        info: dict[str, Any] = {"table": self.qualified, "url": redact_url(self.url)}
        if reduced:
            info["rows"] = rows
        else:
            info["batches"] = len(landed)
        return info

    def current_manifest(self) -> dict[str, Any] | None:
        """What the last publish recorded for this table (None before the first one)."""
        try:
            with engine(self.url).connect() as con:
                if not sa.inspect(con).has_table(PUBLISHES.name):
                    return None
                text = con.execute(
                    sa.select(PUBLISHES.c.manifest).where(PUBLISHES.c.table_name == self.qualified)
                ).scalar()
        except sa.exc.SQLAlchemyError as e:
            raise self._error(e, "read the last publication from") from e
        return json.loads(text) if text else None

    # -- helpers ----------------------------------------------------------------------

    def _landed(self, con, names: list[str]) -> set[str]:
        found: set[str] = set()
        for chunk in _chunks(names, 500):
            found.update(
                con.execute(
                    sa.select(COMMITS.c.batch_id).where(
                        COMMITS.c.table_name == self.qualified, COMMITS.c.batch_id.in_(chunk)
                    )
                ).scalars()
            )
        return found

    def _target(self, con, files: list[Path], replace_all: bool = False) -> sa.Table:
        """The target table: reflected if it exists (and checked), else created from the data."""
        import pyarrow.parquet as pq

        schema = _unified_schema([pq.read_schema(f) for f in files])
        insp = sa.inspect(con)
        if not insp.has_table(self.table, schema=self.db_schema):
            table = self._table_for(schema, keyed=self.mode == "upsert" and not replace_all)
            table.create(con)
            return table
        table = sa.Table(self.table, sa.MetaData(), schema=self.db_schema, autoload_with=con)
        missing = [n for n in schema.names if n not in table.c]
        if missing:
            raise CommitError(
                f"table {self.qualified!r} in {redact_url(self.url)} has no column(s) {missing}; "
                "add them (ALTER TABLE ... ADD COLUMN), drop them in a step, or write to a "
                "new table"
            )
        if self.mode == "replace" and self.batch_column not in table.c:
            raise CommitError(
                f"table {self.qualified!r} has no column {self.batch_column!r}, which mode "
                "replace needs to find a batch's earlier rows; add it (a text column), "
                "use mode: upsert with a key, or write to a new table"
            )
        return table

    def _table_for(self, schema: pa.Schema, keyed: bool) -> sa.Table:
        cols = [
            sa.Column(
                f.name,
                sql_type(f.type),
                primary_key=keyed and f.name in (self.key or ()),
                nullable=not (keyed and f.name in (self.key or ())),
                autoincrement=False,
            )
            for f in schema
        ]
        cols.append(sa.Column(self.batch_column, sa.String(200), index=True))
        return sa.Table(self.table, sa.MetaData(), *cols, schema=self.db_schema)

    def _insert(
        self, con, target: sa.Table, files: list[Path], batch_id: str, plain: bool = False
    ) -> int:
        with_batch = self.batch_column in target.c
        upsert = self.mode == "upsert" and not plain
        if not upsert and con.dialect.name == "postgresql" and _flat(files):
            return self._copy(con, target, files, batch_id if with_batch else None)
        statement = self._upsert(con, target) if upsert else sa.insert(target)
        n = 0
        for rows in _read_rows(files, self.chunk_rows):
            if with_batch:
                for r in rows:
                    r[self.batch_column] = batch_id
            if upsert:
                rows = _last_per_key(rows, self.key or ())
            if rows:
                con.execute(statement, rows)
                n += len(rows)
        return n

    def _copy(self, con, target: sa.Table, files: list[Path], batch_id: str | None) -> int:
        """PostgreSQL: ``COPY ... FROM STDIN`` inside the commit's transaction."""
        import psycopg
        import pyarrow.parquet as pq
        from psycopg import sql

        names = pq.read_schema(files[0]).names
        columns = names + ([self.batch_column] if batch_id is not None else [])
        where = (self.db_schema, self.table) if self.db_schema else (self.table,)
        statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
            sql.Identifier(*where), sql.SQL(", ").join(sql.Identifier(c) for c in columns)
        )
        n = 0
        raw = con.connection.dbapi_connection
        try:
            with raw.cursor() as cursor, cursor.copy(statement) as copy:
                for f in files:
                    for rb in pq.ParquetFile(f).iter_batches(
                        batch_size=self.chunk_rows, columns=names
                    ):
                        values = [rb.column(i).to_pylist() for i in range(rb.num_columns)]
                        if batch_id is not None:
                            values.append([batch_id] * rb.num_rows)
                        for row in zip(*values, strict=True):
                            copy.write_row(row)
                        n += rb.num_rows
        except psycopg.Error as e:  # the transaction rolls back; report it like SQLAlchemy's
            raise sa.exc.DBAPIError("COPY", None, e) from e
        return n

    def _upsert(self, con, target: sa.Table):
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
        keys = set(self.key or ())
        update = {c.name: stmt.excluded[c.name] for c in target.c if c.name not in keys}
        if not update:
            return stmt.on_conflict_do_nothing(index_elements=list(self.key or ()))
        return stmt.on_conflict_do_update(index_elements=list(self.key or ()), set_=update)

    def _error(self, exc: BaseException, what: str) -> Exception:
        err = database_error(exc, self.url, what, cls=CommitError)
        text = str(err)
        if "ON CONFLICT" in str(exc):
            err = CommitError(
                f"{text} (mode upsert needs a primary key or unique index on "
                f"{list(self.key or ())} in table {self.qualified!r})"
            )
        return err


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


def sql_type(t: pa.DataType) -> sa.types.TypeEngine:
    """The SQLAlchemy column type for an Arrow type (tables created from data).

    Examples
    --------
    >>> sql_type(pa.int64())
    BigInteger()
    """
    if pa.types.is_dictionary(t):
        return sql_type(t.value_type)
    if pa.types.is_boolean(t):
        return sa.Boolean()
    if pa.types.is_integer(t):
        return (
            sa.BigInteger()
            if t.bit_width > 32 or not pa.types.is_signed_integer(t)
            else sa.Integer()
        )
    if pa.types.is_floating(t):
        return sa.Double()
    if pa.types.is_decimal(t):
        return sa.Numeric(t.precision, t.scale)
    if pa.types.is_timestamp(t):
        return sa.DateTime(timezone=t.tz is not None)
    if pa.types.is_date(t):
        return sa.Date()
    if pa.types.is_time(t):
        return sa.Time()
    if pa.types.is_duration(t):
        return sa.Interval()
    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t):
        return sa.LargeBinary()
    if pa.types.is_nested(t):
        return sa.JSON()
    return sa.Text()


def _unified_schema(schemas: list[pa.Schema]) -> pa.Schema:
    try:
        return pa.unify_schemas(schemas, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
        raise CommitError(f"the parts to publish disagree on their columns: {e}") from None


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


def _chunks(items: list[str], n: int) -> Iterator[list[str]]:
    for i in range(0, len(items), n):
        yield items[i : i + n]
