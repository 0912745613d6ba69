"""Text into declared types: whole columns at once, value by value only where that fails."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["cast_column", "cast_rowwise"]


def cast_column(arr: pa.Array, to: pa.DataType) -> pa.Array:
    """Cast a column; raises ``pa.ArrowInvalid`` when any value does not parse."""
    return _cast(arr, to)


def cast_rowwise(arr: pa.Array, to: pa.DataType) -> tuple[pa.Array, pa.Array]:
    """``(ok mask, values with nulls where not ok)``; see ``_cast_rowwise``."""
    return _cast_rowwise(arr, to)


def _cast(arr: pa.Array, to: pa.DataType) -> pa.Array:
    if pa.types.is_string(arr.type) and (pa.types.is_integer(to) or pa.types.is_floating(to)):
        arr = pc.utf8_trim_whitespace(arr)
        # An empty field is a missing value, not a parse error.
        arr = pc.if_else(pc.equal(arr, ""), pa.scalar(None, arr.type), arr)
    if pa.types.is_string(arr.type) and pa.types.is_boolean(to):
        low = pc.utf8_lower(pc.utf8_trim_whitespace(arr))
        low = pc.if_else(pc.equal(low, ""), pa.scalar(None, low.type), low)
        truthy = pc.is_in(low, value_set=pa.array(["true", "1", "t", "yes"]))
        falsy = pc.is_in(low, value_set=pa.array(["false", "0", "f", "no"]))
        if not pc.all(pc.or_(pc.or_(truthy, falsy), pc.is_null(low))).as_py():
            raise pa.ArrowInvalid("not a boolean")
        return pc.if_else(pc.is_null(low), pa.scalar(None, pa.bool_()), truthy)
    return pc.cast(arr, to, safe=True)


_NUMBER = {  # text a number cast surely accepts (after trimming); anything else is tried alone
    "int": r"^[+-]?[0-9]+$",
    "float": r"^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?$",
}


def _cast_rowwise(arr: pa.Array, to: pa.DataType) -> tuple[pa.Array, pa.Array]:
    """Cast value by value where needed: ``(ok mask, values with nulls where not ok)``.

    Numbers: values that look like numbers are cast at once and only the others
    one by one. Other types, or if that fails: chunks of 4096, split in halves
    down to single values where a chunk fails.
    """
    quick = _cast_plausible(arr, to)
    if quick is not None:
        return quick
    import numpy as np

    oks = np.ones(len(arr), dtype=bool)
    values: list[pa.Array] = []

    def cast(start: int, length: int) -> None:
        try:
            values.append(_cast(arr.slice(start, length), to))
            return
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            pass
        if length == 1:
            values.append(pa.nulls(1, to))
            oks[start] = False
            return
        half = length // 2
        cast(start, half)
        cast(start + half, length - half)

    step = 4096
    for start in range(0, len(arr), step):
        cast(start, min(step, len(arr) - start))
    merged = pa.concat_arrays(values) if values else pa.array([], to)
    return pa.array(oks, pa.bool_()), merged


def _cast_plausible(arr: pa.Array, to: pa.DataType) -> tuple[pa.Array, pa.Array] | None:
    if not pa.types.is_string(arr.type):
        return None
    if pa.types.is_integer(to):
        pattern = _NUMBER["int"]
    elif pa.types.is_floating(to):
        pattern = _NUMBER["float"]
    else:
        return None
    import numpy as np

    trimmed = pc.utf8_trim_whitespace(arr)
    plausible = pc.fill_null(
        pc.or_(pc.match_substring_regex(trimmed, pattern), pc.equal(trimmed, "")), True
    )
    try:
        values = _cast(pc.if_else(plausible, arr, pa.scalar(None, arr.type)), to)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None  # e.g. an integer out of range: the slow path finds it
    oks = plausible.to_numpy(zero_copy_only=False).copy()
    fixed: list[pa.Array] = []
    for i in np.flatnonzero(~oks):
        try:
            fixed.append(_cast(arr.slice(int(i), 1), to))
            oks[i] = True
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            pass
    if fixed:
        mask = np.zeros(len(arr), dtype=bool)
        repaired = [i for i in np.flatnonzero(~plausible.to_numpy(zero_copy_only=False)) if oks[i]]
        mask[repaired] = True
        values = pc.replace_with_mask(values, pa.array(mask), pa.concat_arrays(fixed))
    return pa.array(oks, pa.bool_()), values
