"""Aggregate across batches: per-batch partials in hash buckets, one reduce task per bucket."""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc

from ..arrow import as_arrow
from ..compile.sql import BatchStream
from ..engine import query, quote_name
from ..errors import JobSpecError

__all__ = ["Aggregate"]

_METRIC = re.compile(r"^\s*(sum|count|mean|avg|min|max)\s*\(\s*(\*|[A-Za-z_][\w]*)\s*\)\s*$", re.I)


BUCKET = "__dbatch_bucket"  # a column the steps' query may add: each row's bucket
_KIND = b"dbatch.partial"  # schema metadata of a bucket file: b"raw" rows or b"pre" partials
_CHUNK = 1 << 17  # rows per record batch in bucket files: the reduce streams them


@dataclass(frozen=True)
class _Partial:
    """One partial result: a sum, count, min or max of a column (``None``: count(*))."""

    name: str
    kind: str
    column: str | None

    def on_rows(self) -> str:
        col = quote_name(self.column) if self.column else "*"
        if self.kind == "sum":
            return f"SUM(CAST({col} AS DOUBLE))"
        return f"{self.kind.upper()}({col})"

    def on_partials(self) -> str:
        if self.kind == "sum":
            return f"SUM({self.name})"
        if self.kind == "count":
            return f"CAST(SUM({self.name}) AS BIGINT)"
        return f"{self.kind.upper()}({self.name})"


def _stream(files: Sequence[str]) -> pa.RecordBatchReader:
    """One reader over the record batches of several IPC files, in a shared schema."""
    schemas = []
    for f in files:
        with ipc.open_file(f) as reader:
            schemas.append(reader.schema.remove_metadata())
    schema = pa.unify_schemas(schemas, promote_options="permissive")

    def batches():
        for f in files:
            # Mapped, not read: the record batches are views of the file, mapped one file at a time.
            with pa.memory_map(f) as source, ipc.open_file(source) as reader:
                for i in range(reader.num_record_batches):
                    batch = reader.get_batch(i)
                    yield batch.cast(schema) if not batch.schema.equals(schema) else batch

    return pa.RecordBatchReader.from_batches(schema, batches())


def _by_bucket(rows, bucket_of: pa.Array | pa.ChunkedArray | None, buckets: int) -> list:
    """``rows`` (a table or record batch) split into ``buckets`` pieces by ``bucket_of``.

    One stable sort by bucket and one gather, then zero-copy slices: a pass over
    the rows, where filtering once per bucket makes ``buckets`` passes.
    """
    if bucket_of is None:
        return [rows]
    import numpy as np

    counts = np.bincount(np.asarray(bucket_of), minlength=buckets)  # raises below 0
    if len(counts) > buckets:
        raise ValueError(f"bucket ids must lie in 0..{buckets - 1}")
    ordered = rows.take(pc.sort_indices(bucket_of))  # a stable sort: rows keep their order
    starts = np.concatenate([[0], np.cumsum(counts)])
    return [ordered.slice(int(starts[k]), int(counts[k])) for k in range(buckets)]


@dataclass(frozen=True)
class _Metric:
    name: str
    func: str  # sum | count | mean | min | max
    column: str | None  # None for count(*)


