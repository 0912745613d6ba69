"""What every file format shares: the declared columns present, and files of one batch combined."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pyarrow as pa

from ...context import BatchContext
from ...core import Batch

if TYPE_CHECKING:
    from .source import Files

__all__ = ["check_columns", "concat"]


def check_columns(
    source: Files, key: str, found: list[str], ctx: BatchContext, n_rows: int
) -> bool:
    assert source.declared is not None
    missing = [c for c in source.declared.names if c not in found]
    if missing:
        # As many unknown columns as missing ones: most likely renamed upstream.
        extra = [c for c in found if c not in source.declared.names]
        renamed = len(extra) == len(missing)
        ctx.rows_in -= n_rows
        ctx.quarantine_file(
            key,
            "renamed_columns" if renamed else "missing_columns",
            f"missing column(s) {missing}"
            + (f", unknown column(s) {extra} instead" if renamed else "")
            + f"; the file has {found}. "
            "Were columns renamed upstream? Fix the file or the schema, then run `dbatch replay`.",
        )
        return False
    return True


def concat(tables: list[pa.Table], ctx: BatchContext, batch: Batch) -> pa.Table:
    first = tables[0].schema
    same = [t for t in tables if t.schema.equals(first)]
    if len(same) == len(tables):
        return pa.concat_tables(tables)
    # Without a declared schema, files that disagree with the first one are set aside
    # rather than silently coerced.
    out = [tables[0]]
    for unit_table, unit in zip(tables[1:], batch.units[1:], strict=False):
        if unit_table.schema.equals(first):
            out.append(unit_table)
        else:
            ctx.rows_in -= unit_table.num_rows
            ctx.quarantine_file(
                unit.key,
                "schema_drift",
                f"columns {unit_table.schema.names} / types differ from the first file of the "
                "batch; declare a schema in the source so every file is read the same way",
            )
    return pa.concat_tables(out)
