"""Enrich: join each batch with a small lookup table that is sent to each worker once."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from ..context import BatchContext
from ..core import digest
from ..engine import query
from ..errors import JobSpecError
from .base import SharedObject, Step, _quote, as_arrow

__all__ = ["Enrich"]

_UNMATCHED = ("keep", "filter", "quarantine")


@dataclass(frozen=True, init=False)
class Enrich(Step):
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

    def apply(self, data, ctx: BatchContext):
        batch = as_arrow(data)
        lookup = self.table.get(ctx)
        missing = [k for k in self.on if k not in batch.column_names]
        if missing:
            raise JobSpecError(
                f"enrich: the batch has no column(s) {missing}; it has {batch.column_names}",
                key="steps.enrich.on",
            )
        keys = ", ".join(_quote(k) for k in self.on)
        cols = ", ".join(f"l.{_quote(c)}" for c in self.columns)
        kept = [c for c in batch.column_names if c not in self.columns]
        base = ", ".join(f"b.{_quote(c)}" for c in kept)
        matched = "l.__dbatch_match IS NOT NULL"
        sql = (
            f"SELECT {base}, {cols}, {matched} AS __dbatch_matched FROM batch b "
            f"LEFT JOIN (SELECT *, TRUE AS __dbatch_match FROM lookup) l USING ({keys})"
        )
        out = query(sql, {"batch": batch, "lookup": lookup})
        flag = out.column("__dbatch_matched")
        out = out.drop_columns(["__dbatch_matched"])
        if self.unmatched == "keep":
            return out
        import pyarrow.compute as pc

        misses = pc.invert(flag)
        n_miss = pc.sum(misses.cast(pa.int64())).as_py() or 0
        if n_miss == 0:
            return out
        if self.unmatched == "filter":
            ctx.filtered(n_miss)
        else:
            _quarantine_unmatched(self, out.filter(misses), ctx)
        return out.filter(flag)


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
