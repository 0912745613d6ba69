"""Fetched database rows as Arrow: typed columns, and the values that do not fit set aside."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pyarrow as pa

from ...context import BatchContext
from ...errors import JobSpecError
from ...schema import parse_type

__all__ = ["Selection", "apply_dtypes", "to_arrow"]

_CONVERSION_ERRORS = (
    pa.ArrowInvalid,
    pa.ArrowTypeError,
    pa.ArrowNotImplementedError,
    OverflowError,
    TypeError,
    ValueError,
)


@dataclass(frozen=True)
class Selection:
    """What a load selects from: the columns, the split column and Arrow types where known."""

    selectable: Any
    columns: list[Any]
    split: Any
    types: dict[str, pa.DataType | None]


def to_arrow(
    rows: Sequence[Any],
    names: list[str],
    types: Mapping[str, pa.DataType | None],
    ctx: BatchContext,
    where: str,
) -> pa.Table:
    """One fetched chunk as an Arrow table; rows with a value that does not fit go to ``ctx``.

    Examples
    --------
    >>> from dbatch.core import Batch
    >>> ctx = BatchContext(batch=Batch(id="b", units=(), fingerprint="f"))
    >>> to_arrow([(1, "a"), ("x", "b")], ["id", "name"], {"id": pa.int64()}, ctx, "t").num_rows
    1
    >>> ctx.rows_quarantined
    1
    """
    columns = list(zip(*rows, strict=True)) if rows else [() for _ in names]
    arrays: dict[str, pa.Array] = {}
    bad: dict[int, str] = {}
    for name, values in zip(names, columns, strict=True):
        arrays[name] = _column(name, list(values), types.get(name), bad)
    table = pa.table(arrays)
    if not bad:
        return table
    idx = sorted(bad)
    raw = [json.dumps(dict(zip(names, rows[i], strict=True)), default=str) for i in idx]
    ctx.quarantine_rows(where, "type", [bad[i] for i in idx], raw)
    keep = pa.array([i not in bad for i in range(len(rows))])
    return table.filter(keep)


def apply_dtypes(table: pa.Table, dtypes: Mapping[str, str], time_key: str | None) -> pa.Table:
    """Cast the columns named in ``dtypes``; a time key that arrived as text becomes a timestamp.

    Examples
    --------
    >>> apply_dtypes(pa.table({"n": ["1"]}), {"n": "int64"}, None).schema.field("n").type
    DataType(int64)
    """
    dtypes = dict(dtypes)
    tk = time_key
    if tk and tk in table.column_names and pa.types.is_string(table.schema.field(tk).type):
        dtypes.setdefault(tk, "timestamp[us]")  # SQLite hands a query's timestamps over as text
    for name, typ in dtypes.items():
        if name in table.column_names:
            i = table.schema.get_field_index(name)
            try:
                table = table.set_column(i, name, table[name].cast(parse_type(typ)))
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
                raise JobSpecError(
                    f"column {name!r} cannot be read as {typ}: {e}", key=f"source.dtypes.{name}"
                ) from None
    return table


def _column(name: str, values: list[Any], typ: pa.DataType | None, bad: dict[int, str]):
    """One column of a fetched chunk as an Arrow array; values that do not fit go to ``bad``.

    Values of another Python type (dates that SQLite hands over as text) are
    converted with an Arrow cast; what cannot be converted is set aside.
    """
    if typ is None:
        try:
            return pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            first = next((v for v in values if v is not None), None)
            typ = pa.array([first]).type
    values = _prepare(values, typ)
    try:
        return pa.array(values, type=typ)
    except _CONVERSION_ERRORS:
        pass
    try:
        return pa.array(values).cast(typ)
    except _CONVERSION_ERRORS:
        pass
    good = []
    for i, v in enumerate(values):
        try:
            good.append(_one(v, typ))
        except _CONVERSION_ERRORS:
            bad.setdefault(i, f"column {name!r}: value {v!r} is not a valid {typ}")
            good.append(None)
    return pa.array(good, type=typ)


def _one(value: Any, typ: pa.DataType) -> Any:
    try:
        return pa.scalar(value, type=typ).as_py()
    except _CONVERSION_ERRORS:
        return pa.array([value]).cast(typ)[0].as_py()


def _prepare(values: list[Any], typ: pa.DataType) -> list[Any]:
    if pa.types.is_floating(typ):
        return [float(v) if isinstance(v, Decimal) else v for v in values]
    if pa.types.is_string(typ):
        return [
            v
            if v is None or isinstance(v, str)
            else json.dumps(v)
            if isinstance(v, dict | list)
            else str(v)
            for v in values
        ]
    return values
