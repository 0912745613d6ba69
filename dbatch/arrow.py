"""Arrow conversion shared by sources, steps and sinks."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

__all__ = ["as_arrow", "count_rows", "empty_table"]


def as_arrow(data: Any) -> pa.Table:
    """A pyarrow Table from a Table, a RecordBatch or a pandas DataFrame.

    Examples
    --------
    >>> as_arrow(pa.record_batch({"a": [1, 2]})).num_rows
    2
    """
    if isinstance(data, pa.Table):
        return data
    if isinstance(data, pa.RecordBatch):
        return pa.Table.from_batches([data])
    import pandas as pd

    if isinstance(data, pd.DataFrame):
        return pa.Table.from_pandas(data, preserve_index=False)
    raise TypeError(
        f"a step returned {type(data).__name__}; return a pandas DataFrame or a pyarrow Table"
    )


def empty_table(schema: pa.Schema) -> pa.Table:
    """A table of ``schema`` with no rows.

    ``pa.Schema.empty_table`` imports pandas (about 35 MiB and 0.4 s in a driver
    that otherwise never needs it); a table from no record batches does not.

    Examples
    --------
    >>> empty_table(pa.schema([("a", pa.int64())])).num_rows
    0
    """
    return pa.Table.from_batches([], schema=schema)


def count_rows(data: Any, dim: str | None = None) -> int:
    """Rows of a table, or points along ``dim`` (else the first dimension) of an xarray Dataset.

    Examples
    --------
    >>> count_rows(pa.table({"a": [1, 2, 3]}))
    3
    """
    if isinstance(data, pa.Table):
        return data.num_rows
    if hasattr(data, "sizes"):  # an xarray Dataset: rows are points along the batch dimension
        if dim is not None and dim in data.sizes:
            return int(data.sizes[dim])
        dims = list(data.sizes.values())
        return int(dims[0]) if dims else 0
    return len(data)
