"""Parquet files read whole by pyarrow (the load path; ``scan`` reads them inside a query)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ...context import BatchContext
from ...schema import row_json, type_name
from ...schema.types import widens
from .columns import check_columns

if TYPE_CHECKING:
    from .source import Files

__all__ = ["read_parquet"]


def read_parquet(source: Files, key: str, data: bytes, ctx: BatchContext) -> pa.Table | None:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(pa.BufferReader(data), use_threads=False)
    except (pa.ArrowInvalid, pa.ArrowException, OSError) as e:
        ctx.quarantine_file(key, "corrupt", f"not a readable Parquet file: {e}")
        return None
    if source.declared is None:
        ctx.read_rows(table.num_rows)
        return table
    ctx.read_rows(table.num_rows)
    if not check_columns(source, key, table.column_names, ctx, table.num_rows):
        return None
    table = table.select(source.declared.names)
    target = source.declared.arrow()
    for name, typ in zip(target.names, target.types, strict=True):
        have = table.schema.field(name).type
        if have == typ:
            continue
        if widens(have, typ):
            table = table.set_column(
                table.schema.get_field_index(name), name, pc.cast(table[name], typ)
            )
            continue
        ctx.rows_in -= table.num_rows
        ctx.quarantine_file(
            key,
            "schema_drift",
            f"column '{name}' is {type_name(have)} in the file, the schema says "
            f"{type_name(typ)}; fix the writer upstream or change the declared type",
        )
        return None
    lines = pa.array(np.arange(1, table.num_rows + 1, dtype=np.int64))  # row 1 is the first
    return source.declared.check_constraints(table, ctx, key, _rows_as_json(table), lines)


def _rows_as_json(table: pa.Table):
    """Row numbers (1 = the first row) -> the rows as JSON text (formats without raw lines)."""

    def raw_of(numbers: list) -> list:
        rows = table.take([n - 1 for n in numbers]).to_pylist()
        return [row_json(r) for r in rows]

    return raw_of
