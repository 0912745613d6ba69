"""The compiler: a run of SQL steps over a batch becomes as few DuckDB queries as it can.

Each SQL step says once how it extends a relation (``SqlStep.to_relation``);
this module chains them, runs the result, and settles the counts. A step that
cannot extend the query so far (it may not follow rows an earlier step set
aside) starts the next query, which reads the previous one's result. Running
one step alone is compiling a list of one, so fused and unfused steps count,
quarantine and return exactly the same.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from ..arrow import as_arrow
from ..context import BatchContext
from ..engine import Relation, query, query_batches, quote_name
from ..protocols import SqlStep

__all__ = ["SqlChain", "BatchStream", "Query", "start", "describe_steps", "lookup_tables"]

#: Rows per record batch when a query's result is streamed.
CHUNK_ROWS = 1 << 17


def start(data: Any) -> Relation:
    """The relation a chain of steps begins from: a table, or a source's scan of its files."""
    if isinstance(data, Relation):
        return dataclasses.replace(data, sql=f"SELECT * FROM ({data.sql}) AS src")
    table = as_arrow(data)
    return Relation(
        "SELECT * FROM batch",
        tuple(table.column_names),
        {"batch": table},
        rows=table.num_rows,
    )


@dataclass(frozen=True)
class Query:
    """One compiled query: the relation to run and how many rows it starts from."""

    relation: Relation
    rows_in: int
    steps: tuple[SqlStep, ...]

    def run(self, ctx: BatchContext) -> pa.Table:
        rel = self.relation
        out = query(rel.sql, dict(rel.tables))
        if rel.guard is None:
            ctx.filtered(self.rows_in - out.num_rows)
            return out
        flag = out.column(rel.guard.flag)
        out = out.drop_columns([rel.guard.flag])
        misses = _misses(flag)
        self.finish(ctx, out.num_rows, misses)
        return out.filter(flag) if misses else out

    def stream(self, ctx: BatchContext) -> BatchStream:
        return BatchStream(self, ctx)

    def finish(self, ctx: BatchContext, rows: int, misses: int) -> None:
        """Count what the query dropped, and let the guarding step settle the rows it set aside.

        ``rows``: what the query returned, ``misses`` of them set aside.
        """
        ctx.filtered(self.rows_in - rows)
        guard = self.relation.guard
        if misses == 0 or guard is None:
            return
        columns = ", ".join(quote_name(c) for c in guard.columns)
        tables = dict(self.relation.tables)

        def rows_set_aside() -> pa.Table:  # a second, rare query: the rows as the step saw them
            sql = f"SELECT {columns} FROM ({guard.sql}) AS g WHERE NOT {guard.flag}"
            return query(sql, tables)

        guard.step.set_aside(misses, rows_set_aside, ctx)

    def describe(self) -> str:
        return " -> ".join(_name(s) for s in self.steps) or "projection"


