"""An API's records as an Arrow table: JSON objects kept, declared columns cast and checked."""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa

from ...context import BatchContext
from ...errors import SourceError
from ...schema import Schema

__all__ = ["records_table"]


def records_table(
    records: list[Any], schema: Schema | None, ctx: BatchContext, where: str, what: str
) -> pa.Table:
    """The records of ``where`` as a table; non-objects and misfits go to ``ctx``.

    Without a ``schema`` the types are inferred; ``what`` names the source in errors.

    Examples
    --------
    >>> from dbatch.core import Batch
    >>> ctx = BatchContext(batch=Batch(id="b", units=(), fingerprint="f"))
    >>> records_table([{"id": 1}, 7], None, ctx, "pages:1-1", "http api").num_rows
    1
    """
    good = [r for r in records if isinstance(r, dict)]
    if len(good) != len(records):
        lines = [i + 1 for i, r in enumerate(records) if not isinstance(r, dict)]
        ctx.quarantine_rows(
            where,
            "json",
            "a record must be a JSON object",
            [json.dumps(records[i - 1]) for i in lines],
            lines,
        )
    if schema is None:
        try:
            return pa.Table.from_pylist(good)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
            raise SourceError(
                f"{what}: records of {where} mix value types ({e}); declare a schema in the source"
            ) from None
    numbers = [i + 1 for i, r in enumerate(records) if isinstance(r, dict)]
    by_number = dict(zip(numbers, good, strict=True))
    text = pa.table(
        {n: pa.array([_as_text(r.get(n)) for r in good], pa.string()) for n in schema.names}
    )

    def raw_of(nums: list) -> list:
        return [json.dumps(by_number.get(k), default=str) for k in nums]

    lines = pa.array(numbers, pa.int64())
    table, lines = schema.cast_strings(text, ctx, where, raw_of, lines)
    return schema.check_constraints(table, ctx, where, raw_of, lines)


def _as_text(v: Any) -> str | None:
    if v is None:
        return None
    return v if isinstance(v, str) else json.dumps(v)
