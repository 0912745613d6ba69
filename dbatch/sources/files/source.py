"""Files as a source: CSV, Parquet and JSON lines, local or any fsspec URL, with bad input kept."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import fsspec
import pyarrow as pa
from fsspec.utils import infer_compression

from ...arrow import empty_table
from ...context import BatchContext
from ...core import BadInputMode, Batch, Unit
from ...engine import Relation
from ...errors import JobSpecError, SourceError
from ...redact import redact
from ...schema import Schema, null_markers
from .columns import concat
from .listing import check_time_pattern, list_units

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
        A regular expression with exactly one group holding the date or time in the
        path: an ISO date or timestamp (``r"(\\d{4}-\\d{2}-\\d{2})"``), a year-month
        (``r"(\\d{4}-\\d{2})"``) or a year; used by time-window batching. Every file
        must match it. Without it, the files' modification times are used.
    storage_options
        Passed to fsspec (credentials never appear in messages or the ledger).
    null_values
        Text that reads as a missing value, in every column that declares no markers
        of its own (``schema: {x: {type: float64, null_values: [-999]}}``). Default:
        Arrow's markers (``""``, ``NA``, ``N/A``, ``NULL``, ``NaN``, ``null``...) in
        columns that are not strings; string columns keep their text as it is.
    multiline
        CSV fields may hold line breaks inside quotes. By default a record is one
        line, and a line whose quote never closes is a bad row on its own.

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
    null_values: Sequence[str] | None = None
    multiline: bool = False

    def __post_init__(self):
        if self.format is not None and self.format not in _FORMATS:
            raise JobSpecError(
                f"unknown file format {self.format!r}; use one of {sorted(_FORMATS)}",
                key="source.format",
            )
        markers = null_markers(self.null_values, key="source.null_values")
        object.__setattr__(self, "null_values", markers)
        object.__setattr__(self, "schema", Schema.from_mapping(self.schema, markers))
        check_time_pattern(self.time_pattern)
        paths = [self.path] if isinstance(self.path, str) else list(self.path)
        for p in paths:
            if not isinstance(p, str) or not p:
                raise JobSpecError(f"expected a path or glob pattern, got {p!r}", key="source.path")
            if "\x00" in p:
                raise JobSpecError(
                    f"{_redact(p)!r} holds a NUL byte, which no file name can; fix the path",
                    key="source.path",
                )

    @property
    def declared(self) -> Schema | None:
        """The declared schema, as a ``Schema`` (``schema`` is given as a mapping too)."""
        return cast("Schema | None", self.schema)

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
            self.declared.token() if self.declared else None,
            self.delimiter,
            self.encoding,
            self.source_column,
            # Only when set: jobs that set neither keep the fingerprints they had.
            *([["null_values", list(self.null_values)]] if self.null_values is not None else []),
            *([["multiline", True]] if self.multiline else []),
        ]

    def list_units(self) -> list[Unit]:
        return list_units(self)

    # -- loading, on a worker ---------------------------------------------------

    def batch_schema(self, unit: Unit) -> pa.Schema | None:
        """The batches' columns: the declared schema, else those of ``unit`` (a first file).

        Read cheaply: a local Parquet file's footer, the first block of a local CSV or
        JSON lines file. None for a remote file without a declared schema, or a file
        that cannot be read (its batch will say why).
        """
        if self.declared is not None:
            schema = self.declared.arrow()
        else:
            from .sample import first_schema

            if "://" in unit.key and not unit.key.startswith("file://"):
                return None  # a remote file is read on the workers, not sampled here
            found = first_schema(self, unit.key)
            if found is None:
                return None
            schema = found
        if self.source_column:
            schema = schema.append(pa.field(self.source_column, pa.string()))
        return schema

    def scan_obstacle(self, mode: BadInputMode) -> str | None:
        """None when batches may be read inside their first query; else why not."""
        from .scan import scan_obstacle

        return scan_obstacle(self, mode)

    def scan(self, batch: Batch, ctx: BatchContext) -> Relation | None:
        """The batch as a DuckDB relation over its local Parquet files, when that is exact.

        The rows are counted and the bad ones quarantined already; None when the
        files' footers say ``load`` must read the batch.
        """
        from .scan import parquet_scan

        return parquet_scan(self, batch, ctx)

    def damaged_file(self, batch: Batch, error: BaseException) -> str | None:
        """The file of ``batch`` that a scan's error names as unreadable, if it names one."""
        from .scan import damaged_file

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
        return concat(tables, ctx, batch)

    def _empty(self) -> pa.Table:
        if self.declared is not None:
            schema = self.declared.arrow()
            if self.source_column:
                schema = schema.append(pa.field(self.source_column, pa.string()))
            return empty_table(schema)
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

    def open(self, key: str) -> Any:
        """The file ``key``, opened for reading bytes (decompressed by its suffix)."""
        if not self.storage_options and "://" not in key and infer_compression(key) is None:
            return open(key, "rb")  # a plain local file: fsspec's path handling costs more
        return fsspec.open(key, "rb", compression="infer", **dict(self.storage_options))

    def _load_unit(self, key: str, ctx: BatchContext) -> pa.Table | None:
        fmt = self.format_of(key)
        failure = None
        try:
            with self.open(key) as f:
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
        return _READERS[fmt](self, key, data, ctx)


def _read_csv(source: Files, key: str, data: bytes, ctx: BatchContext) -> pa.Table | None:
    from .csv import read_csv

    return read_csv(source, key, data, ctx)


def _read_parquet(source: Files, key: str, data: bytes, ctx: BatchContext) -> pa.Table | None:
    from .parquet import read_parquet

    return read_parquet(source, key, data, ctx)


def _read_jsonl(source: Files, key: str, data: bytes, ctx: BatchContext) -> pa.Table | None:
    from .jsonl import read_jsonl

    return read_jsonl(source, key, data, ctx)


_READERS = {"csv": _read_csv, "parquet": _read_parquet, "jsonl": _read_jsonl}


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
    from ...errors import TransientError, is_transient

    message = f"reading {_redact(key)!r} failed: {type(e).__name__}: {_redact(str(e))[:500]}"
    return TransientError(message) if is_transient(e) else SourceError(message)


_redact = redact  # the name used throughout this module
