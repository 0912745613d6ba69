"""SqlSource: a database table or query as a source, planned on the client, read on a worker."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import sqlalchemy as sa

from ...arrow import empty_table
from ...context import BatchContext
from ...core import Batch, Unit, digest
from ...database import (
    absolute_sqlite,
    check_identifier,
    database_error,
    engine,
    redact_url,
    repr_hiding_passwords,
)
from ...errors import JobSpecError, SourceError
from ...schema import parse_type
from ...sqltypes import arrow_type
from ...watermark import committed_watermark
from ...windows import frequency
from .ranges import Grid, plan_units, unit_condition
from .rows import Selection, apply_dtypes, to_arrow

__all__ = ["SqlSource"]


@dataclass(frozen=True)
class SqlSource:
    """Rows of a table (or of a query), one unit per range of an integer key or time window.

    The client asks the database for the minimum and maximum of the split column
    (one cheap query) and cuts the span into units on a fixed grid (multiples of
    ``chunk``, or windows such as whole days), so a unit keeps its name from one
    run to the next. A unit's bounds are its identity: when rows arrive in the
    last range, its bounds grow and that batch alone runs again. A worker streams
    its ranges with a server-side cursor, ``fetch_rows`` rows at a time, into Arrow.
    Rows whose split column is NULL form one more unit, so none is left out.

    Parameters
    ----------
    url
        SQLAlchemy URL (``sqlite:///shop.db``, ``postgresql+psycopg://user@host/db``).
        The password is never shown; prefer an environment variable when you build it.
    table, query
        A table name, or a SELECT statement (exactly one). A query is wrapped as a
        subquery; its ``:name`` parameters are bound from ``params``.
    key, chunk
        An integer column and the width of each unit's range (``id``, ``100000``).
    time_key, window
        A timestamp column and a pandas frequency (``1D``, ``6h``, ``MS``); one unit
        per window. Give either ``key`` or ``time_key``.
    columns
        Columns to read from ``table`` (default all).
    db_schema
        The database schema (namespace) of ``table``.
    dtypes
        Arrow types for columns of a ``query`` (``{"ts": "timestamp"}``); table
        columns get theirs from the database.
    incremental, watermark_table, watermark_url
        Only rows newer than the last committed watermark: the highest value of
        the split column among the rows that a ``SqlSink`` committed and published
        in ``watermark_table`` (``table`` or ``schema.table``, in ``watermark_url``,
        default ``url``). Rows of a failed run do not count, so nothing is skipped.
    fetch_rows
        Rows per round trip while streaming.
    row_bytes
        Estimated bytes per row, for size-based batching.

    Examples
    --------
    >>> SqlSource("sqlite:///shop.db", table="orders", key="id", chunk=50_000)  # doctest: +SKIP
    >>> SqlSource("postgresql+psycopg://etl@db/shop", table="events", time_key="ts",
    ...           window="1D")  # doctest: +SKIP
    """

    url: str
    table: str | None = None
    query: str | None = None
    key: str | None = None
    chunk: int = 100_000
    time_key: str | None = None
    window: str = "1D"
    columns: Sequence[str] | None = None
    db_schema: str | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    dtypes: Mapping[str, str] = field(default_factory=dict)
    incremental: bool = False
    watermark_table: str | None = None
    watermark_url: str | None = None
    fetch_rows: int = 10_000
    row_bytes: int = 100

    def __post_init__(self):
        object.__setattr__(self, "url", absolute_sqlite(self.url, key="source.url"))
        if (self.table is None) == (self.query is None):
            raise JobSpecError("give exactly one of table or query", key="source.table")
        if self.table is not None:
            check_identifier(self.table, key="source.table")
        elif not isinstance(self.query, str) or not self.query.strip():
            raise JobSpecError("expected a SELECT statement", key="source.query")
        if (self.key is None) == (self.time_key is None):
            raise JobSpecError(
                "give exactly one of key (an integer column, split into ranges of chunk) or "
                "time_key (a timestamp column, split into windows)",
                key="source.key",
            )
        check_identifier(self.split_column, key="source.key" if self.key else "source.time_key")
        if self.db_schema is not None:
            check_identifier(self.db_schema, key="source.db_schema")
        if self.columns is not None:
            object.__setattr__(self, "columns", self._checked_columns(self.columns))
        for name, key in (
            ("chunk", self.chunk),
            ("fetch_rows", self.fetch_rows),
            ("row_bytes", self.row_bytes),
        ):
            if not isinstance(key, int) or isinstance(key, bool) or key <= 0:
                raise JobSpecError("must be a positive whole number", key=f"source.{name}")
        if self.time_key is not None:
            frequency(self.window, key="source.window")
        for name, typ in self.dtypes.items():
            parse_type(typ, key=f"source.dtypes.{name}")
        self._check_watermark()

    def _checked_columns(self, columns: Sequence[str] | str) -> tuple[str, ...]:
        if self.query is not None:
            raise JobSpecError(
                "columns applies to a table; select them in the query", key="source.columns"
            )
        cols = [columns] if isinstance(columns, str) else list(columns)
        for c in cols:
            check_identifier(c, key="source.columns")
        if self.split_column not in cols:
            cols.append(self.split_column)
        return tuple(cols)

    def _check_watermark(self) -> None:
        if self.incremental:
            if self.watermark_table is None:
                raise JobSpecError(
                    "incremental needs watermark_table: the table the sink writes to (its "
                    "highest committed value of the key is where the next run starts)",
                    key="source.watermark_table",
                )
            check_identifier(self.watermark_table, key="source.watermark_table")
        if self.watermark_url is not None:
            object.__setattr__(
                self,
                "watermark_url",
                absolute_sqlite(self.watermark_url, key="source.watermark_url"),
            )

    # -- description ------------------------------------------------------------------

    def __repr__(self) -> str:
        return repr_hiding_passwords(self, ("url", "watermark_url"))

    @property
    def split_column(self) -> str:
        column = self.key if self.key is not None else self.time_key
        assert column is not None  # exactly one of them is set (checked in __post_init__)
        return column

    @property
    def _what(self) -> str:
        if self.table is not None:
            return f"table {self.db_schema + '.' if self.db_schema else ''}{self.table}"
        return f"query {digest(self.query, length=8)}"

    def describe(self) -> str:
        how = f"{self.key}/{self.chunk}" if self.key else f"{self.time_key}/{self.window}"
        extra = " incremental" if self.incremental else ""
        return f"sql {redact_url(self.url)} {self._what} by {how}{extra}"

    def token(self) -> list[Any]:
        return [
            "sql",
            redact_url(self.url),
            self.db_schema,
            self.table,
            self.query,
            sorted((k, str(v)) for k, v in self.params.items()),
            list(self.columns or ()),
            sorted(self.dtypes.items()),
        ]

    # -- planning, on the client ------------------------------------------------------

    def list_units(self) -> list[Unit]:
        """Ranges (or windows) from the minimum (or the watermark) to the maximum."""
        self._check_sqlite_file()
        try:
            with engine(self.url).connect() as con:
                rel = self._selection(con)
                col = rel.split
                lo, hi, n_all, n_key = con.execute(
                    sa.select(
                        sa.func.min(col), sa.func.max(col), sa.func.count(), sa.func.count(col)
                    ).select_from(rel.selectable)
                ).one()
        except sa.exc.SQLAlchemyError as e:
            raise database_error(e, self.url, f"list {self._what} in") from e
        since = self._watermark() if self.incremental else None
        return plan_units(self._grid, lo, hi, n_all=n_all, n_key=n_key, since=since)

    @property
    def _grid(self) -> Grid:
        return Grid(
            column=self.split_column,
            timed=self.time_key is not None,
            chunk=self.chunk,
            window=self.window,
            row_bytes=self.row_bytes,
            incremental=self.incremental,
        )

    def _watermark(self) -> Any:
        schema, _, table = str(self.watermark_table).rpartition(".")
        return committed_watermark(
            self.watermark_url or self.url, table, self.split_column, db_schema=schema or None
        )

    # -- loading, on a worker ---------------------------------------------------------

    def load(self, batch: Batch, ctx: BatchContext) -> pa.Table:
        """Stream each unit's rows in chunks of ``fetch_rows`` into one Arrow table."""
        self._check_sqlite_file()
        pieces: list[pa.Table] = []
        names: list[str] = []
        types: dict[str, pa.DataType | None] = {}
        timed = self.time_key is not None
        try:
            with engine(self.url).connect() as con:
                rel = self._selection(con)
                types = rel.types
                for unit in batch.units:
                    stmt = (
                        sa.select(*rel.columns)
                        .select_from(rel.selectable)
                        .where(unit_condition(rel.split, unit, timed=timed))
                        .order_by(rel.split)
                    )
                    result = con.execution_options(yield_per=self.fetch_rows).execute(stmt)
                    names = list(result.keys())
                    where = f"{self.describe()} {unit.key}"
                    for rows in result.partitions():
                        ctx.read_rows(len(rows))
                        pieces.append(to_arrow(rows, names, types, ctx, where))
        except sa.exc.SQLAlchemyError as e:
            raise database_error(e, self.url, f"read {self._what} from") from e
        if not pieces:
            return empty_table(
                pa.schema([(n, types.get(n) or pa.null()) for n in names or list(types)])
            )
        try:
            table = pa.concat_tables(pieces, promote_options="permissive")
        except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
            raise SourceError(
                f"{self.describe()}: the query's columns change type between rows ({e}); "
                "declare them with dtypes"
            ) from None
        return apply_dtypes(table, self.dtypes, self.time_key)

    def _selection(self, con: sa.Connection) -> Selection:
        split = self.split_column
        if self.query is not None:
            typ = sa.DateTime() if self.time_key else sa.BigInteger()
            try:
                text = sa.text(self.query).bindparams(**dict(self.params))
            except sa.exc.ArgumentError as e:
                raise JobSpecError(f"query parameters: {e}", key="source.params") from None
            sub = text.columns(sa.column(split, typ)).subquery("dbatch_q")
            types = {n: parse_type(t) for n, t in self.dtypes.items()}
            return Selection(sub, [sa.literal_column("*")], sub.c[split], types)
        assert self.table is not None  # exactly one of table and query (checked in __post_init__)
        try:
            table = sa.Table(self.table, sa.MetaData(), schema=self.db_schema, autoload_with=con)
        except sa.exc.NoSuchTableError:
            raise SourceError(
                f"{self.describe()}: there is no {self._what} in {redact_url(self.url)}; check "
                "the table name (and db_schema), or create the table first"
            ) from None
        wanted = list(self.columns) if self.columns else [c.name for c in table.c]
        missing = [c for c in dict.fromkeys([*wanted, split]) if c not in table.c]
        if missing:
            raise JobSpecError(
                f"{self._what} has no column(s) {missing}; it has {[c.name for c in table.c]}",
                key="source.key" if split in missing else "source.columns",
            )
        cols = [table.c[c] for c in wanted]
        types = {c.name: arrow_type(c.type) for c in cols}
        types.update({n: parse_type(t) for n, t in self.dtypes.items()})
        return Selection(table, cols, table.c[split], types)

    def _check_sqlite_file(self) -> None:
        parsed = sa.engine.make_url(self.url)
        if parsed.get_backend_name() == "sqlite" and not Path(parsed.database or "").exists():
            raise SourceError(
                f"{self.describe()}: the SQLite file {parsed.database!r} does not exist; "
                "check the path in the URL (relative paths are taken from the folder the "
                "job was started in)"
            )
