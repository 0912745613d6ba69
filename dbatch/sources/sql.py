"""A database table or query as a source: key ranges or time windows, streamed into Arrow."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pandas as pd
import pyarrow as pa
import sqlalchemy as sa

from ..batching import frequency, window_start
from ..context import BatchContext
from ..core import Batch, Unit, digest
from ..database import (
    absolute_sqlite,
    check_identifier,
    database_error,
    engine,
    redact_url,
    repr_hiding_passwords,
)
from ..errors import JobSpecError, SourceError
from ..schema import parse_type

__all__ = ["SqlSource", "arrow_type"]


@dataclass(frozen=True)
class _Relation:
    """What a load selects from: the columns, the split column and Arrow types where known."""

    selectable: Any
    columns: list[Any]
    split: Any
    types: dict[str, pa.DataType | None]


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
            if self.query is not None:
                raise JobSpecError(
                    "columns applies to a table; select them in the query", key="source.columns"
                )
            cols = [self.columns] if isinstance(self.columns, str) else list(self.columns)
            for c in cols:
                check_identifier(c, key="source.columns")
            if self.split_column not in cols:
                cols.append(self.split_column)
            object.__setattr__(self, "columns", tuple(cols))
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
                rel = self._relation(con)
                col = rel.split
                lo, hi, n_all, n_key = con.execute(
                    sa.select(
                        sa.func.min(col), sa.func.max(col), sa.func.count(), sa.func.count(col)
                    ).select_from(rel.selectable)
                ).one()
        except sa.exc.SQLAlchemyError as e:
            raise database_error(e, self.url, f"list {self._what} in") from e
        since = self._watermark() if self.incremental else None
        units = (
            []
            if lo is None
            else (
                self._key_units(lo, hi, n_key, since)
                if self.key
                else self._time_units(lo, hi, n_key, since)
            )
        )
        nulls = int(n_all or 0) - int(n_key or 0)
        if nulls and not self.incremental:
            units.append(
                Unit(
                    key=f"{self.split_column}:NULL",
                    size=nulls * self.row_bytes,
                    identity=(("nulls", nulls),),
                )
            )
        return units

    def _key_units(self, lo: Any, hi: Any, n: int, since: Any) -> list[Unit]:
        lo, hi = _as_int(lo, self.key), _as_int(hi, self.key)
        density = n / (hi - lo + 1)
        start = lo
        if since is not None:
            start = max(lo, _as_int(since, self.key) + 1)
        if start > hi:
            return []
        units = []
        cell = (start // self.chunk) * self.chunk
        while cell <= hi:
            a, b = max(cell, start), min(cell + self.chunk, hi + 1)
            name = f"[{a if self.incremental else cell},{cell + self.chunk})"
            units.append(
                Unit(
                    key=f"{self.key}:{name}",
                    size=max(1, math.ceil((b - a) * density)) * self.row_bytes,
                    identity=(("lo", a), ("lo_op", ">="), ("hi", b), ("hi_op", "<")),
                )
            )
            cell += self.chunk
        return units

    def _time_units(self, lo: Any, hi: Any, n: int, since: Any) -> list[Unit]:
        offset = frequency(self.window, key="source.window")
        first, last = _timestamp(lo, self.time_key), _timestamp(hi, self.time_key)
        start, lo_op = first, ">="
        if since is not None:
            mark = _timestamp(since, self.time_key)
            if mark >= last:
                return []
            if mark >= first:
                start, lo_op = mark, ">"
        span = max((last - first).total_seconds(), 1e-6)
        units = []
        cell = window_start(start, offset)
        while cell <= last:
            end = cell + offset
            a, a_op = (start, lo_op) if start >= cell else (cell, ">=")
            b, b_op = (end, "<") if end <= last else (last, "<=")
            name = f"[{cell.isoformat()},{end.isoformat()})"
            if self.incremental and a_op == ">":
                name = f"({a.isoformat()},{end.isoformat()})"
            share = (b - a).total_seconds() / span
            units.append(
                Unit(
                    key=f"{self.time_key}:{name}",
                    size=max(1, math.ceil(n * share)) * self.row_bytes,
                    time=_epoch(cell),
                    identity=(
                        ("lo", a.isoformat()),
                        ("lo_op", a_op),
                        ("hi", b.isoformat()),
                        ("hi_op", b_op),
                    ),
                )
            )
            cell = end
        return units

    def _watermark(self) -> Any:
        from ..sinks.sql import committed_watermark

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
        try:
            with engine(self.url).connect() as con:
                rel = self._relation(con)
                types = rel.types
                for unit in batch.units:
                    stmt = (
                        sa.select(*rel.columns)
                        .select_from(rel.selectable)
                        .where(self._condition(rel.split, unit))
                        .order_by(rel.split)
                    )
                    result = con.execution_options(yield_per=self.fetch_rows).execute(stmt)
                    names = list(result.keys())
                    for rows in result.partitions():
                        ctx.read_rows(len(rows))
                        pieces.append(self._to_arrow(rows, names, types, ctx, unit.key))
        except sa.exc.SQLAlchemyError as e:
            raise database_error(e, self.url, f"read {self._what} from") from e
        if not pieces:
            return pa.schema(
                [(n, types.get(n) or pa.null()) for n in names or list(types)]
            ).empty_table()
        try:
            table = pa.concat_tables(pieces, promote_options="permissive")
        except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
            raise SourceError(
                f"{self.describe()}: the query's columns change type between rows ({e}); "
                "declare them with dtypes"
            ) from None
        return self._apply_dtypes(table)

    def _condition(self, col: Any, unit: Unit):
        ident = dict(unit.identity)
        if "nulls" in ident:
            return col.is_(None)
        lo, hi = ident["lo"], ident["hi"]
        if self.time_key is not None:
            lo, hi = _bound(lo), _bound(hi)
        low = col >= lo if ident["lo_op"] == ">=" else col > lo
        high = col < hi if ident["hi_op"] == "<" else col <= hi
        return sa.and_(low, high)

    def _relation(self, con) -> _Relation:
        split = self.split_column
        if self.query is not None:
            typ = sa.DateTime() if self.time_key else sa.BigInteger()
            try:
                text = sa.text(self.query).bindparams(**dict(self.params))
            except sa.exc.ArgumentError as e:
                raise JobSpecError(f"query parameters: {e}", key="source.params") from None
            sub = text.columns(sa.column(split, typ)).subquery("dbatch_q")
            types = {n: parse_type(t) for n, t in self.dtypes.items()}
            return _Relation(sub, [sa.literal_column("*")], sub.c[split], types)
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
        return _Relation(table, cols, table.c[split], types)

    def _to_arrow(
        self,
        rows: Sequence[Any],
        names: list[str],
        types: Mapping[str, pa.DataType | None],
        ctx: BatchContext,
        where: str,
    ) -> pa.Table:
        columns = list(zip(*rows, strict=True)) if rows else [() for _ in names]
        arrays: dict[str, pa.Array] = {}
        bad: dict[int, str] = {}
        for name, values in zip(names, columns, strict=True):
            arrays[name] = _column(name, list(values), types.get(name), bad)
        table = pa.table(arrays)
        if not bad:
            return table
        idx = sorted(bad)
        raw = [json.dumps(dict(zip(names, rows[i], strict=True)), default=str) for i in idx]
        ctx.quarantine_rows(f"{self.describe()} {where}", "type", [bad[i] for i in idx], raw)
        keep = pa.array([i not in bad for i in range(len(rows))])
        return table.filter(keep)

    def _apply_dtypes(self, table: pa.Table) -> pa.Table:
        dtypes = dict(self.dtypes)
        tk = self.time_key
        if tk and tk in table.column_names and pa.types.is_string(table.schema.field(tk).type):
            dtypes.setdefault(tk, "timestamp[us]")  # SQLite hands a query's timestamps over as text
        for name, typ in dtypes.items():
            if name in table.column_names:
                i = table.schema.get_field_index(name)
                try:
                    table = table.set_column(i, name, table[name].cast(parse_type(typ)))
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
                    raise JobSpecError(
                        f"column {name!r} cannot be read as {typ}: {e}", key=f"source.dtypes.{name}"
                    ) from None
        return table

    def _check_sqlite_file(self) -> None:
        parsed = sa.engine.make_url(self.url)
        if parsed.get_backend_name() == "sqlite":
            from pathlib import Path

            if not Path(parsed.database or "").exists():
                raise SourceError(
                    f"{self.describe()}: the SQLite file {parsed.database!r} does not exist; "
                    "check the path in the URL (relative paths are taken from the folder the "
                    "job was started in)"
                )


def arrow_type(t: sa.types.TypeEngine) -> pa.DataType | None:
    """The Arrow type for a database column type, or None to infer it from the values.

    Examples
    --------
    >>> arrow_type(sa.BigInteger())
    DataType(int64)
    """
    if isinstance(t, sa.Boolean):
        return pa.bool_()
    if isinstance(t, sa.Integer):
        return pa.int64()
    if isinstance(t, sa.Float):
        return pa.float64()
    if isinstance(t, sa.Numeric):
        p, s = t.precision, t.scale
        if p is not None and s is not None and 0 < p <= 38:
            return pa.decimal128(p, s)
        return pa.float64()
    if isinstance(t, sa.DateTime):
        return pa.timestamp("us", tz="UTC" if t.timezone else None)
    if isinstance(t, sa.Date):
        return pa.date32()
    if isinstance(t, sa.Time):
        return pa.time64("us")
    if isinstance(t, sa.Interval):
        return pa.duration("us")
    if isinstance(t, sa.LargeBinary | sa.types._Binary):
        return pa.binary()
    if isinstance(t, sa.JSON | sa.String | sa.Enum | sa.Uuid):
        return pa.string()
    return None


def _column(name: str, values: list[Any], typ: pa.DataType | None, bad: dict[int, str]):
    """One column of a fetched chunk as an Arrow array; values that do not fit go to ``bad``.

    Values of another Python type (dates that SQLite hands over as text) are
    converted with an Arrow cast; what cannot be converted is set aside.
    """
    if typ is None:
        try:
            return pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            first = next((v for v in values if v is not None), None)
            typ = pa.array([first]).type
    values = _prepare(values, typ)
    try:
        return pa.array(values, type=typ)
    except _CONVERSION_ERRORS:
        pass
    try:
        return pa.array(values).cast(typ)
    except _CONVERSION_ERRORS:
        pass
    good = []
    for i, v in enumerate(values):
        try:
            good.append(_one(v, typ))
        except _CONVERSION_ERRORS:
            bad.setdefault(i, f"column {name!r}: value {v!r} is not a valid {typ}")
            good.append(None)
    return pa.array(good, type=typ)


_CONVERSION_ERRORS = (
    pa.ArrowInvalid,
    pa.ArrowTypeError,
    pa.ArrowNotImplementedError,
    OverflowError,
    TypeError,
    ValueError,
)


def _one(value: Any, typ: pa.DataType) -> Any:
    try:
        return pa.scalar(value, type=typ).as_py()
    except _CONVERSION_ERRORS:
        return pa.array([value]).cast(typ)[0].as_py()


def _prepare(values: list[Any], typ: pa.DataType) -> list[Any]:
    from decimal import Decimal

    if pa.types.is_floating(typ):
        return [float(v) if isinstance(v, Decimal) else v for v in values]
    if pa.types.is_string(typ):
        return [
            v
            if v is None or isinstance(v, str)
            else json.dumps(v)
            if isinstance(v, dict | list)
            else str(v)
            for v in values
        ]
    return values


def _as_int(value: Any, column: str | None) -> int:
    try:
        number = int(value)
        if number == value or isinstance(value, str) and str(number) == value.strip():
            return number
    except (TypeError, ValueError):
        pass
    raise JobSpecError(
        f"key column {column!r} holds {value!r}, not whole numbers; use an integer column as "
        "key, or time_key for a timestamp column",
        key="source.key",
    )


def _timestamp(value: Any, column: str | None) -> pd.Timestamp:
    try:
        ts = pd.Timestamp(value)
    except (TypeError, ValueError):
        ts = None
    if ts is None or ts is pd.NaT or isinstance(value, int | float):
        raise JobSpecError(
            f"time_key column {column!r} holds {value!r}, not timestamps; use a timestamp "
            "column, or key for an integer column",
            key="source.time_key",
        )
    return ts.tz_convert(UTC) if ts.tzinfo else ts


def _bound(iso: str) -> datetime:
    return pd.Timestamp(iso).to_pydatetime()


def _epoch(ts: pd.Timestamp) -> float:
    return ts.timestamp() if ts.tzinfo else ts.tz_localize(UTC).timestamp()