@dataclass(frozen=True)
class SqlChain:
    """Consecutive SQL steps compiled together; what the optimizer calls a SQL stage.

    ``keep`` names the only columns whoever reads the result needs (an aggregate's
    keys and metric columns): the last query hands back just those, plus the
    ``extra`` columns (name -> SQL), when the result has them all.

    Examples
    --------
    >>> from dbatch.steps import Filter, Derive
    >>> chain = SqlChain((Filter("a > 0"), Derive({"b": "a * 2"})))
    >>> chain.apply(pa.table({"a": [1, -1]}), ctx).to_pydict()  # doctest: +SKIP
    {'a': [1], 'b': [2]}
    """

    steps: tuple[SqlStep, ...]
    keep: tuple[str, ...] | None = None
    extra: tuple[tuple[str, str], ...] = ()

    def apply(self, data: Any, ctx: BatchContext) -> pa.Table:
        return self.compile(data, ctx).run(ctx)

    def stream(self, data: Any, ctx: BatchContext) -> BatchStream:
        """Like ``apply``, but the rows come a chunk at a time, for a consumer that writes
        each chunk away (an aggregate's map side): a batch is never all in memory."""
        return self.compile(data, ctx).stream(ctx)

    def compile(self, data: Any, ctx: BatchContext) -> Query:
        """The last query of the chain, every query before it run already."""
        relation = start(data)
        rows_in = _rows_of(relation)
        pending = list(self.steps)
        while True:
            current, held = _extend(relation, pending, ctx)
            if not pending:
                return Query(self._kept(current), rows_in, held)
            table = Query(current, rows_in, held).run(ctx)
            relation, rows_in = start(table), table.num_rows

    def groups(self, columns: Sequence[str], ctx: BatchContext) -> list[tuple[SqlStep, ...]]:
        """The steps of each query the chain runs over a batch with ``columns``.

        Only the SQL is built (over an empty table), nothing runs.
        """
        import pyarrow as pa

        pending = list(self.steps)
        relation = start(pa.table({c: pa.array([], pa.null()) for c in columns}))
        found = []
        while pending:
            current, held = _extend(relation, pending, ctx)
            found.append(held)
            relation = dataclasses.replace(relation, columns=current.columns)
        return found

    def _kept(self, rel: Relation) -> Relation:
        if not self.keep or not all(c in rel.columns for c in self.keep):
            return rel
        picked = [quote_name(c) for c in [*self.keep, *rel.hidden()]]
        picked += [f"{expr} AS {quote_name(name)}" for name, expr in self.extra]
        sql = f"SELECT {', '.join(picked)} FROM ({rel.sql}) AS kept"
        columns = (*self.keep, *(name for name, _ in self.extra))
        return dataclasses.replace(rel, sql=sql, columns=columns)

    def token(self) -> list[Any]:
        return ["sql-chain", [s.token() for s in self.steps], self.keep, list(self.extra)]

    def shared_objects(self) -> list[Any]:
        return [obj for s in self.steps for obj in s.shared_objects()]


def _extend(
    relation: Relation, pending: list[SqlStep], ctx: BatchContext
) -> tuple[Relation, tuple[SqlStep, ...]]:
    """Add steps from ``pending`` to ``relation`` while they fit in one query (taken off it)."""
    current, held = relation, list[SqlStep]()
    while pending:
        extended = pending[0].to_relation(current, len(held), ctx)
        if extended is None:
            break
        current = extended
        held.append(pending.pop(0))
    if not held and pending:
        raise RuntimeError(f"{pending[0]!r} cannot begin a query")
    return current, tuple(held)


def _rows_of(relation: Relation) -> int:
    if relation.rows is None:
        raise ValueError("a relation a chain starts from must know its row count")
    return relation.rows


class BatchStream:
    """A batch's rows as record batches, read once; ``rows`` is final after the last one.

    Iterating runs the query; when it is exhausted the context gets the counts
    (and the rows a step set aside), exactly as ``Query.run`` gives them.
    """

    def __init__(self, compiled: Query, ctx: BatchContext):
        self._query, self._ctx = compiled, ctx
        self._read = False
        self.rows = 0

    @property
    def schema_names(self) -> tuple[str, ...]:
        return self._query.relation.columns

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        return self.chunks()

    def chunks(self, rows: int = CHUNK_ROWS) -> Iterator[pa.RecordBatch]:
        """The rows, ``rows`` at a time (the last chunk may be smaller)."""
        if self._read:
            raise RuntimeError("a BatchStream can be read only once")
        self._read = True
        return self._chunks(rows)

    def _chunks(self, rows: int) -> Iterator[pa.RecordBatch]:
        rel = self._query.relation
        total = misses = 0
        for chunk in query_batches(rel.sql, dict(rel.tables), rows):
            total += chunk.num_rows
            if rel.guard is not None:
                flag = chunk.column(rel.guard.flag)
                chunk = chunk.drop_columns([rel.guard.flag])
                miss = _misses(flag)
                if miss:
                    misses += miss
                    chunk = chunk.filter(flag)
            self.rows += chunk.num_rows
            yield chunk
        self._query.finish(self._ctx, total, misses)


def _misses(flag: pa.Array | pa.ChunkedArray) -> int:
    return int(pc.sum(pc.invert(flag).cast(pa.int64())).as_py() or 0)


def _name(step: Any) -> str:
    return type(step).__name__


def describe_steps(steps: Sequence[Any]) -> str:
    """``Filter -> Derive -> Enrich`` for an explain line."""
    return " -> ".join(_name(s) for s in steps)


def lookup_tables(relation: Relation, name: str, table: Any) -> Mapping[str, Any]:
    """The relation's tables plus ``name`` -> ``table`` (a lookup a step joins)."""
    return {**relation.tables, name: table}
