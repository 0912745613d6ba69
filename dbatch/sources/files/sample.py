"""The columns of a file, read cheaply: a Parquet footer, the first block of text."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

import pyarrow as pa

if TYPE_CHECKING:
    from .source import Files

__all__ = ["first_schema"]

_BLOCK = 1 << 20


def first_schema(source: Files, key: str) -> pa.Schema | None:
    """The pyarrow schema of file ``key`` as a batch would read it; None if it cannot be read."""
    fmt = source.format_of(key)
    try:
        with source.open(key) as f:
            if fmt == "parquet":
                import pyarrow.parquet as pq

                return pq.read_schema(f)
            head = f.read(_BLOCK)
    except (OSError, EOFError, ValueError, pa.ArrowException):
        return None
    if fmt == "csv":
        return _csv_schema(source, head)
    return _jsonl_schema(head)


def _csv_schema(source: Files, head: bytes) -> pa.Schema | None:
    import pyarrow.csv as pacsv

    text = head[: head.rfind(b"\n") + 1] or head
    try:
        return pacsv.read_csv(
            io.BytesIO(text),
            read_options=pacsv.ReadOptions(use_threads=False),
            parse_options=pacsv.ParseOptions(
                delimiter=source.delimiter, invalid_row_handler=lambda row: "skip"
            ),
        ).schema
    except pa.ArrowException:
        return None


def _jsonl_schema(head: bytes) -> pa.Schema | None:
    import json

    rows = []
    for line in head.splitlines()[:-1] or head.splitlines():
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            rows.append(value)
    try:
        return pa.Table.from_pylist(rows).schema if rows else None
    except (pa.ArrowException, TypeError):
        return None
