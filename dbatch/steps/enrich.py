"""Enrich: join each batch with a small lookup table that is sent to each worker once."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from ..arrow import as_arrow
from ..context import BatchContext
from ..core import digest
from ..engine import Guard, Relation, quote_name
from ..errors import JobSpecError
from .base import RelationStep, SharedObject

__all__ = ["Enrich"]

_UNMATCHED = ("keep", "filter", "quarantine")


@dataclass(frozen=True, init=False)
class Enrich(RelationStep):
    """Left-join each batch with ``lookup`` on ``on``.

    Parameters
    ----------
    lookup
        A pandas DataFrame, pyarrow Table, or the path of a CSV or Parquet file
        (read once, on the client). It travels to each worker once per run.
    on
        Key column(s) present in both.
    columns
        Lookup columns to add (default: all but the keys).
    unmatched
        What to do with rows that find no match: ``keep`` (nulls), ``filter``
        (drop and count) or ``quarantine`` (keep aside with the reason).

    Examples
    --------
    >>> Enrich(fx_rates, on=["currency", "day"], columns=["rate"])  # doctest: +SKIP
    """

    table: SharedObject = field(repr=False)
    on: tuple[str, ...] = ()
    columns: tuple[str, ...] = ()
    unmatched: str = "keep"

    def __init__(
        self,
        lookup: Any,
        on: str | Sequence[str],
        columns: Sequence[str] | None = None,
        unmatched: str = "keep",
    ):
        if unmatched not in _UNMATCHED:
            raise JobSpecError(
                f"unmatched must be one of {_UNMATCHED}", key="steps.enrich.unmatched"
            )
        table = _load_lookup(lookup)
        keys = (on,) if isinstance(on, str) else tuple(on)
        missing = [k for k in keys if k not in table.column_names]
        if missing:
            raise JobSpecError(
                f"lookup table has no column(s) {missing}; it has {table.column_names}",
                key="steps.enrich.on",
            )
        cols = tuple(columns) if columns else tuple(c for c in table.column_names if c not in keys)
        extra = [c for c in cols if c not in table.column_names]
        if extra:
            raise JobSpecError(f"lookup table has no column(s) {extra}", key="steps.enrich.columns")
        table = table.select([*keys, *cols]).combine_chunks()
        token = "lookup-" + digest(table.schema.to_string(), _table_digest(table))
        object.__setattr__(self, "table", SharedObject(table, token))
        object.__setattr__(self, "on", keys)
        object.__setattr__(self, "columns", cols)
        object.__setattr__(self, "unmatched", unmatched)

    def shared_objects(self):
        return [self.table]

    def token(self):
        return ["enrich", self.table.token, list(self.on), list(self.columns), self.unmatched]

    def to_relation(self, relation: Relation, index: int, ctx: BatchContext) -> Relation | None:
        """A left join with the lookup; unmatched rows travel on flagged, unless kept."""
        missing = [k for k in self.on if k not in relation.columns]
        if missing:
            raise JobSpecError(
                f"enrich: the batch has no column(s) {missing}; it has {list(relation.columns)}",
                key="steps.enrich.on",
            )
        guarded = self.unmatched != "keep"
        if guarded and relation.guard is not None:
            return None  # one step's set-aside rows per query
        name = f"lookup{index}"
        keys = ", ".join(quote_name(k) for k in self.on)
        kept = [c for c in relation.columns if c not in self.columns]
        select = ", ".join(
            [
                *(f"b.{quote_name(c)}" for c in kept),
                *(f"l.{quote_name(c)}" for c in self.columns),
                *(f"b.{quote_name(h)}" for h in relation.hidden()),
            ]
        )
        if guarded:
            select += f", l.__dbatch_match IS NOT NULL AS {_FLAG}"
            right = f"(SELECT *, TRUE AS __dbatch_match FROM {name})"
        else:
            right = name
        sql = f"SELECT {select} FROM ({relation.sql}) AS b LEFT JOIN {right} AS l USING ({keys})"
        columns = (*kept, *self.columns)
        guard = Guard(self, _FLAG, columns, sql) if guarded else relation.guard
        tables = {**relation.tables, name: self.table.get(ctx)}
        return Relation(sql, columns, tables, rows=relation.rows, guard=guard)

    def set_aside(self, count: int, rows: Callable[[], pa.Table], ctx: BatchContext) -> None:
        """Settle the ``count`` rows that found no lookup row: filter or quarantine them."""
        if self.unmatched == "filter":
            ctx.filtered(count)
        else:
            _quarantine_unmatched(self, rows(), ctx)


_FLAG = "__dbatch_matched"


def _quarantine_unmatched(step: Enrich, bad: pa.Table, ctx: BatchContext) -> None:
    """Set rows that found no lookup row aside, naming their keys."""
    key_text = [
        ", ".join(f"{k}={row[k]!r}" for k in step.on)
        for row in bad.select(list(step.on)).to_pylist()
    ]
    ctx.quarantine_rows(
        "enrich",
        "no_match",
        [f"no lookup row for {k}" for k in key_text],
        [json.dumps(r, default=str) for r in bad.to_pylist()],
    )


def _load_lookup(lookup: Any) -> pa.Table:
    if isinstance(lookup, (str, Path)):
        path = Path(lookup)
        if not path.exists():
            raise JobSpecError(
                f"lookup file {str(path)!r} does not exist", key="steps.enrich.lookup"
            )
        if path.suffix in (".parquet", ".pq"):
            import pyarrow.parquet as pq

            return pq.read_table(path)
        import pyarrow.csv as pacsv

        return pacsv.read_csv(path)
    try:
        return as_arrow(lookup)
    except TypeError:
        raise JobSpecError(
            "lookup must be a DataFrame, a pyarrow Table or a file path", key="steps.enrich.lookup"
        ) from None


def _table_digest(table: pa.Table) -> str:
    import pyarrow.ipc as ipc

    sink = pa.BufferOutputStream()
    with ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    return hashlib.sha256(sink.getvalue().to_pybytes()).hexdigest()
