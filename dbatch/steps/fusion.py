"""Consecutive SQL steps (Filter, Derive, Enrich) run as one DuckDB query per batch."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from ..context import BatchContext
from ..engine import query, query_batches
from ..errors import JobSpecError
from .base import Derive, Filter, Step, _quote, as_arrow
from .enrich import Enrich, _quarantine_unmatched

__all__ = ["FusedSql", "BatchStream", "fuse", "fusable"]

_FLAG = "__dbatch_matched"


def fuse(
    steps: Sequence[Step],
    keep: Sequence[str] | None = None,
    extra: Mapping[str, str] | None = None,
) -> list[Step]:
    """Replace each run of two or more fusable steps by one ``FusedSql`` step.

    Counts, quarantined rows and output are those of running the steps one
    after the other; only the Arrow <-> DuckDB round trips between them go.
    A run ends before a ``Filter``, or a ``Derive`` that replaces a column,
    placed after an ``Enrich`` that filters or quarantines unmatched rows (those
    rows must not reach later steps), and before a second such ``Enrich``.

    ``keep`` names the only columns whoever consumes the result reads (an
    aggregate's keys and metric columns): when the last step is a SQL step,
    only those leave DuckDB, with the ``extra`` columns (name -> SQL) added.

    Examples
    --------
    >>> fuse([Filter("a > 0"), Derive({"b": "a * 2"})])
    [FusedSql(steps=(Filter(where='a > 0'), Derive(columns={'b': 'a * 2'})), keep=None, extra=())]
    """
    out: list[Step] = []
    run: list[Step] = []

    def close(last: bool = False) -> None:
        if last and run and keep:
            out.append(FusedSql(tuple(run), keep=tuple(keep), extra=tuple((extra or {}).items())))
        elif len(run) > 1:
            out.append(FusedSql(tuple(run)))
        else:
            out.extend(run)
        run.clear()

    for step in steps:
        if not fusable(step):
            close()
            out.append(step)
            continue
        if run and not _may_follow(run, step):
            close()
        run.append(step)
    close(last=True)
    return out


def fusable(step: Step) -> bool:
    """Whether ``step`` can be part of a ``FusedSql`` query."""
    return type(step) in (Filter, Derive, Enrich)


def _guarded(run: Sequence[Step]) -> bool:
    return any(isinstance(s, Enrich) and s.unmatched != "keep" for s in run)


def _may_follow(run: Sequence[Step], step: Step) -> bool:
    if not _guarded(run):
        return True
    if isinstance(step, Filter):
        return False
    if isinstance(step, Enrich):
        return step.unmatched == "keep"
    return True  # a Derive: replacing columns is checked against the data in apply


@dataclass(frozen=True)
class FusedSql(Step):
    """Several Filter / Derive / Enrich steps compiled into one DuckDB query.

    Made by ``fuse``; applied like any step, to a table or to a source's ``Scan``.

    >>> FusedSql((Filter("a > 0"),), keep=("a",)).apply(pa.table({"a": [1, -1]}), ctx).num_rows  # doctest: +SKIP
    1
    """

    steps: tuple[Step, ...]
    keep: tuple[str, ...] | None = None
    extra: tuple[tuple[str, str], ...] = ()

    def token(self):
        return ["fused", [s.token() for s in self.steps], self.keep, list(self.extra)]

    def shared_objects(self):
        return [obj for s in self.steps for obj in s.shared_objects()]

    def apply(self, data, ctx: BatchContext):
        """Run the steps on a table, or on a source's ``Scan`` (a query over its files).

        Rows an ``Enrich`` finds no match for travel through the query flagged,
        and the later steps leave them alone.
        """
        compiled = self._compile(data, ctx)
        if not isinstance(compiled, _Compiled):
            return compiled  # the steps had to run in two parts
        out = query(compiled.sql, compiled.tables)
        if compiled.guard is None:
            ctx.filtered(compiled.rows_in - out.num_rows)
            return out
        flag = out.column(_FLAG)
        out = out.drop_columns([_FLAG])
        misses = _misses(flag)
        compiled.finish(ctx, out.num_rows, misses)
        return out.filter(flag) if misses else out

    def stream(self, data, ctx: BatchContext) -> BatchStream | pa.Table:
        """Like ``apply``, but the rows come as a ``BatchStream`` a chunk at a time.

        For a consumer that writes each chunk away (an aggregate's map side), so a
        batch's rows are never all in memory at once.
        """
        compiled = self._compile(data, ctx)
        if not isinstance(compiled, _Compiled):
            return compiled
        return BatchStream(compiled, ctx)

    def _compile(self, data, ctx: BatchContext):
        from ..sources.parquet_scan import Scan

        tables: dict[str, pa.Table] = {}
        hidden: list[str] = []  # flag columns carried through every stage
        if isinstance(data, Scan):
            cols, n_in = list(data.columns), data.rows
            sql = f"SELECT * FROM ({data.sql}) AS src"
        else:
            table = as_arrow(data)
            cols, n_in = list(table.column_names), table.num_rows
            tables["batch"] = table
            sql = "SELECT * FROM batch"
        guard: Enrich | None = None  # the Enrich whose unmatched rows are flagged
        guard_cols: list[str] = []
        guard_sql = ""
        for i, step in enumerate(self.steps):
            alive = _alive(hidden)
            if isinstance(step, Filter):
                cond = (
                    f"CASE WHEN {alive} THEN ({step.where}) ELSE TRUE END" if alive else step.where
                )
                sql = f"SELECT * FROM ({sql}) AS s{i} WHERE {cond}"
            elif isinstance(step, Derive):
                if guard is not None and any(c in cols for c in step.columns):
                    # Unmatched rows must keep their values: finish the steps before apart.
                    return self._split(i, data, ctx)
                sql, cols = _derive(sql, cols, step, i, alive)
            else:
                assert isinstance(step, Enrich)
                tables[f"lookup{i}"] = step.table.get(ctx)
                flag = step.unmatched != "keep"
                sql, cols = _enrich(sql, cols, step, i, flag=flag, hidden=hidden)
                if flag:
                    guard, guard_cols, guard_sql = step, list(cols), sql
                    hidden.append(_FLAG)
        if self.keep and all(c in cols for c in self.keep):
            picked = [_quote(c) for c in [*self.keep, *hidden]]
            picked += [f"{expr} AS {_quote(name)}" for name, expr in self.extra]
            sql = f"SELECT {', '.join(picked)} FROM ({sql}) AS kept"
        return _Compiled(sql, tables, n_in, guard, guard_cols, guard_sql)

    def _split(self, i: int, data, ctx: BatchContext):
        data = FusedSql(self.steps[:i]).apply(data, ctx)
        for step in fuse(self.steps[i:], keep=self.keep, extra=dict(self.extra)):
            data = step.apply(data, ctx)
        return data


@dataclass
class _Compiled:
    """The query of a ``FusedSql`` for one batch, and what to do with unmatched rows."""

    sql: str
    tables: dict[str, pa.Table]
    rows_in: int
    guard: Enrich | None  # the Enrich whose unmatched rows come flagged, if any
    guard_cols: list[str]
    guard_sql: str

    def finish(self, ctx: BatchContext, rows: int, misses: int) -> None:
        """Count what the filters dropped and set the unmatched rows aside.

        ``rows``: what the query returned, ``misses`` of them unmatched.
        """
        ctx.filtered(self.rows_in - rows)
        if misses == 0 or self.guard is None:
            return
        if self.guard.unmatched == "filter":
            ctx.filtered(misses)
        else:  # the unmatched rows as the Enrich saw them (a rare, second query)
            cols_sql = ", ".join(_quote(c) for c in self.guard_cols)
            bad_rows = query(
                f"SELECT {cols_sql} FROM ({self.guard_sql}) AS g WHERE NOT {_FLAG}", self.tables
            )
            _quarantine_unmatched(self.guard, bad_rows, ctx)


class BatchStream:
    """A batch's rows as record batches, read once; ``rows`` is final after the last one.

    Iterating runs the query; when it is exhausted the context gets the counts
    (and the unmatched rows of an ``Enrich``), exactly as ``FusedSql.apply`` gives them.
    """

    def __init__(self, compiled: _Compiled, ctx: BatchContext):
        self._compiled, self._ctx = compiled, ctx
        self._read = False
        self.rows = 0

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        return self.chunks()

    def chunks(self, rows: int = 1 << 17) -> Iterator[pa.RecordBatch]:
        """The rows, ``rows`` at a time (the last chunk may be smaller)."""
        if self._read:
            raise RuntimeError("a BatchStream can be read only once")
        self._read = True
        return self._chunks(rows)

    def _chunks(self, rows: int) -> Iterator[pa.RecordBatch]:
        c = self._compiled
        total = misses = 0
        for chunk in query_batches(c.sql, c.tables, rows):
            total += chunk.num_rows
            if c.guard is not None:
                flag = chunk.column(_FLAG)
                chunk = chunk.drop_columns([_FLAG])
                miss = _misses(flag)
                if miss:
                    misses += miss
                    chunk = chunk.filter(flag)
            self.rows += chunk.num_rows
            yield chunk
        c.finish(self._ctx, total, misses)


def _misses(flag) -> int:
    return int(pc.sum(pc.invert(flag).cast(pa.int64())).as_py() or 0)


def _alive(hidden: list[str]) -> str:
    """SQL true for the rows the steps apply to (not set aside by an earlier stage)."""
    return " AND ".join(hidden)


def _derive(sql: str, cols: list[str], step: Derive, i: int, alive: str):
    replaced = [c for c in cols if c in step.columns]
    star = f"* EXCLUDE ({', '.join(_quote(c) for c in replaced)})" if replaced else "*"
    exprs = ", ".join(
        (f"CASE WHEN {alive} THEN ({expr}) END" if alive else f"({expr})") + f" AS {_quote(name)}"
        for name, expr in step.columns.items()
    )
    new_cols = [c for c in cols if c not in step.columns] + list(step.columns)
    return f"SELECT {star}, {exprs} FROM ({sql}) AS s{i}", new_cols


def _enrich(sql: str, cols: list[str], step: Enrich, i: int, *, flag: bool, hidden: list[str]):
    missing = [k for k in step.on if k not in cols]
    if missing:
        raise JobSpecError(
            f"enrich: the batch has no column(s) {missing}; it has {cols}",
            key="steps.enrich.on",
        )
    keys = ", ".join(_quote(k) for k in step.on)
    kept = [c for c in cols if c not in step.columns]
    select = ", ".join(
        [
            *(f"b.{_quote(c)}" for c in kept),
            *(f"l.{_quote(c)}" for c in step.columns),
            *(f"b.{h}" for h in hidden),
        ]
    )
    if flag:
        select += f", l.__dbatch_match IS NOT NULL AS {_FLAG}"
        right = f"(SELECT *, TRUE AS __dbatch_match FROM lookup{i})"
    else:
        right = f"lookup{i}"
    sql = f"SELECT {select} FROM ({sql}) AS b LEFT JOIN {right} AS l USING ({keys})"
    return sql, kept + list(step.columns)
