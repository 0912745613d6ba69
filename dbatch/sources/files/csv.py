"""CSV files: one record per physical line, cast to the declared types, bad rows kept with their line.

A record is one line of the (decompressed) text: a field holds no line break
unless the source says so (``multiline: true``). A line whose quote never
closes is a bad row on its own, and the lines after it are read as records of
their own; lines with too many or too few fields are bad rows too. Every bad
row keeps its line number and raw text, and rows in counts every record.
"""

from __future__ import annotations

import csv as pycsv
import re
from collections.abc import Callable
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
        if b"\r" not in data:  # the common case: every line ends with \n
            ends = positions(buf, 10)
            widths: np.ndarray | int = 1
        elif data.count(b"\r") != data.count(b"\r\n"):  # bare carriage returns end lines too
            breaks = list(re.finditer(rb"\r\n|\r|\n", data))
            ends = np.array([m.start() for m in breaks], np.int64)
            widths = np.array([m.end() - m.start() for m in breaks], np.int64)
        else:
            ends = positions(buf, 10)
            crlf = (ends > 0) & (buf[np.maximum(ends - 1, 0)] == 13)
            ends, widths = ends - crlf, 1 + crlf  # a \r before a \n is part of the break
        starts = np.empty(len(ends) + 1, np.int64)
        starts[0] = 0
        np.add(ends, widths, out=starts[1:])
        stops = np.empty(len(ends) + 1, np.int64)
        stops[:-1], stops[-1] = ends, len(data)
        if len(starts) > 1 and starts[-1] == len(data):  # a final line break ends the text
            starts, stops = starts[:-1], stops[:-1]
        self.starts, self.stops = starts, stops
        self._quotes: np.ndarray | None = None
        self._non_empty: np.ndarray | None = None

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
        if self._non_empty is None:
            self._non_empty = np.flatnonzero(self.stops > self.starts)
        return self._non_empty

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

    def quotes(self) -> np.ndarray:
        """How many quote characters each line holds."""
        if self._quotes is None:
            # Files often quote their header only: the search starts at the first quote
            # after the first line (a text has one, if empty), found at the speed of
            # memchr; none: no search at all.
            head = int(self.stops[0])
            first = self.data.find(b'"', head)
            if first < 0:
                quotes = np.zeros(len(self), np.int64)
            else:
                at = positions(np.frombuffer(self.data, dtype=np.uint8)[first:], 34) + first
                # No quote is part of a line break, so the quotes before a line's start are
                # those before the previous line's stop: one search, not two.
                quotes = np.diff(np.searchsorted(at, self.stops), prepend=0)
            quotes[0] += self.data.count(b'"', 0, head)
            self._quotes = quotes
        return self._quotes

    def odd_quotes(self) -> np.ndarray:
        """The 0-based indices of lines holding an odd number of quote characters."""
        return np.flatnonzero(self.quotes() % 2 == 1)

    def with_quotes(self) -> np.ndarray:
        """The 0-based indices of lines holding a quote character."""
        return np.flatnonzero(self.quotes() > 0)

    def without(self, drop: np.ndarray) -> tuple[bytes, np.ndarray]:
        """The text without the lines ``drop``, and the 0-based index of each line kept.

        The text between dropped lines is copied whole, line breaks and all.
        """
        keep = np.ones(len(self), dtype=bool)
        keep[drop] = False
        pieces, at = [], 0
        for i in np.sort(drop):
            pieces.append(self.data[at : self.starts[i]])
            at = self.starts[i + 1] if i + 1 < len(self) else len(self.data)
        pieces.append(self.data[at:])
        text = b"".join(pieces)
        if text and not text.endswith((b"\n", b"\r")):
            text += b"\n"
        return text, np.flatnonzero(keep)


#: Bytes compared at a time: a temporary this small comes from the heap and is reused,
#: where one the size of the file would be mapped, faulted in and unmapped for each.
_CHUNK = 1 << 16


