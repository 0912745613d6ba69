"""JSON lines files: one object per line; lines that are not objects are bad rows."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from ...context import BatchContext
from .columns import check_columns

if TYPE_CHECKING:
    from .source import Files

__all__ = ["read_jsonl"]


def read_jsonl(source: Files, key: str, data: bytes, ctx: BatchContext) -> pa.Table | None:
    try:
        text = data.decode(source.encoding)
    except UnicodeDecodeError as e:
        ctx.quarantine_file(key, "encoding", f"not valid {source.encoding}: {e}")
        return None
    good, good_lines, good_raw = [], [], []
    bad_lines, bad_raw, bad_why = [], [], []
    for i, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            if not isinstance(rec, dict):
                raise ValueError("a JSON line must hold an object")
        except ValueError as e:
            bad_lines.append(i)
            bad_raw.append(line)
            bad_why.append(f"not a JSON object: {e}")
            continue
        good.append(rec)
        good_lines.append(i)
        good_raw.append(line)
    ctx.read_rows(len(good) + len(bad_lines))
    ctx.quarantine_rows(key, "json", bad_why, bad_raw, bad_lines)
    if source.declared is None:
        try:
            return pa.Table.from_pylist(good)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
            ctx.rows_in -= len(good)
            ctx.quarantine_file(key, "schema_drift", f"mixed value types: {e}; declare a schema")
            return None
    names = source.declared.names
    if good and not any(all(n in rec for n in names) for rec in good[:1]):
        present = sorted(set().union(*(rec.keys() for rec in good[:100])))
        if not check_columns(source, key, present, ctx, len(good)):
            return None
    as_text = {
        n: pa.array(
            [None if rec.get(n) is None else _json_scalar(rec.get(n)) for rec in good],
            pa.string(),
        )
        for n in names
    }
    table = pa.table(as_text) if good else pa.table({n: pa.array([], pa.string()) for n in names})
    by_line = dict(zip(good_lines, good_raw, strict=True))

    def raw_of(numbers: list) -> list:
        return [by_line.get(n) for n in numbers]

    lines = pa.array(good_lines, pa.int64())
    table, lines = source.declared.cast_strings(table, ctx, key, raw_of, lines)
    return source.declared.check_constraints(table, ctx, key, raw_of, lines)


def _json_scalar(v: Any) -> str:
    return v if isinstance(v, str) else json.dumps(v)
