"""Aggregate across batches: per-batch partials in hash buckets, one reduce task per bucket."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc

from ..engine import query
from ..errors import JobSpecError
from .base import _quote, as_arrow

__all__ = ["Aggregate"]

_METRIC = re.compile(r"^\s*(sum|count|mean|avg|min|max)\s*\(\s*(\*|[A-Za-z_][\w]*)\s*\)\s*$", re.I)


@dataclass(frozen=True)
class _Metric:
    name: str
    func: str  # sum | count | mean | min | max
    column: str | None  # None for count(*)


@dataclass(frozen=True, init=False)
class Aggregate:
    """Group rows of all batches by ``by`` and compute ``metrics``.

    Each batch writes partial results (pre-aggregated when that shrinks the
    data by more than half, raw projected rows otherwise) into ``buckets``
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
        Number of reduce tasks (default: the cluster's worker threads).
    sort
        Sort the output by the keys, so that re-runs are byte-identical.

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
            list(self.by),
            [(m.name, m.func, m.column) for m in self.metrics],
            self.sort,
        ]

    # -- partial columns ------------------------------------------------------

    def _partials(self) -> list[tuple[str, str, str]]:
        """(partial column, expression on raw rows, expression on partial rows)."""
        out = []
        for i, m in enumerate(self.metrics):
            col = _quote(m.column) if m.column else None
            if m.func in ("sum", "mean"):
                out.append((f"s{i}", f"CAST({col} AS DOUBLE)", f"SUM(CAST({col} AS DOUBLE))"))
            if m.func in ("count", "mean"):
                raw = "CAST(1 AS BIGINT)" if col is None else f"CAST({col} IS NOT NULL AS BIGINT)"
                agg = "COUNT(*)" if col is None else f"COUNT({col})"
                if m.func == "mean":
                    raw, agg = f"CAST({col} IS NOT NULL AS BIGINT)", f"COUNT({col})"
                out.append((f"c{i}", raw, agg))
            if m.func in ("min", "max"):
                out.append((f"x{i}", col, f"{m.func.upper()}({col})"))
        return out

    def map_side(self, data, directory: Path, buckets: int) -> dict:
        """Write this batch's partials into ``buckets`` Arrow IPC files in ``directory``."""
        table = as_arrow(data)
        missing = [c for c in self.by if c not in table.column_names] + [
            m.column for m in self.metrics if m.column and m.column not in table.column_names
        ]
        if missing:
            raise JobSpecError(
                f"aggregate: the batch has no column(s) {missing}; it has {table.column_names}",
                key="aggregate",
            )
        keys = ", ".join(_quote(k) for k in self.by)
        parts = self._partials()
        pre = table.num_rows > 0 and self._worth_preaggregating(table)
        if pre:
            exprs = ", ".join(f"{agg} AS {name}" for name, _, agg in parts)
            sql = f"SELECT {keys}, {exprs} FROM batch GROUP BY {keys}"
        else:
            exprs = ", ".join(f"{raw} AS {name}" for name, raw, _ in parts)
            sql = f"SELECT {keys}, {exprs} FROM batch"
        sql = f"SELECT *, CAST(hash({keys}) % {buckets} AS INTEGER) AS __bucket FROM ({sql})"
        partial = query(sql, {"batch": table})
        bucket = partial.column("__bucket")
        partial = partial.drop_columns(["__bucket"])
        rows = []
        for k in range(buckets):
            piece = partial.filter(pc.equal(bucket, k)) if buckets > 1 else partial
            with ipc.new_file(str(directory / f"bucket-{k:03d}.arrow"), piece.schema) as w:
                w.write_table(piece)
            rows.append(piece.num_rows)
        return {"buckets": buckets, "bucket_rows": rows, "preaggregated": pre}

    def _worth_preaggregating(self, table: pa.Table) -> bool:
        keys = ", ".join(_quote(k) for k in self.by)
        sample = table.slice(0, 200_000)
        groups = (
            query(f"SELECT approx_count_distinct(hash({keys})) AS g FROM batch", {"batch": sample})
            .column("g")[0]
            .as_py()
        )
        return groups * 2 < sample.num_rows

    def reduce_side(self, files: Sequence[str | Path]) -> pa.Table:
        """Combine the partials of one bucket from every batch into final rows."""
        tables = []
        for f in files:
            with pa.memory_map(str(f)) as source:
                tables.append(ipc.open_file(source).read_all())
        if not tables:
            return self.empty_output()
        table = pa.concat_tables(tables)
        keys = ", ".join(_quote(k) for k in self.by)
        parts = self._partials()
        combine = {
            name: (
                f"MIN({name})"
                if agg.startswith("MIN")
                else f"MAX({name})"
                if agg.startswith("MAX")
                else f"SUM({name})"
            )
            for name, _, agg in parts
        }
        inner = ", ".join(f"{expr} AS {name}" for name, expr in combine.items())
        outer = []
        for i, m in enumerate(self.metrics):
            n = _quote(m.name)
            if m.func == "sum":
                outer.append(f"s{i} AS {n}")
            elif m.func == "count":
                outer.append(f"c{i} AS {n}")
            elif m.func == "mean":
                outer.append(f"CASE WHEN c{i} > 0 THEN s{i} / c{i} END AS {n}")
            else:
                outer.append(f"x{i} AS {n}")
        order = f" ORDER BY {keys}" if self.sort else ""
        sql = (
            f"SELECT {keys}, {', '.join(outer)} FROM "
            f"(SELECT {keys}, {inner} FROM partials GROUP BY {keys}){order}"
        )
        return query(sql, {"partials": table})

    def empty_output(self) -> pa.Table:
        return pa.table({})