def positions(buf: np.ndarray, byte: int) -> np.ndarray:
    """The offsets at which ``byte`` occurs in ``buf`` (uint8), in order, as int64."""
    if len(buf) <= _CHUNK:
        return np.flatnonzero(buf == byte)
    found = [
        np.flatnonzero(buf[at : at + _CHUNK] == byte) + at for at in range(0, len(buf), _CHUNK)
    ]
    return np.concatenate(found)


@dataclass
class _Parsed:
    table: pa.Table
    bad: list[tuple[int, str, str]]  # (line, reason, raw) of rows with a wrong number of fields
    lines: np.ndarray  # the line of each row of ``table``
    typed: dict[str, pa.DataType]  # the declared columns Arrow converted as it parsed


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
    parsed = _parse(source, key, lines, unclosed, ctx, _typed(source))
    if parsed is None:
        return None
    # Records: the non-empty lines but the unclosed ones (never empty) and the header.
    expected = len(lines.non_empty()) - len(unclosed) - 1
    if not source.multiline and parsed.table.num_rows + len(parsed.bad) != expected:
        # A quote the quick check missed swallowed line breaks: check every quoted line.
        unclosed = lines.unclosed(source.delimiter, lines.with_quotes())
        parsed = _parse(source, key, lines, unclosed, ctx, parsed.typed)
        if parsed is None:
            return None
    return _finish(source, key, lines, unclosed, parsed, ctx)


def _utf8(data: bytes, encoding: str) -> bytes:
    if encoding.lower().replace("-", "").replace("_", "") not in ("utf8", "utf8sig"):
        data = data.decode(encoding).encode("utf8")
    return data[len(_BOM) :] if data.startswith(_BOM) else data


def _parse(
    source: Files,
    key: str,
    lines: Lines,
    unclosed: np.ndarray,
    ctx: BatchContext,
    typed: dict[str, pa.DataType],
) -> _Parsed | None:
    """Parse the lines but the unclosed ones with Arrow; None if the file cannot be read.

    Arrow converts the ``typed`` columns as it parses; a column holding a value it
    will not convert is read again as text (``_typed`` says why this is exact).
    """
    if len(unclosed):
        text, kept = lines.without(unclosed)
        records = kept[lines.stops[kept] > lines.starts[kept]]  # the lines Arrow reads, in order
    else:
        text, records = lines.data, lines.non_empty()
    typed = {n: t for n, t in typed.items() if (_where(source), n) not in _AS_TEXT}
    failures = 0
    while True:
        bad: list[tuple[int, str, str]] = []
        try:
            table = _arrow_csv(source, text, typed, records, bad)
            break
        except pa.ArrowInvalid as e:
            failed = _failed_column(e, typed, text, source)
            if failed is None:
                _unreadable(key, str(e), ctx)
                return None
            _as_text(source, failed)
            failures += 1
            # A second column that will not convert: the rest is read as text too
            # (a file is parsed at most three times).
            typed = {} if failures > 1 else {n: t for n, t in typed.items() if n != failed}
    good = records[1:] + 1
    if bad:
        good = good[~np.isin(good, np.array([b[0] for b in bad], np.int64))]
    return _Parsed(table, bad, good[: table.num_rows], typed)


def _arrow_csv(
    source: Files,
    text: bytes,
    typed: dict[str, pa.DataType],
    records: np.ndarray,
    bad: list[tuple[int, str, str]],
) -> pa.Table:
    import pyarrow.csv as pacsv

    def on_bad_row(row: pacsv.InvalidRow) -> str:
        line = int(records[row.number - 1]) + 1 if row.number is not None else 0
        why = f"expected {row.expected_columns} fields, found {row.actual_columns}"
        bad.append((line, why, row.text))
        return "skip"

    # One block for a file up to 16 MiB, no larger than the file: Arrow allocates the
    # whole block, which costs a small file more than parsing it.
    block = max(1 << 10, min(1 << 24, len(text) + 1))
    # A file of one block goes through the streaming reader, which gives the same
    # table and errors without the table reader's set-up: a third less CPU for a
    # file of a few lines. Larger files keep the table reader, which widens a
    # column's inferred type across blocks where the streaming one would stop.
    read = pacsv.open_csv if len(text) < block else pacsv.read_csv
    table = read(
        pa.BufferReader(text),  # zero-copy: io.BytesIO has Arrow copy each block
        read_options=pacsv.ReadOptions(use_threads=False, block_size=block),
        parse_options=_parse_options(source, on_bad_row),
        convert_options=_convert_options(source, typed),
    )
    return table if isinstance(table, pa.Table) else table.read_all()


