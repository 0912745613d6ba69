"""Text into declared types: whole columns at once, value by value only where that fails.

Null markers are turned into nulls first (``DEFAULT_NULLS`` for non-string
columns, the markers a source or column declares otherwise), so a marker is a
missing value, never a bad row. Numbers and decimals are trimmed; booleans read
true/false, 1/0, t/f and yes/no; timestamps read ISO 8601, and text with ``Z`` or
an offset becomes UTC in a column without a zone.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

__all__ = [
    "DEFAULT_NULLS",
    "cast_column",
    "cast_rowwise",
    "nulls_for",
    "with_nulls",
    "is_text",
]

#: Text that reads as a missing value in a column that is not a string (Arrow's CSV defaults).
DEFAULT_NULLS: tuple[str, ...] = tuple(pacsv.ConvertOptions().null_values)

_CAST_ERRORS = (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError)


def is_text(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t)


def nulls_for(
    to: pa.DataType, column: Sequence[str] | None, source: Sequence[str] | None
) -> tuple[str, ...]:
    """The markers that read as null in a column of type ``to``.

    The column's own markers win, then the source's; with neither, a string column
    keeps its text as it is (``NA`` is the text NA) and any other column reads
    Arrow's defaults (``""``, ``NA``, ``N/A``, ``NULL``, ``NaN``, ``null``...) as null.

    Examples
    --------
    >>> nulls_for(pa.string(), None, None)
    ()
    >>> "NA" in nulls_for(pa.float64(), None, None)
    True
    >>> nulls_for(pa.string(), ["-"], None)
    ('-',)
    """
    if column is not None:
        return tuple(column)
    if source is not None:
        return tuple(source)
    return () if is_text(to) else DEFAULT_NULLS


def with_nulls(arr: pa.Array, markers: Sequence[str]) -> pa.Array:
    """``arr`` with every value that is one of ``markers`` (spaces around it aside) null."""
    if not markers or len(arr) == 0 or not pa.types.is_string(arr.type):
        return arr
    hit = pc.is_in(pc.utf8_trim_whitespace(arr), value_set=pa.array(list(markers), pa.string()))
    if not pc.any(hit).as_py():
        return arr
    return pc.if_else(hit, pa.scalar(None, arr.type), arr)


def cast_column(arr: pa.Array, to: pa.DataType) -> pa.Array:
    """Cast a text column; raises ``pa.ArrowInvalid`` when any value does not parse."""
    if not pa.types.is_string(arr.type):
        return pc.cast(arr, to, safe=True)
    if pa.types.is_integer(to) or pa.types.is_floating(to) or pa.types.is_decimal(to):
        return pc.cast(pc.utf8_trim_whitespace(arr), to, safe=True)
    if pa.types.is_boolean(to):
        return _boolean(arr)
    if pa.types.is_timestamp(to):
        return _timestamp(arr, to)
    if pa.types.is_time(to):
        stamps = pc.binary_join_element_wise("1970-01-01T", pc.utf8_trim_whitespace(arr), "")
        return pc.cast(pc.cast(stamps, pa.timestamp(to.unit), safe=True), to)
    if pa.types.is_date(to):
        return pc.cast(pc.utf8_trim_whitespace(arr), to, safe=True)
    return pc.cast(arr, to, safe=True)


def _boolean(arr: pa.Array) -> pa.Array:
    low = pc.utf8_lower(pc.utf8_trim_whitespace(arr))
    truthy = pc.is_in(low, value_set=pa.array(["true", "1", "t", "yes"]))
    falsy = pc.is_in(low, value_set=pa.array(["false", "0", "f", "no"]))
    if not pc.all(pc.or_(pc.or_(truthy, falsy), pc.is_null(low))).as_py():
        raise pa.ArrowInvalid("not a boolean")
    return pc.if_else(pc.is_null(low), pa.scalar(None, pa.bool_()), truthy)


def _timestamp(arr: pa.Array, to: pa.TimestampType) -> pa.Array:
    text = pc.utf8_trim_whitespace(arr)
    if to.tz is not None:
        # Text without an offset is an instant in UTC; with one, it says which.
        try:
            return pc.cast(text, to, safe=True)
        except _CAST_ERRORS:
            naive = pc.cast(text, pa.timestamp(to.unit), safe=True)
            return pc.assume_timezone(naive, "UTC").cast(to)
    try:
        return pc.cast(text, to, safe=True)
    except _CAST_ERRORS:
        # Z or an offset: the instant, in UTC, as a time without a zone.
        return pc.cast(text, pa.timestamp(to.unit, tz="UTC"), safe=True).cast(to)


_NUMBER = {  # text a number cast surely accepts (after trimming); anything else is tried alone
    "int": r"^[+-]?[0-9]+$",
    "float": r"^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?$",
}


def cast_rowwise(arr: pa.Array, to: pa.DataType) -> tuple[pa.Array, pa.Array]:
    """Cast value by value where needed: ``(ok mask, values with nulls where not ok)``.

    Numbers: values that look like numbers are cast at once and only the others
    one by one. Other types, or if that fails: chunks of 4096, split in halves
    down to single values where a chunk fails.
    """
    quick = _cast_plausible(arr, to)
    if quick is not None:
        return quick
    oks = np.ones(len(arr), dtype=bool)
    values: list[pa.Array] = []

    def cast(start: int, length: int) -> None:
        try:
            values.append(cast_column(arr.slice(start, length), to))
            return
        except _CAST_ERRORS:
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
    trimmed = pc.utf8_trim_whitespace(arr)
    plausible = pc.fill_null(pc.match_substring_regex(trimmed, pattern), True)
    try:
        values = cast_column(pc.if_else(plausible, arr, pa.scalar(None, arr.type)), to)
    except _CAST_ERRORS:
        return None  # e.g. an integer out of range: the slow path finds it
    oks = plausible.to_numpy(zero_copy_only=False).copy()
    fixed: list[pa.Array] = []
    for i in np.flatnonzero(~oks):
        try:
            fixed.append(cast_column(arr.slice(int(i), 1), to))
            oks[i] = True
        except _CAST_ERRORS:
            pass
    if fixed:
        mask = np.zeros(len(arr), dtype=bool)
        repaired = [i for i in np.flatnonzero(~plausible.to_numpy(zero_copy_only=False)) if oks[i]]
        mask[repaired] = True
        values = pc.replace_with_mask(values, pa.array(mask), pa.concat_arrays(fixed))
    return pa.array(oks, pa.bool_()), values
