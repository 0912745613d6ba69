"""CSV files: one record per physical line, cast to the declared types, bad rows kept with their line.

A record is one line of the (decompressed) text: a field holds no line break
unless the source says so (``multiline: true``). A line whose quote never
closes is a bad row on its own, and the lines after it are read as records of
their own; lines with too many or too few fields are bad rows too. Every bad
row keeps its line number and raw text, and rows in counts every record.
"""

from __future__ import annotations

import csv as pycsv
import io
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from ...context import BatchContext
from .columns import check_columns

if TYPE_CHECKING:
    from .source import Files

__all__ = ["read_csv", "Lines"]

_BOM = b"\xef\xbb\xbf"


class Lines:
    """The physical lines of a text: where each starts and stops (its line break excluded)."""

    def __init__(self, data: bytes):
        self.data = data
        buf = np.frombuffer(data, dtype=np.uint8)
        if b"\r" in data and data.count(b"\r") != data.count(b"\r\n"):  # bare \r ends lines too
            breaks = list(re.finditer(rb"\r\n|\r|\n", data))
            ends = np.array([m.start() for m in breaks], np.int64)
            widths = np.array([m.end() - m.start() for m in breaks], np.int64)
        else:
            ends = np.flatnonzero(buf == 10).astype(np.int64)
            widths = np.ones(len(ends), np.int64)
            crlf = (ends > 0) & (buf[np.maximum(ends - 1, 0)] == 13)
            ends, widths = ends - crlf, widths + crlf  # a \r before a \n is part of the break
        starts = np.concatenate([[0], ends + widths]).astype(np.int64)
        stops = np.concatenate([ends, [len(data)]]).astype(np.int64)
        if len(starts) > 1 and starts[-1] == len(data):  # a final line break ends the text
            starts, stops = starts[:-1], stops[:-1]
        self.starts, self.stops = starts, stops

    def __len__(self) -> int:
        return len(self.starts)

    def text(self, number: int | None) -> str | None:
        """Line ``number`` (1-based), decoded; None if there is no such line."""
        if number is None or not 0 < number <= len(self):
            return None
        raw = self.data[self.starts[number - 1] : self.stops[number - 1]]
        return raw.decode("utf8", errors="replace")

    def non_empty(self) -> np.ndarray:
        """The 0-based indices of the lines that are records (CSV readers skip empty lines)."""
        return np.flatnonzero(self.stops > self.starts)

    def unclosed(self, delimiter: str, candidates: np.ndarray) -> np.ndarray:
        """Of the line indices ``candidates``, those in which a quoted field never closes."""
        found = []
        for i in candidates:
            line = self.text(int(i) + 1) or ""
            try:
                next(pycsv.reader([line], delimiter=delimiter, strict=True), None)
            except pycsv.Error:
                found.append(i)
        return np.array(found, np.int64)

    def odd_quotes(self) -> np.ndarray:
        """The 0-based indices of lines holding an odd number of quote characters."""
        per_line = self._quotes_per_line()
        return np.flatnonzero(per_line % 2 == 1)

    def with_quotes(self) -> np.ndarray:
        return np.flatnonzero(self._quotes_per_line() > 0)

    def _quotes_per_line(self) -> np.ndarray:
        # Quotes are rare: find them, then the line each is on (no running count of every byte).
        buf = np.frombuffer(self.data, dtype=np.uint8)
        at = np.flatnonzero(buf == 34)
        line = np.searchsorted(self.starts, at, side="right") - 1  # a quote is never a break
        return np.bincount(line, minlength=len(self)).astype(np.int64)

    def without(self, drop: np.ndarray) -> tuple[bytes, np.ndarray]:
        """The text without the lines ``drop``, and the 0-based index of each line kept."""
        keep = np.setdiff1d(np.arange(len(self)), drop, assume_unique=True)
        text = b"\n".join(self.data[self.starts[i] : self.stops[i]] for i in keep)
        return text + b"\n", keep


@dataclass
class _Parsed:
    table: pa.Table
    bad: list[tuple[int, str, str]]  # (line, reason, raw) of rows with a wrong number of fields
    lines: np.ndarray  # the line of each row of ``table``


