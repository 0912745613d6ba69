"""Files as a source: CSV, Parquet and JSON lines, local or any fsspec URL, with bad input kept."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..context import BatchContext
from ..core import BadInputMode, Batch, Unit
from ..engine import Relation
from ..errors import JobSpecError, SourceError
from ..redact import redact
from ..schema import Schema, row_json

__all__ = ["Files"]

_FORMATS = {"csv", "parquet", "jsonl"}
_SUFFIXES = {
    ".csv": "csv",
    ".tsv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
}


@dataclass(frozen=True)
class Files:
    """Files matched by a glob pattern (or a list of paths), one unit per file.

    Parameters
    ----------
    path
        A path, glob pattern or fsspec URL (``"landing/*.csv"``,
        ``"s3://bucket/2026-*/*.parquet"``), or a list of them.
    format
        ``csv``, ``parquet`` or ``jsonl``; inferred from the file suffix when omitted
        (``.gz`` and other compression suffixes are looked through).
    schema
        Declared columns: ``{"amount": "float64", "id": {"type": "string", "unique": True}}``.
        With a schema, missing columns quarantine the file, values that do not parse
        and broken constraints quarantine the row, and nothing is silently coerced.
    delimiter, encoding
        CSV options.
    time_pattern
        A regular expression with one group holding an ISO date or timestamp in the
        path (``r"(\\d{4}-\\d{2}-\\d{2})"``); used by time-window batching. The file's
        modification time is used otherwise.
    storage_options
        Passed to fsspec (credentials never appear in messages or the ledger).

    Examples
    --------
    >>> src = Files("landing/*.csv", schema={"account": "string", "amount": "float64"})
    """

    path: str | Sequence[str]
    format: str | None = None
    schema: Schema | Mapping[str, Any] | None = None
    delimiter: str = ","
    encoding: str = "utf8"
    time_pattern: str | None = None
    source_column: str | None = None
    storage_options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if self.format is not None and self.format not in _FORMATS:
            raise JobSpecError(
                f"unknown file format {self.format!r}; use one of {sorted(_FORMATS)}",
                key="source.format",
            )
        object.__setattr__(self, "schema", Schema.from_mapping(self.schema))
        if self.time_pattern is not None:
            try:
                re.compile(self.time_pattern)
            except re.error as e:
                raise JobSpecError(
                    f"not a regular expression: {e}", key="source.time_pattern"
                ) from None

    # -- planning, on the client ------------------------------------------------

    def describe(self) -> str:
        return f"files {_redact(repr(self.path))}"

    def __repr__(self) -> str:
        # Paths may hold credentials (s3://key:secret@bucket/...), storage options usually do.
        n = len(self.storage_options)
        hidden = f", storage_options=<{n} hidden>" if n else ""
        return f"Files({_redact(repr(self.path))}, format={self.format!r}{hidden})"

    def token(self) -> list[Any]:
        return [
            "files",
            self.format,
            self.schema.token() if self.schema else None,
            self.delimiter,
            self.encoding,
            self.source_column,
        ]

    def list_units(self) -> list[Unit]:
        patterns = [self.path] if isinstance(self.path, str) else list(self.path)
        units: dict[str, Unit] = {}
        for pattern in patterns:
            try:
                fs, _, paths = fsspec.get_fs_token_paths(
                    pattern, storage_options=dict(self.storage_options)
                )
            except (ImportError, ValueError) as e:
                raise SourceError(
                    f"cannot open {_redact(pattern)!r}: {_redact(str(e))}; install the fsspec "
                    "implementation for this protocol (s3fs, gcsfs, adlfs...) or fix the URL"
                ) from None
            if not paths and not any(ch in pattern for ch in "*?["):
                raise SourceError(
                    f"input file {_redact(pattern)!r} does not exist; check the path "
                    "(relative paths are taken from the job file's folder)"
                )
            protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
            for p in sorted(paths):
                try:
                    info = fs.info(p)
                except FileNotFoundError:
                    raise SourceError(
                        f"input file {_redact(pattern)!r} does not exist; check the path "
                        "(relative paths are taken from the job file's folder)"
                    ) from None
                if info.get("type") == "directory":
                    continue
                # http(s) paths keep their protocol; others (s3, gcs, memory) drop it.
                local = protocol in ("file", "local") or "://" in p
                key = p if local else f"{protocol}://{p}"
                mtime = _mtime(info)
                units[key] = Unit(
                    key=key,
                    size=int(info.get("size") or 0),
                    time=self._unit_time(key, mtime),
                    identity=(("size", int(info.get("size") or 0)), ("mtime", mtime)),
                )
        if not units:
            raise SourceError(
                f"no input files match {_redact(str(self.path))!r}; check the pattern, "
                "or that the landing area has been filled"
            )
        return [units[k] for k in sorted(units)]

    def _unit_time(self, key: str, mtime: float | None) -> float | None:
        if self.time_pattern:
            m = re.search(self.time_pattern, key)
            if m:
                try:
                    stamp = datetime.fromisoformat(m.group(1))
                except ValueError:
                    pass
                else:  # a date in a path is a UTC date, whatever this machine's time zone
                    if stamp.tzinfo is None:
                        stamp = stamp.replace(tzinfo=UTC)
                    return stamp.timestamp()
        return mtime

    # -- loading, on a worker ---------------------------------------------------

    def scan_obstacle(self, mode: BadInputMode) -> str | None:
        """None when batches may be read inside their first query; else why not."""
        from .parquet_scan import scan_obstacle

        return scan_obstacle(self, mode)

    def scan(self, batch: Batch, ctx: BatchContext) -> Relation | None:
        """The batch as a DuckDB relation over its local Parquet files, when that is exact.

        The rows are counted and the bad ones quarantined already; None when the
        files' footers say ``load`` must read the batch.
        """
        from .parquet_scan import parquet_scan

        return parquet_scan(self, batch, ctx)

    def damaged_file(self, batch: Batch, error: BaseException) -> str | None:
        """The file of ``batch`` that a scan's error names as unreadable, if it names one."""
        from .parquet_scan import damaged_file

        return damaged_file(self, batch, error)

    def load(self, batch: Batch, ctx: BatchContext) -> pa.Table:
        tables = []
        for unit in batch.units:
            table = self._load_unit(unit.key, ctx)
            if table is None:
                continue
            if self.source_column:
                table = table.append_column(
                    self.source_column, pa.array([unit.key] * table.num_rows, pa.string())
                )
            tables.append(table)
        if not tables:
            return self._empty()
        return _concat(tables, ctx, batch)

    def _empty(self) -> pa.Table:
        if self.schema is not None:
            schema = self.schema.arrow()
            if self.source_column:
                schema = schema.append(pa.field(self.source_column, pa.string()))
            return schema.empty_table()
        return pa.table({})

    def format_of(self, key: str) -> str:
        """``csv``, ``parquet`` or ``jsonl``: the declared format, else the one of the suffix."""
        if self.format:
            return self.format
        name = key.lower()
        for comp in (".gz", ".bz2", ".xz", ".zst", ".zstd"):
            if name.endswith(comp):
                name = name[: -len(comp)]
        for suffix, fmt in _SUFFIXES.items():
            if name.endswith(suffix):
                return fmt
        raise JobSpecError(
            f"cannot tell the format of {key!r} from its name; set format: csv, parquet or jsonl",
            key="source.format",
        )

    def _open(self, key: str):
        return fsspec.open(key, "rb", compression="infer", **dict(self.storage_options))

    def _load_unit(self, key: str, ctx: BatchContext) -> pa.Table | None:
        fmt = self.format_of(key)
        failure = None
        try:
            with self._open(key) as f:
                data = f.read()
        except FileNotFoundError:
            ctx.quarantine_file(key, "missing", "the file disappeared after planning")
            return None
        except (EOFError, OSError, ValueError) as e:
            if _is_io_blip(e):
                raise
            ctx.quarantine_file(key, "corrupt", f"cannot decompress or read: {e}")
            return None
        except Exception as e:  # noqa: BLE001 - a client library's own error (aiohttp, botocore)
            # Replaced by our own error, raised outside this block so it carries no context:
            # those may not pickle back to the client, and their repr can hold credentials.
            failure = _portable_error(e, key)
        if failure is not None:
            raise failure
        if len(data) == 0:
            ctx.quarantine_file(key, "empty", "the file is empty")
            return None
        reader = {"csv": self._read_csv, "parquet": self._read_parquet, "jsonl": self._read_jsonl}
        return reader[fmt](key, data, ctx)

    # CSV ----------------------------------------------------------------------

    def _read_csv(self, key: str, data: bytes, ctx: BatchContext) -> pa.Table | None:
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
        if self.schema is not None:
            text_types = {name: pa.string() for name in self.schema.names}
        try:
            if self.encoding.lower().replace("-", "") not in ("utf8",):
                data = data.decode(self.encoding).encode("utf8")
            table = pacsv.read_csv(
                io.BytesIO(data),
                read_options=pacsv.ReadOptions(use_threads=False, block_size=1 << 24),
                parse_options=pacsv.ParseOptions(
                    delimiter=self.delimiter, invalid_row_handler=on_bad_row
                ),
                convert_options=pacsv.ConvertOptions(
                    column_types=text_types, strings_can_be_null=False
                ),
            )
        except UnicodeDecodeError as e:
            ctx.quarantine_file(key, "encoding", f"not valid {self.encoding}: {e}")
            return None
        except pa.ArrowInvalid as e:
            msg = str(e)
            kind = "encoding" if "UTF8" in msg or "utf8" in msg.lower() else "corrupt"
            hint = (
                " (set encoding: in the source if the file is not UTF-8)"
                if kind == "encoding"
                else ""
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
        if self.schema is None:
            return table
        if not self._check_columns(key, table.column_names, ctx, table.num_rows):
            return None
        table = table.select(self.schema.names)
        # The header is line 1; data rows follow unless a bad row was skipped in between.
        lines = _csv_line_numbers(table.num_rows, [b[0] for b in bad])
        raw_of = _csv_raw_text(data)
        table, lines = self.schema.cast_strings(table, ctx, key, raw_of, lines)
        return self.schema.check_constraints(table, ctx, key, raw_of, lines)

    def _check_columns(self, key: str, found: list[str], ctx: BatchContext, n_rows: int) -> bool:
        assert self.schema is not None
        missing = [c for c in self.schema.names if c not in found]
        if missing:
            # As many unknown columns as missing ones: most likely renamed upstream.
            extra = [c for c in found if c not in self.schema.names]
            renamed = len(extra) == len(missing)
            ctx.rows_in -= n_rows
            ctx.quarantine_file(
                key,
                "renamed_columns" if renamed else "missing_columns",
                f"missing column(s) {missing}"
                + (f", unknown column(s) {extra} instead" if renamed else "")
                + f"; the file has {found}. "
                "Were columns renamed upstream? Fix the file or the schema, then run `dbatch replay`.",
            )
            return False
        return True

    # Parquet ------------------------------------------------------------------

    def _read_parquet(self, key: str, data: bytes, ctx: BatchContext) -> pa.Table | None:
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(pa.BufferReader(data), use_threads=False)
        except (pa.ArrowInvalid, pa.ArrowException, OSError) as e:
            ctx.quarantine_file(key, "corrupt", f"not a readable Parquet file: {e}")
            return None
        if self.schema is None:
            ctx.read_rows(table.num_rows)
            return table
        ctx.read_rows(table.num_rows)
        if not self._check_columns(key, table.column_names, ctx, table.num_rows):
            return None
        table = table.select(self.schema.names)
        target = self.schema.arrow()
        for name, typ in zip(target.names, target.types, strict=True):
            have = table.schema.field(name).type
            if have == typ:
                continue
            if _widening(have, typ):
                table = table.set_column(
                    table.schema.get_field_index(name), name, pc.cast(table[name], typ)
                )
                continue
            ctx.rows_in -= table.num_rows
            ctx.quarantine_file(
                key,
                "schema_drift",
                f"column '{name}' is {have}, the schema says {typ}; "
                "fix the writer upstream or change the declared type",
            )
            return None
        lines = pa.array(np.arange(table.num_rows, dtype=np.int64))
        return self.schema.check_constraints(table, ctx, key, _rows_as_json(table), lines)

    # JSON lines ---------------------------------------------------------------

    def _read_jsonl(self, key: str, data: bytes, ctx: BatchContext) -> pa.Table | None:
        try:
            text = data.decode(self.encoding)
        except UnicodeDecodeError as e:
            ctx.quarantine_file(key, "encoding", f"not valid {self.encoding}: {e}")
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
        if self.schema is None:
            try:
                return pa.Table.from_pylist(good)
            except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
                ctx.rows_in -= len(good)
                ctx.quarantine_file(
                    key, "schema_drift", f"mixed value types: {e}; declare a schema"
                )
                return None
        names = self.schema.names
        if good and not any(all(n in rec for n in names) for rec in good[:1]):
            present = sorted(set().union(*(rec.keys() for rec in good[:100])))
            if not self._check_columns(key, present, ctx, len(good)):
                return None
        as_text = {
            n: pa.array(
                [None if rec.get(n) is None else _json_scalar(rec.get(n)) for rec in good],
                pa.string(),
            )
            for n in names
        }
        table = (
            pa.table(as_text) if good else pa.table({n: pa.array([], pa.string()) for n in names})
        )
        by_line = dict(zip(good_lines, good_raw, strict=True))

        def raw_of(numbers: list) -> list:
            return [by_line.get(n) for n in numbers]

        lines = pa.array(good_lines, pa.int64())
        table, lines = self.schema.cast_strings(table, ctx, key, raw_of, lines)
        return self.schema.check_constraints(table, ctx, key, raw_of, lines)


def _json_scalar(v: Any) -> str:
    return v if isinstance(v, str) else json.dumps(v)


def _concat(tables: list[pa.Table], ctx: BatchContext, batch: Batch) -> pa.Table:
    first = tables[0].schema
    same = [t for t in tables if t.schema.equals(first)]
    if len(same) == len(tables):
        return pa.concat_tables(tables)
    # Without a declared schema, files that disagree with the first one are set aside
    # rather than silently coerced.
    out = [tables[0]]
    for unit_table, unit in zip(tables[1:], batch.units[1:], strict=False):
        if unit_table.schema.equals(first):
            out.append(unit_table)
        else:
            ctx.rows_in -= unit_table.num_rows
            ctx.quarantine_file(
                unit.key,
                "schema_drift",
                f"columns {unit_table.schema.names} / types differ from the first file of the "
                "batch; declare a schema in the source so every file is read the same way",
            )
    return pa.concat_tables(out)


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


def _rows_as_json(table: pa.Table):
    """Row numbers -> the rows as JSON text (for formats without raw lines)."""

    def raw_of(numbers: list) -> list:
        rows = table.take([n for n in numbers]).to_pylist()
        return [row_json(r) for r in rows]

    return raw_of


def _widening(have: pa.DataType, want: pa.DataType) -> bool:
    if pa.types.is_integer(have) and pa.types.is_integer(want):
        return want.bit_width >= have.bit_width
    if pa.types.is_integer(have) and pa.types.is_floating(want):
        return True
    if pa.types.is_floating(have) and pa.types.is_floating(want):
        return want.bit_width >= have.bit_width
    if pa.types.is_timestamp(have) and pa.types.is_timestamp(want):
        return True
    if pa.types.is_dictionary(have) and pa.types.is_string(want):
        return True
    return pa.types.is_large_string(have) and pa.types.is_string(want)


def _mtime(info: Mapping[str, Any]) -> float | None:
    for k in ("mtime", "LastModified", "last_modified", "updated", "created"):
        v = info.get(k)
        if v is None:
            continue
        if isinstance(v, (int, float)):
            return float(v)
        if isinstance(v, datetime):
            return v.timestamp()
        try:
            return datetime.fromisoformat(str(v)).timestamp()
        except ValueError:
            continue
    return None


def _is_io_blip(e: BaseException) -> bool:
    return isinstance(e, (ConnectionError, TimeoutError)) or (
        isinstance(e, OSError)
        and not isinstance(e, (EOFError,))
        and "gzip" not in str(e).lower()
        and "compress" not in str(e).lower()
        and "magic" not in str(e).lower()
        and "CRC" not in str(e)
        and "end-of-stream" not in str(e)
    )


def _portable_error(e: BaseException, key: str) -> Exception:
    """A picklable error without credentials, transient when ``e`` is (an HTTP 503, say)."""
    from ..errors import TransientError, is_transient

    message = f"reading {_redact(key)!r} failed: {type(e).__name__}: {_redact(str(e))[:500]}"
    return TransientError(message) if is_transient(e) else SourceError(message)


_redact = redact  # the name used throughout this module
