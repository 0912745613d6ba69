"""Messages -> an Arrow table: JSON lines, CSV lines or Arrow IPC, with the declared schema.

A message is one record (a JSON object or a CSV line without header), or an Arrow
IPC stream of record batches. The fast path parses every message of a batch at
once with pyarrow; when that fails, each message is parsed alone and the ones
that cannot be read are quarantined with their offset and raw bytes.
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Sequence
from typing import Any

import pyarrow as pa

from ...arrow import empty_table
from ...context import BatchContext
from ...errors import JobSpecError
from ...schema import Schema

__all__ = ["FORMATS", "Message", "decode", "raw_text"]

FORMATS = ("json", "csv", "arrow")

#: One message: its offset (a stream id or sequence number) and its payload.
Message = tuple[Any, bytes]


def raw_text(payload: bytes) -> str:
    """The payload as the quarantine keeps it: its text, or ``base64:...`` when not UTF-8.

    Examples
    --------
    >>> raw_text(b'{"a": 1}'), raw_text(b"\\xff\\x00")
    ('{"a": 1}', 'base64:/wA=')
    """
    try:
        return payload.decode("utf-8")
    except UnicodeDecodeError:
        return "base64:" + base64.b64encode(payload).decode("ascii")


def decode(
    messages: Sequence[Message], fmt: str, schema: Schema | None, ctx: BatchContext, where: str
) -> pa.Table:
    """The good records of ``messages``; the bad ones go to ``ctx`` (counted as read)."""
    if fmt != "arrow":  # an Arrow message holds many rows, counted as they are read
        ctx.read_rows(len(messages))
    if fmt == "json":
        return _json(messages, schema, ctx, where)
    if fmt == "csv":
        if schema is None:
            raise JobSpecError("CSV messages need a schema: their columns in order", key="source")
        return _csv(messages, schema, ctx, where)
    if fmt == "arrow":
        return _arrow(messages, schema, ctx, where)
    raise JobSpecError(f"unknown format {fmt!r}; use one of {FORMATS}", key="source.format")


def _checked(
    table: pa.Table, messages: Sequence[Message], schema: Schema | None, ctx, where, cast: bool
) -> pa.Table:
    """Cast text columns (when ``cast``) and apply the schema's rules.

    A bad row's line is its message's offset when offsets are numbers (a
    sequence), else its place in the batch (its offset is in the reason).
    """
    if schema is None:
        return table
    offsets = [m[0] for m in messages]
    if not all(isinstance(o, int) for o in offsets):
        offsets = list(range(len(messages)))
    payloads = dict(zip(offsets, (m[1] for m in messages), strict=True))

    def raw_of(numbers: list) -> list:
        return [raw_text(payloads[n]) if n in payloads else None for n in numbers]

    lines = pa.array(offsets, pa.int64())
    if cast:
        table, lines = schema.cast_strings(table, ctx, where, raw_of, lines)
    return schema.check_constraints(table, ctx, where, raw_of, lines)


def _json(messages, schema: Schema | None, ctx: BatchContext, where: str) -> pa.Table:
    import pyarrow.json as pj

    if not messages:
        return empty_table(schema.arrow()) if schema is not None else pa.table({})
    payload = b"\n".join(m[1] for m in messages)
    if payload.count(b"\n") == len(messages) - 1:  # one line per message: parse them all at once
        try:
            options = pj.ParseOptions(
                explicit_schema=schema.arrow() if schema is not None else None,
                unexpected_field_behavior="ignore" if schema is not None else "infer",
            )
            read = pj.ReadOptions(block_size=max(1 << 20, len(payload) + 1))
            table = pj.read_json(io.BytesIO(payload), read_options=read, parse_options=options)
            if table.num_rows == len(messages):
                if schema is not None:
                    table = table.select(schema.names)
                return _checked(table, messages, schema, ctx, where, cast=False)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            pass
    return _json_one_by_one(messages, schema, ctx, where)


def _json_one_by_one(messages, schema: Schema | None, ctx: BatchContext, where) -> pa.Table:
    good: list[dict] = []
    kept: list[Message] = []
    for offset, payload in messages:
        try:
            record = json.loads(payload)
            if not isinstance(record, dict):
                raise ValueError("a message must hold one JSON object")
        except (ValueError, UnicodeDecodeError) as e:
            _bad(ctx, where, "json", offset, payload, f"not a JSON object: {e}")
            continue
        good.append(record)
        kept.append((offset, payload))
    if schema is None:
        try:
            return pa.Table.from_pylist(good)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
            raise JobSpecError(
                f"{where}: the messages' fields change type ({e}); declare a schema",
                key="source.schema",
            ) from None
    text = {n: pa.array([_scalar(r.get(n)) for r in good], pa.string()) for n in schema.names}
    return _checked(pa.table(text), kept, schema, ctx, where, cast=True)


def _csv(messages, schema: Schema, ctx: BatchContext, where: str) -> pa.Table:
    import pyarrow.csv as pc

    names = schema.names
    kept: list[Message] = []
    rows: list[list[str | None]] = []
    payload = b"\n".join(m[1] for m in messages)
    table = None
    if messages and payload.count(b"\n") == len(messages) - 1:
        try:
            table = pc.read_csv(
                io.BytesIO(payload),
                read_options=pc.ReadOptions(column_names=names),
                convert_options=pc.ConvertOptions(
                    column_types={n: pa.string() for n in names}, strings_can_be_null=False
                ),
            )
        except pa.ArrowInvalid:
            table = None
    if table is not None and table.num_rows == len(messages):
        return _checked(table, messages, schema, ctx, where, cast=True)
    import csv

    for offset, payload in messages:
        try:
            [row] = list(csv.reader([payload.decode("utf-8")]))
            if len(row) != len(names):
                raise ValueError(f"{len(row)} fields where the schema has {len(names)}")
        except (ValueError, UnicodeDecodeError, csv.Error) as e:
            _bad(ctx, where, "csv", offset, payload, f"not a CSV line of {names}: {e}")
            continue
        rows.append(list(row))
        kept.append((offset, payload))
    text = {n: pa.array([r[i] for r in rows], pa.string()) for i, n in enumerate(names)}
    return _checked(pa.table(text), kept, schema, ctx, where, cast=True)


def _arrow(messages, schema: Schema | None, ctx: BatchContext, where: str) -> pa.Table:
    tables: list[pa.Table] = []
    target = schema.arrow() if schema is not None else None
    for offset, payload in messages:
        try:
            table = pa.ipc.open_stream(payload).read_all()
            if target is not None:
                table = table.select(target.names).cast(target)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, KeyError) as e:
            ctx.read_rows(1)
            _bad(
                ctx, where, "arrow", offset, payload, f"not an Arrow IPC stream of the schema: {e}"
            )
            continue
        ctx.read_rows(table.num_rows)
        tables.append(table)
    if not tables:
        return empty_table(target) if target is not None else pa.table({})
    table = pa.concat_tables(tables)
    if schema is None:
        return table
    # The rules by row; a bad row's raw text is its values as JSON (the IPC bytes hold many rows).
    rows = table.to_pylist() if any(c.rules() for c in schema.columns) else []
    positions = pa.array(range(table.num_rows), pa.int64())

    def raw_of(numbers: list) -> list:
        return [json.dumps(rows[int(n)], default=str) for n in numbers]

    return schema.check_constraints(table, ctx, where, raw_of, positions)


def _bad(ctx: BatchContext, where: str, kind: str, offset: Any, payload: bytes, why: str) -> None:
    line = [offset if isinstance(offset, int) else None]
    ctx.quarantine_rows(where, kind, f"message {offset}: {why}", [raw_text(payload)], line)


def _scalar(v: Any) -> str | None:
    if v is None:
        return None
    return v if isinstance(v, str) else json.dumps(v)
