"""CSV files: parsed as text, cast to the declared types, bad rows kept with their line."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from ...context import BatchContext
from .columns import check_columns

if TYPE_CHECKING:
    from .source import Files

__all__ = ["read_csv"]


def read_csv(source: Files, key: str, data: bytes, ctx: BatchContext) -> pa.Table | None:
    import pyarrow.csv as pacsv

    bad: list[tuple[int | None, str, str]] = []

    def on_bad_row(row) -> str:
        bad.append(
            (
                row.number,
                f"expected {row.expected_columns} fields, found {row.actual_columns}",
                row.text,
            )
        )
        return "skip"

    text_types = None
    if source.schema is not None:
        text_types = {name: pa.string() for name in source.schema.names}
    try:
        if source.encoding.lower().replace("-", "") not in ("utf8",):
            data = data.decode(source.encoding).encode("utf8")
        table = pacsv.read_csv(
            io.BytesIO(data),
            read_options=pacsv.ReadOptions(use_threads=False, block_size=1 << 24),
            parse_options=pacsv.ParseOptions(
                delimiter=source.delimiter, invalid_row_handler=on_bad_row
            ),
            convert_options=pacsv.ConvertOptions(
                column_types=text_types, strings_can_be_null=False
            ),
        )
    except UnicodeDecodeError as e:
        ctx.quarantine_file(key, "encoding", f"not valid {source.encoding}: {e}")
        return None
    except pa.ArrowInvalid as e:
        msg = str(e)
        kind = "encoding" if "UTF8" in msg or "utf8" in msg.lower() else "corrupt"
        hint = (
            " (set encoding: in the source if the file is not UTF-8)" if kind == "encoding" else ""
        )
        ctx.quarantine_file(key, kind, msg + hint)
        return None
    if bad:
        ctx.quarantine_rows(
            key,
            "field_count",
            [b[1] for b in bad],
            [b[2] for b in bad],
            [b[0] for b in bad],
        )
    ctx.read_rows(table.num_rows + len(bad))
    if source.schema is None:
        return table
    if not check_columns(source, key, table.column_names, ctx, table.num_rows):
        return None
    table = table.select(source.schema.names)
    # The header is line 1; data rows follow unless a bad row was skipped in between.
    lines = _csv_line_numbers(table.num_rows, [b[0] for b in bad])
    raw_of = _csv_raw_text(data)
    table, lines = source.schema.cast_strings(table, ctx, key, raw_of, lines)
    return source.schema.check_constraints(table, ctx, key, raw_of, lines)


def _csv_line_numbers(n_rows: int, bad_lines: list[int | None]) -> pa.Array:
    skip = np.array([x for x in bad_lines if x is not None], dtype=np.int64)
    lines = np.arange(2, n_rows + len(skip) + 2, dtype=np.int64)
    if len(skip):
        lines = lines[~np.isin(lines, skip)]
    return pa.array(lines[:n_rows])


def _csv_raw_text(data: bytes):
    """Line numbers -> raw text of those lines; lines are located only if a row is bad.

    Only the asked-for lines are decoded; files with a bare ``\r`` as line end
    are split as text instead.
    """
    cache: list[Any] = []

    def raw_of(numbers: list) -> list:
        if not cache:
            if data.count(b"\r") != data.count(b"\r\n"):
                cache.append(data.decode("utf8", errors="replace").splitlines())
            else:
                cache.append(np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == 10))
        found = cache[0]
        if isinstance(found, list):
            return [
                found[n - 1] if n is not None and 0 < n <= len(found) else None for n in numbers
            ]
        return [_line(data, found, n) for n in numbers]

    return raw_of


def _line(data: bytes, ends: np.ndarray, n: int | None) -> str | None:
    """Line ``n`` (1-based) of ``data``, given the offsets of its newlines."""
    if n is None or n < 1:
        return None
    start = 0 if n == 1 else int(ends[n - 2]) + 1 if n - 2 < len(ends) else len(data)
    stop = int(ends[n - 1]) if n - 1 < len(ends) else len(data)
    if start >= stop and n - 1 >= len(ends):
        return None  # past the last line
    return data[start:stop].removesuffix(b"\r").decode("utf8", errors="replace")
