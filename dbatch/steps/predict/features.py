"""Feature preparation: columns converted to numbers, rows that cannot be scored, model inputs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .checks import wants_frame
from .pytorch import is_torch

__all__ = ["feature_columns", "model_inputs", "keep_mask"]

_NUMBER = r"^\s*[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?\s*$|^\s*[+-]?(?:inf|infinity|nan)\s*$"


def feature_columns(
    table: pa.Table, features: Sequence[str], dtype: str | None, nulls: str
) -> tuple[list[pa.ChunkedArray], dict[int, str]]:
    """The feature columns, converted; and the rows that cannot be scored, with why.

    Examples
    --------
    >>> table = pa.table({"a": ["1.5", "x"]})
    >>> columns, bad = feature_columns(table, ["a"], "float64", "quarantine")
    >>> columns[0].to_pylist(), bad
    ([1.5, None], {1: "feature 'a' is not a number: 'x'"})
    """
    bad: dict[int, str] = {}
    columns = []
    target = None if dtype is None else pa.from_numpy_dtype(np.dtype(dtype))
    for name in features:
        col = table.column(name)
        if isinstance(col.type, pa.DictionaryType):
            col = pc.cast(col, col.type.value_type)
        if target is not None:
            col, wrong = _to_number(col, target)
            for i in np.flatnonzero(wrong):
                bad.setdefault(
                    int(i), f"feature {name!r} is not a number: {_value(table, name, int(i))}"
                )
        if nulls == "quarantine":
            for i in np.flatnonzero(_is_missing(col)):
                bad.setdefault(int(i), f"feature {name!r} is missing (null or NaN)")
        columns.append(col)
    return columns, bad


def model_inputs(
    model: Any, features: Sequence[str], columns: list[pa.ChunkedArray], dtype: str | None
) -> Any:
    """The whole batch in the form the model takes: a tensor's array, an array or a DataFrame."""
    torch = is_torch(model)
    n = len(columns[0]) if columns else 0
    if torch or (dtype is not None and not wants_frame(model)):
        out = np.empty((n, len(columns)), dtype=np.float32 if torch else np.dtype(dtype))
        for j, c in enumerate(columns):
            out[:, j] = c.to_numpy()
        return out
    import pandas as pd

    if dtype is None:
        return pd.DataFrame({n: c.to_pandas() for n, c in zip(features, columns, strict=True)})
    # One copy of the features, laid out as pandas would stack them (a column after another),
    # wrapped without another copy.
    stacked = np.empty((len(columns), n), dtype=np.dtype(dtype))
    for j, c in enumerate(columns):
        stacked[j] = c.to_numpy()
    return pd.DataFrame(stacked.T, columns=list(features), copy=False)


def keep_mask(n: int, bad: dict[int, str]) -> pa.Array | None:
    """A filter mask that drops the rows of ``bad``; None when there are none."""
    if not bad:
        return None
    keep = np.ones(n, dtype=bool)
    keep[list(bad)] = False
    return pa.array(keep)


def _to_number(col: pa.ChunkedArray, target: pa.DataType) -> tuple[pa.ChunkedArray, np.ndarray]:
    """Cast to ``target``; values that are not numbers become null and are flagged."""
    n = len(col)
    t = col.type
    if pa.types.is_floating(t) or pa.types.is_integer(t) or pa.types.is_boolean(t):
        return pc.cast(col, target, safe=False), np.zeros(n, dtype=bool)
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        ok = pc.fill_null(pc.match_substring_regex(col, _NUMBER, ignore_case=True), True)
        ok_np = ok.to_numpy(zero_copy_only=False)
        text = col if ok_np.all() else pc.if_else(ok, col, pa.scalar(None, t))
        return pc.cast(pc.utf8_trim_whitespace(text), target), ~ok_np
    if pa.types.is_decimal(t):
        return pc.cast(col, target, safe=False), np.zeros(n, dtype=bool)
    return pa.chunked_array([pa.nulls(n, target)]), pc.invert(pc.is_null(col)).to_numpy(
        zero_copy_only=False
    )


def _is_missing(col: pa.ChunkedArray) -> np.ndarray:
    if pa.types.is_floating(col.type):
        return pc.is_null(col, nan_is_null=True).to_numpy(zero_copy_only=False)
    return pc.is_null(col).to_numpy(zero_copy_only=False)


def _value(table: pa.Table, name: str, i: int) -> str:
    return repr(table.column(name)[int(i)].as_py())[:200]