def read_csv(source: Files, key: str, data: bytes, ctx: BatchContext) -> pa.Table | None:
    """One CSV file: its good rows, its bad ones quarantined (None if the whole file is bad)."""
    try:
        data = _utf8(data, source.encoding)
    except UnicodeDecodeError as e:
        ctx.quarantine_file(key, "encoding", f"not valid {source.encoding}: {e}")
        return None
    lines = Lines(data)
    unclosed = np.array([], np.int64)
    if not source.multiline and b'"' in data:
        unclosed = lines.unclosed(source.delimiter, lines.odd_quotes())
    header = lines.non_empty()[:1]
    if len(header) and header[0] in set(unclosed.tolist()):
        ctx.quarantine_file(key, "header", "the header line has a quote that never closes")
        return None
    parsed = _parse(source, key, lines, unclosed, ctx)
    if parsed is None:
        return None
    # The header is no record; both are sorted and unique, so no sort is needed.
    expected = len(np.setdiff1d(lines.non_empty(), unclosed, assume_unique=True)) - 1
    if not source.multiline and parsed.table.num_rows + len(parsed.bad) != expected:
        # A quote the quick check missed swallowed line breaks: check every quoted line.
        unclosed = lines.unclosed(source.delimiter, lines.with_quotes())
        parsed = _parse(source, key, lines, unclosed, ctx)
        if parsed is None:
            return None
    return _finish(source, key, lines, unclosed, parsed, ctx)


def _utf8(data: bytes, encoding: str) -> bytes:
    if encoding.lower().replace("-", "").replace("_", "") not in ("utf8", "utf8sig"):
        data = data.decode(encoding).encode("utf8")
    return data[len(_BOM) :] if data.startswith(_BOM) else data


def _parse(
    source: Files, key: str, lines: Lines, unclosed: np.ndarray, ctx: BatchContext
) -> _Parsed | None:
    """Parse the lines but the unclosed ones with Arrow; None if the file cannot be read."""
    import pyarrow.csv as pacsv

    text, kept = lines.without(unclosed) if len(unclosed) else (lines.data, np.arange(len(lines)))
    records = kept[lines.stops[kept] > lines.starts[kept]]  # the lines Arrow reads, in order
    bad: list[tuple[int, str, str]] = []

    def on_bad_row(row: pacsv.InvalidRow) -> str:
        line = int(records[row.number - 1]) + 1 if row.number is not None else 0
        why = f"expected {row.expected_columns} fields, found {row.actual_columns}"
        bad.append((line, why, row.text))
        return "skip"

    try:
        table = pacsv.read_csv(
            io.BytesIO(text),
            read_options=pacsv.ReadOptions(use_threads=False, block_size=1 << 24),
            parse_options=pacsv.ParseOptions(
                delimiter=source.delimiter,
                invalid_row_handler=on_bad_row,
                newlines_in_values=source.multiline,
            ),
            convert_options=_convert_options(source),
        )
    except pa.ArrowInvalid as e:
        msg = str(e)
        kind = "encoding" if "utf8" in msg.lower() else "corrupt"
        hint = (
            " (set encoding: in the source if the file is not UTF-8)" if kind == "encoding" else ""
        )
        ctx.quarantine_file(key, kind, msg + hint)
        return None
    good = records[1:] + 1
    if bad:
        good = good[~np.isin(good, np.array([b[0] for b in bad], np.int64))]
    return _Parsed(table, bad, good[: table.num_rows])


def _convert_options(source: Files):
    import pyarrow.csv as pacsv

    if source.declared is not None:  # read as text: the schema casts, with its null markers
        text = dict.fromkeys(source.declared.names, pa.string())
        return pacsv.ConvertOptions(column_types=text, strings_can_be_null=False)
    if source.null_values is not None:  # declared markers: null in every column
        return pacsv.ConvertOptions(null_values=list(source.null_values), strings_can_be_null=True)
    return pacsv.ConvertOptions(strings_can_be_null=False)


def _finish(
    source: Files,
    key: str,
    lines: Lines,
    unclosed: np.ndarray,
    parsed: _Parsed,
    ctx: BatchContext,
) -> pa.Table | None:
    """Quarantine the bad rows, count every record, cast and check the good rows."""
    broken = [int(i) + 1 for i in unclosed]
    if broken:
        ctx.quarantine_rows(
            key,
            "unclosed_quote",
            "a quoted field never closes on its line; the next lines are read on their own",
            [lines.text(n) for n in broken],
            broken,
        )
    bad = parsed.bad
    if bad:
        ctx.quarantine_rows(
            key, "field_count", [b[1] for b in bad], [b[2] for b in bad], [b[0] for b in bad]
        )
    table = parsed.table
    ctx.read_rows(table.num_rows + len(bad) + len(broken))
    if source.declared is None:
        return table
    if not check_columns(source, key, table.column_names, ctx, table.num_rows):
        return None
    table = table.select(source.declared.names)
    numbers = pa.array(parsed.lines)
    table, numbers = source.declared.cast_strings(table, ctx, key, _raw(lines), numbers)
    return source.declared.check_constraints(table, ctx, key, _raw(lines), numbers)


def _raw(lines: Lines):
    def raw_of(numbers: list) -> list:
        return [lines.text(n) for n in numbers]

    return raw_of
