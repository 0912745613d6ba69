"""The data chart's points: ``y`` combined per ``x`` (and ``by``) over the published files."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["AGGREGATIONS", "chart_frame"]

AGGREGATIONS = ("sum", "mean", "min", "max")

# How the partial aggregates of each file combine into the totals.
_AGAIN = {"sum": "sum", "count": "sum", "min": "min", "max": "max"}


def chart_frame(files: Sequence[Path], x: str, y: str, by: str | None, agg: str) -> pa.Table | None:
    """Columns ``x``, ``group`` and ``value``, sorted by ``x``; None when there are no files.

    One file is read at a time, so memory follows the number of groups, not of rows.
    Without ``by``, ``group`` is the name of ``y``; a null ``by`` is ``"(empty)"``.

    Examples
    --------
    >>> import pyarrow.parquet as pq, tempfile
    >>> part = Path(tempfile.mkdtemp()) / "part-0.parquet"
    >>> pq.write_table(pa.table({"day": [2, 1, 2], "usd": [1, 2, 3]}), part)
    >>> chart_frame([part], "day", "usd", None, "sum").to_pydict()
    {'x': [1, 2], 'group': ['usd', 'usd'], 'value': [2.0, 4.0]}
    """
    import pyarrow.parquet as pq

    keys = [x] if by is None else [x, by]
    needed = ("sum", "count") if agg == "mean" else (agg,)
    partials = []
    for f in files:
        table = pq.read_table(f, columns=[*keys, y])
        value = pc.cast(table[y], pa.float64())
        table = table.set_column(table.schema.get_field_index(y), y, value)
        partials.append(table.group_by(keys).aggregate([(y, a) for a in needed]))
    if not partials:
        return None
    combined = pa.concat_tables(partials, promote_options="permissive")
    totals = combined.group_by(keys).aggregate([(f"{y}_{a}", _AGAIN[a]) for a in needed])
    if agg == "mean":
        value = pc.divide(totals[f"{y}_sum_sum"], totals[f"{y}_count_sum"])
    else:
        value = totals[f"{y}_{agg}_{_AGAIN[agg]}"]
    group = (
        pc.fill_null(pc.cast(totals[by], pa.string()), "(empty)")
        if by
        else pa.array([y] * totals.num_rows, pa.string())
    )
    frame = pa.table({"x": totals[x], "group": group, "value": value})
    return frame.filter(pc.is_valid(frame["x"])).sort_by([("x", "ascending")])