def _parse_options(source: Files, on_bad_row: Callable[..., str] | None = None):
    import pyarrow.csv as pacsv

    return pacsv.ParseOptions(
        delimiter=source.delimiter,
        invalid_row_handler=on_bad_row,
        newlines_in_values=source.multiline,
    )


def _unreadable(key: str, msg: str, ctx: BatchContext) -> None:
    kind = "encoding" if "utf8" in msg.lower() else "corrupt"
    hint = " (set encoding: in the source if the file is not UTF-8)" if kind == "encoding" else ""
    ctx.quarantine_file(key, kind, msg + hint)


#: (the source's path, a column) that held a value Arrow would not convert, in this
#: process: the source's next files read the column as text at once.
_AS_TEXT: dict[tuple[str, str], None] = {}


def _where(source: Files) -> str:
    return str(source.path)


def _as_text(source: Files, column: str) -> None:
    if len(_AS_TEXT) >= 4096:
        _AS_TEXT.clear()
    _AS_TEXT[(_where(source), column)] = None


_CONVERSION = re.compile(r"In CSV column #(\d+): .*CSV conversion error")


def _failed_column(
    error: pa.ArrowInvalid, typed: dict[str, pa.DataType], text: bytes, source: Files
) -> str | None:
    """The typed column holding a value Arrow would not convert; None for any other error."""
    import pyarrow.csv as pacsv

    found = _CONVERSION.search(str(error))
    if found is None or not typed:
        return None
    try:  # the names, from the first block, parsed as the file is
        header = pacsv.open_csv(
            pa.BufferReader(text),
            read_options=pacsv.ReadOptions(use_threads=False, block_size=1 << 20),
            parse_options=_parse_options(source, lambda row: "skip"),
            convert_options=pacsv.ConvertOptions(column_types=dict.fromkeys(typed, pa.string())),
        ).schema.names
    except pa.ArrowInvalid:
        header = []
    index = int(found.group(1))
    name = header[index] if index < len(header) else None
    return name if name in typed else next(iter(typed))


def _typed(source: Files) -> dict[str, pa.DataType]:
    """The declared columns Arrow converts as it parses, to the values ``cast_strings`` gives.

    Numbers, and dates and times without a zone, that share their null markers
    (Arrow's own, the default, or the source's). For them Arrow's parser is the
    one the casts use and trims numbers as they do, and it reads a marker as null
    only when the text is exactly the marker (the casts also allow spaces around
    it). So a value Arrow converts gets the value ``cast_strings`` would give it,
    and a value it will not convert (a marker with spaces, a time with an offset, a
    bad value) sends its column back to being read as text and cast value by value,
    its bad rows quarantined as before.
    """
    schema = source.declared
    if schema is None:
        return {}
    typed: dict[str, pa.DataType] = {}
    markers: tuple[str, ...] | None = None
    for col in schema.columns:
        t = col.type
        number = pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_date(t)
        if not (number or (pa.types.is_timestamp(t) and t.tz is None)):
            continue
        if markers is not None and schema.markers(col) != markers:
            continue
        markers = schema.markers(col)
        typed[col.name] = t
    return typed


def _convert_options(source: Files, typed: dict[str, pa.DataType]):
    import pyarrow.csv as pacsv

    schema = source.declared
    if schema is not None:  # the typed converted, the rest text: the schema casts it
        types = {c.name: typed.get(c.name, pa.string()) for c in schema.columns}
        nulls = next((list(schema.markers(c)) for c in schema.columns if c.name in typed), [])
        return pacsv.ConvertOptions(
            column_types=types, null_values=nulls, strings_can_be_null=False
        )
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