@dataclass(frozen=True, init=False)
class Aggregate:
    """Group rows of all batches by ``by`` and compute ``metrics``.

    Each batch writes partial results (pre-aggregated when that shrinks the
    data by more than half, raw projected rows otherwise; the physical plan
    decides it from a sample, see ``Pipeline.explain``) into ``buckets``
    files by a hash of the keys; after the last batch, one task per bucket
    combines them and writes its part of the output, so nothing large passes
    through the client and no single task combines every group.

    Parameters
    ----------
    by
        Group keys.
    metrics
        Output column -> ``sum(col)``, ``count(*)``, ``count(col)``,
        ``mean(col)``, ``min(col)`` or ``max(col)``.
    buckets
        Number of reduce tasks (default: one per planned batch of the job's first
        run, from 4 to 32 but at most one per 16 MiB of input; never from the
        cluster, so the output does not depend on it).
    sort
        Write the whole output in key order: the buckets' groups are merged by one
        last task into one file (per partition of the sink), so reading the output
        gives the rows sorted by ``by``. With ``False`` each bucket writes its own
        part, in no particular order (faster for large outputs). Either way re-runs
        write the same bytes.

    Examples
    --------
    >>> Aggregate(by=["account", "day"], metrics={"total": "sum(amount_usd)", "n": "count(*)"})
    Aggregate(by=('account', 'day'), metrics=('total=sum(amount_usd)', 'n=count(*)'), buckets=None, sort=True)
    """

    by: tuple[str, ...]
    metrics: tuple[_Metric, ...] = field(repr=False)
    buckets: int | None = None
    sort: bool = True

    def __init__(
        self,
        by: str | Sequence[str],
        metrics: Mapping[str, str],
        buckets: int | None = None,
        sort: bool = True,
    ):
        keys = (by,) if isinstance(by, str) else tuple(by)
        if not keys:
            raise JobSpecError("aggregate needs at least one key in 'by'", key="aggregate.by")
        if not metrics:
            raise JobSpecError("aggregate needs at least one metric", key="aggregate.metrics")
        parsed = []
        for name, spec in metrics.items():
            m = _METRIC.match(str(spec))
            if not m:
                raise JobSpecError(
                    f"{spec!r} is not a metric; write sum(col), count(*), count(col), "
                    "mean(col), min(col) or max(col)",
                    key=f"aggregate.metrics.{name}",
                )
            func = m.group(1).lower().replace("avg", "mean")
            col = None if m.group(2) == "*" else m.group(2)
            if col is None and func != "count":
                raise JobSpecError(f"{func}(*) is not defined", key=f"aggregate.metrics.{name}")
            parsed.append(_Metric(str(name), func, col))
        if buckets is not None and (not isinstance(buckets, int) or buckets < 1):
            raise JobSpecError("buckets must be a positive whole number", key="aggregate.buckets")
        object.__setattr__(self, "by", keys)
        object.__setattr__(self, "metrics", tuple(parsed))
        object.__setattr__(self, "buckets", buckets)
        object.__setattr__(self, "sort", bool(sort))

    def __repr__(self) -> str:
        ms = tuple(f"{m.name}={m.func}({m.column or '*'})" for m in self.metrics)
        return f"Aggregate(by={self.by}, metrics={ms}, buckets={self.buckets}, sort={self.sort})"

    def token(self):
        return [
            "aggregate",
            "partials-2",  # the layout of the bucket files; committed batches must match it
            list(self.by),
            [(m.name, m.func, m.column) for m in self.metrics],
            self.sort,
        ]

    # -- partial columns ------------------------------------------------------

    def input_columns(self) -> list[str]:
        """The columns of a batch the aggregate reads: the keys, then the metrics' columns."""
        cols = [*self.by, *(m.column for m in self.metrics if m.column)]
        return list(dict.fromkeys(cols))

    def bucket_column(self, buckets: int) -> dict[str, str]:
        """``{BUCKET: SQL}``: each row's bucket, for a query that ends where ``map_side`` starts."""
        if buckets <= 1:
            return {}
        keys = ", ".join(quote_name(k) for k in self.by)
        return {BUCKET: f"CAST(hash({keys}) % {buckets} AS INTEGER)"}

    def _partials(self) -> list[_Partial]:
        """The distinct partial results the metrics need (``mean`` shares ``sum`` and ``count``)."""
        wanted: dict[tuple[str, str | None], None] = {}
        for m in self.metrics:
            kinds = {"mean": ("sum", "count")}.get(m.func, (m.func,))
            for kind in kinds:
                wanted[(kind, m.column)] = None
        return [_Partial(f"p{i}", kind, col) for i, (kind, col) in enumerate(wanted)]

    def map_side(self, data, directory: Path, buckets: int, pre: bool | None = None) -> dict:
        """Write this batch's partials into ``buckets`` Arrow IPC files in ``directory``.

        ``pre``: write partial aggregates (True) or the batch's rows themselves,
        keys and metric columns only (False), as the physical plan decided from a
        sample; None decides from this batch's first rows (partial aggregates when
        grouping them more than halves them). The reduce side reads both. ``data``
        is a table, or a ``BatchStream`` whose chunks are written as they come.
        """
        if not isinstance(data, BatchStream):
            return self._map_table(as_arrow(data), directory, buckets, pre)
        # Chunks of about _CHUNK rows per bucket: the reduce reads few, large record batches.
        chunks = data.chunks(_CHUNK * buckets)
        first = next(chunks)  # there is always one, perhaps empty: it holds the schema
        self._check_columns(first.schema.names)
        if pre is None:
            pre = first.num_rows > 0 and self._worth_preaggregating(pa.Table.from_batches([first]))
        if pre:
            # Few groups: the partials are small, so the batch may be gathered for them.
            return self._map_table(
                pa.Table.from_batches([first, *chunks]), directory, buckets, True
            )
        columns = self.input_columns()
        schema = first.schema.remove_metadata()
        schema = pa.schema([schema.field(c) for c in columns], metadata={_KIND: b"raw"})
        rows = [0] * buckets
        with ExitStack() as stack:
            writers = [
                stack.enter_context(ipc.new_file(str(directory / f"bucket-{k:03d}.arrow"), schema))
                for k in range(buckets)
            ]
            for chunk in itertools.chain([first], chunks):
                part = pa.RecordBatch.from_arrays([chunk.column(c) for c in columns], schema=schema)
                pieces = _by_bucket(part, self._buckets_of(chunk, buckets), buckets)
                for k, (writer, piece) in enumerate(zip(writers, pieces, strict=True)):
                    if piece.num_rows:
                        writer.write_batch(piece)
                        rows[k] += piece.num_rows
        return {"buckets": buckets, "bucket_rows": rows, "preaggregated": False}

    def _check_columns(self, names: Sequence[str]) -> None:
        missing = [c for c in self.input_columns() if c not in names]
        if missing:
            raise JobSpecError(
                f"aggregate: the batch has no column(s) {missing}; it has "
                f"{[n for n in names if n != BUCKET]}",
                key="aggregate",
            )

    def _buckets_of(self, rows: pa.Table | pa.RecordBatch, buckets: int) -> pa.Array | None:
        """Each row's bucket: the column the steps' query added, or computed here."""
        if buckets <= 1:
            return None
        if BUCKET in rows.schema.names:
            return rows.column(BUCKET)
        keys = rows.select(list(self.by))
        if isinstance(keys, pa.RecordBatch):
            keys = pa.Table.from_batches([keys])
        sql = self.bucket_column(buckets)[BUCKET]
        return query(f"SELECT {sql} AS b FROM batch", {"batch": keys}).column("b")

    def _map_table(
        self, table: pa.Table, directory: Path, buckets: int, pre: bool | None = None
    ) -> dict:
        self._check_columns(table.column_names)
        keys = ", ".join(quote_name(k) for k in self.by)
        if pre is None:
            pre = table.num_rows > 0 and self._worth_preaggregating(table)
        pre = bool(pre) and table.num_rows > 0
        if pre:
            parts = self._partials()
            exprs = ", ".join(f"{p.on_rows()} AS {p.name}" for p in parts)
            batch = table.drop_columns([BUCKET]) if BUCKET in table.column_names else table
            partial = query(f"SELECT {keys}, {exprs} FROM batch GROUP BY {keys}", {"batch": batch})
            bucket_of = self._buckets_of(partial, buckets)
        else:
            partial = table.select(self.input_columns())
            bucket_of = self._buckets_of(table, buckets)
        kind = b"pre" if pre else b"raw"
        partial = partial.replace_schema_metadata({_KIND: kind})
        rows = []
        for k, piece in enumerate(_by_bucket(partial, bucket_of, buckets)):
            with ipc.new_file(str(directory / f"bucket-{k:03d}.arrow"), piece.schema) as w:
                w.write_table(piece, max_chunksize=_CHUNK)
            rows.append(piece.num_rows)
        return {"buckets": buckets, "bucket_rows": rows, "preaggregated": pre}

    def _worth_preaggregating(self, table: pa.Table) -> bool:
        keys = ", ".join(quote_name(k) for k in self.by)
        sample = table.select(list(self.by)).slice(0, 200_000)
        groups = (
            query(f"SELECT approx_count_distinct(hash({keys})) AS g FROM batch", {"batch": sample})
            .column("g")[0]
            .as_py()
        )
        return groups * 2 < sample.num_rows

    def reduce_side(self, files: Sequence[str | Path]) -> pa.Table:
        """Combine the partials of one bucket from every batch into final rows."""
        found = self.reduce_query(files)
        return self.empty_output() if found is None else query(*found)

    def reduce_query(
        self, files: Sequence[str | Path], *, ordered: bool | None = None
    ) -> tuple[str, dict] | None:
        """The query (SQL, tables) that combines one bucket's files; None if there are none.

        The files are streamed into DuckDB one record batch at a time, so memory
        follows the number of groups, not the number of batches. The rows come in
        key order when ``ordered`` (default: ``sort``).
        """
        raw: list[str] = []
        pre: list[str] = []
        for f in files:
            with ipc.open_file(str(f)) as reader:
                kind = (reader.schema.metadata or {}).get(_KIND, b"pre")
            (raw if kind == b"raw" else pre).append(str(f))
        if not raw and not pre:
            return None
        keys = ", ".join(quote_name(k) for k in self.by)
        parts = self._partials()
        tables = {}
        selects = []
        if raw:
            tables["raw"] = _stream(raw)
            exprs = ", ".join(f"{p.on_rows()} AS {p.name}" for p in parts)
            selects.append(f"SELECT {keys}, {exprs} FROM raw GROUP BY {keys}")
        if pre:
            tables["pre"] = _stream(pre)
            selects.append(f"SELECT {keys}, {', '.join(p.name for p in parts)} FROM pre")
        if raw and not pre:
            inner = selects[0]  # one pass: the rows' aggregates are final
        else:
            combine = ", ".join(f"{p.on_partials()} AS {p.name}" for p in parts)
            union = " UNION ALL BY NAME ".join(f"({s})" for s in selects)
            inner = f"SELECT {keys}, {combine} FROM ({union}) GROUP BY {keys}"
        by_key = {(p.kind, p.column): p.name for p in parts}
        outer = []
        for m in self.metrics:
            if m.func == "mean":
                s, c = by_key[("sum", m.column)], by_key[("count", m.column)]
                expr = f"CASE WHEN {c} > 0 THEN {s} / {c} END"
            else:
                expr = by_key[(m.func, m.column)]
            outer.append(f"{expr} AS {quote_name(m.name)}")
        order = f" ORDER BY {keys}" if (self.sort if ordered is None else ordered) else ""
        sql = f"SELECT {keys}, {', '.join(outer)} FROM ({inner}){order}"
        return sql, tables

    def sorted_query(self, files: Sequence[str | Path]) -> tuple[str, dict] | None:
        """The query (SQL, tables) over every bucket's final rows (Arrow IPC ``files``), in
        key order; None if there are none. DuckDB sorts them, spilling to disk if need be."""
        if not files:
            return None
        keys = ", ".join(quote_name(k) for k in self.by)
        return f"SELECT * FROM reduced ORDER BY {keys}", {
            "reduced": _stream([str(f) for f in files])
        }

    def empty_output(self) -> pa.Table:
        return pa.table({})
