"""File sinks: Parquet (the default) and CSV, each published atomically per run."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from ..arrow import as_arrow
from ..errors import JobSpecError, PathEscapeError
from ..layout import HIVE_NULL, hive_folder
from .base import (
    Part,
    PublishedDirectory,
    Sink,
    file_checksum,
    local_path,
    safe_join,
    stage_query_result,
)

__all__ = ["ParquetSink", "CsvSink"]


@dataclass(frozen=True)
class _FileSink(Sink):
    path: str
    partition_by: tuple[str, ...] = field(default_factory=tuple)

    suffix = ""

    def __post_init__(self):
        object.__setattr__(self, "path", local_path(self.path, self._kind))
        parts = self.partition_by
        object.__setattr__(
            self, "partition_by", (parts,) if isinstance(parts, str) else tuple(parts)
        )

    @property
    def _kind(self) -> str:
        return type(self).__name__.removesuffix("Sink").lower()

    @property
    def location(self) -> str:
        return str(self.path)

    def describe(self) -> str:
        return f"{self._kind} {self.path}"

    def token(self) -> list[Any]:
        return [type(self).__name__, list(self.partition_by)]

    def _write(self, table: pa.Table, path: Path) -> None:  # pragma: no cover
        raise NotImplementedError

    def stage(self, data, directory: Path, name: str) -> dict[str, Any]:
        table = as_arrow(data)
        files = []
        for subdir, piece in self._split(table):
            target = safe_join(directory, *subdir, encoded=True) if subdir else directory
            target.mkdir(parents=True, exist_ok=True)
            out = target / f"part-{name}{self.suffix}"
            self._write(piece, out)
            files.append(_listed(out, directory, piece.num_rows))
        return _write_listing(directory, files, table.num_rows)

    def _combos(self, table: pa.Table) -> list[dict[str, Any]]:
        """The distinct combinations of partition values of ``table``, in a stable order."""
        missing = [c for c in self.partition_by if c not in table.column_names]
        if missing:
            raise JobSpecError(
                f"partition column(s) {missing} are not in the output; it has {table.column_names}",
                key="sink.partition_by",
            )
        keys = table.select(list(self.partition_by))
        combos = keys.group_by(list(self.partition_by)).aggregate([]).to_pylist()
        return sorted(combos, key=lambda d: [str(v) for v in d.values()])

    def _split(self, table: pa.Table):
        if not self.partition_by:
            yield (), table
            return
        rest = [c for c in table.column_names if c not in self.partition_by]
        folders: dict[tuple[str, ...], Any] = {}  # None and "" share the null folder
        for combo in self._combos(table):
            # A batch set such rows aside before staging; an aggregate's reduce cannot.
            why = next(filter(None, (_refusal(c, v) for c, v in combo.items())), None)
            if why is not None:
                raise PathEscapeError(f"{why}; nothing of this part was written")
            subdir = tuple(hive_folder(col, v) for col, v in combo.items())
            mask = _rows_of(table, combo)
            folders[subdir] = pc.or_(folders[subdir], mask) if subdir in folders else mask
        for subdir, mask in folders.items():
            yield subdir, table.filter(mask).select(rest)

    def refused_rows(self, data: Any) -> list[tuple[int, str]]:
        """(row, reason) of each row whose partition values cannot name a folder.

        Values are percent-encoded as Hive does, so nearly every value can; not
        ``.`` or ``..``, a value longer than a folder name may be, or the text
        ``__HIVE_DEFAULT_PARTITION__``, which readers take for null.
        """
        if not self.partition_by:
            return []
        table = as_arrow(data)
        refused: list[tuple[int, str]] = []
        for combo in self._combos(table):
            why = next(filter(None, (_refusal(c, v) for c, v in combo.items())), None)
            if why is not None:
                rows = pc.indices_nonzero(_rows_of(table, combo)).to_pylist()
                refused.extend((int(i), why) for i in rows)
        return sorted(refused)

    def publish(
        self, run_id: str, parts: Sequence[Part], summary: dict[str, Any]
    ) -> dict[str, Any]:
        files: list[tuple[str, Path]] = []
        listing = []
        for part in parts:
            staged = _staged_checksums(part.directory)
            for f in sorted(part.directory.rglob(f"*{self.suffix}")):
                rel = f.relative_to(part.directory)
                if rel.name.startswith("_"):  # dbatch's own files (_quarantine.parquet)
                    continue
                files.append((str(rel), f))
                size = f.stat().st_size
                known = staged.get((str(rel), size))
                listing.append(
                    {"path": str(rel), "bytes": size, "sha256": known or file_checksum(f)}
                )
        manifest = {"run_id": run_id, "files": listing, **summary}
        final = PublishedDirectory(self.path).publish(run_id, files, manifest)
        return {"path": str(self.path), "version": str(final), "files": len(listing)}

    def current_manifest(self) -> dict[str, Any] | None:
        """The manifest of the version readers see now (None before the first run)."""
        import json

        manifest = Path(self.path) / "_manifest.json"
        if not manifest.exists():
            return None
        try:
            return json.loads(manifest.read_text())
        except ValueError:
            return None


_SAMPLE_ROWS = 10_000


def _dictionary_columns(table: pa.Table) -> bool | list[str]:
    """The columns worth dictionary-encoding in Parquet.

    pyarrow encodes every column with a dictionary until the dictionary grows too
    large; for measurements, scores or amounts, where nearly every value differs,
    that is wasted work (a 500,000-row table of floats: 0.27 s instead of 0.06 s)
    and a larger file. A number or timestamp column keeps its dictionary only when
    fewer than half of the first rows differ; text and other types always do.
    """
    if any(pa.types.is_nested(f.type) for f in table.schema):
        return True  # leave nested columns to pyarrow
    sample = table.slice(0, _SAMPLE_ROWS)
    keep = []
    for col in table.schema:
        t = col.type
        numeric = pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_temporal(t)
        if numeric and sample.num_rows:
            distinct = pc.count_distinct(sample.column(col.name), mode="all").as_py()
            if 2 * distinct > sample.num_rows:
                continue
        keep.append(col.name)
    return keep


# ParquetSink compression -> DuckDB's name for it, where both write the same codec.
_DUCKDB_CODECS = {
    "snappy": "snappy",
    "zstd": "zstd",
    "gzip": "gzip",
    "none": "uncompressed",
    "uncompressed": "uncompressed",
}
# DuckDB types whose Parquet form matches what pyarrow writes for their Arrow form.
_PLAIN_TYPES = frozenset(
    {"BOOLEAN", "TINYINT", "SMALLINT", "INTEGER", "BIGINT", "FLOAT", "DOUBLE", "VARCHAR", "DATE"}
)

_LISTING = "_files.json"  # written by stage: each file's path, rows, bytes and checksum


def _listed(path: Path, directory: Path, rows: int) -> dict[str, Any]:
    return {
        "path": str(path.relative_to(directory)),
        "rows": rows,
        "bytes": path.stat().st_size,
        "sha256": file_checksum(path),
    }


def _write_listing(directory: Path, files: list[dict[str, Any]], rows: int) -> dict[str, Any]:
    # The checksums travel with the files, so that publishing need not read them again.
    (directory / _LISTING).write_text(json.dumps(files))
    return {"files": files, "rows": rows}


def _staged_checksums(directory: Path) -> dict[tuple[str, int], str]:
    """(path, bytes) -> checksum, as ``stage`` recorded them; empty if it did not."""
    try:
        entries = json.loads((directory / _LISTING).read_text())
        return {(e["path"], int(e["bytes"])): str(e["sha256"]) for e in entries}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def _rows_of(table: pa.Table, combo: dict[str, Any]) -> Any:
    """A mask of the rows of ``table`` with the partition values ``combo``."""
    mask = None
    for col, value in combo.items():
        m = pc.is_null(table[col]) if value is None else pc.equal(table[col], value)
        mask = m if mask is None else pc.and_(mask, m)
    return pc.fill_null(mask, False)


_NAME_MAX = 255  # bytes in a folder name on Linux, macOS and Windows file systems


def _refusal(column: str, value: Any) -> str | None:
    """Why the partition value ``value`` of ``column`` cannot name a folder (None: it can)."""
    folder = hive_folder(column, value)
    if value == HIVE_NULL:
        return (
            f"partition column {column!r}: the value {HIVE_NULL!r} is how a null value is "
            "written, so readers would take it for null; change the value in a step"
        )
    if len(folder.encode()) > _NAME_MAX:
        return (
            f"partition column {column!r}: the value {str(value)[:60]!r}... makes a folder "
            f"name of {len(folder.encode())} bytes, more than the {_NAME_MAX} a file system allows"
        )
    try:
        safe_join(".", folder, encoded=True)
    except PathEscapeError as e:
        return f"partition column {column!r}: the value {value!r} cannot name a folder: {e}"
    return None


@dataclass(frozen=True)
class ParquetSink(_FileSink):
    """Write Parquet files under ``path``, published atomically when the run completes.

    ``path`` becomes a link to the run's complete version; readers
    (``pandas.read_parquet(path)``, DuckDB, Spark) see the old output or the new
    one, never part of a run. ``_manifest.json`` lists files, rows and checksums;
    ``_SUCCESS`` marks a complete version.

    Examples
    --------
    >>> ParquetSink("out/daily_totals")  # doctest: +SKIP
    """

    compression: str = "snappy"
    suffix = ".parquet"

    def token(self) -> list[Any]:
        return [*super().token(), self.compression]  # it shapes the files a batch commits

    def stage_query(
        self, sql: str, tables: dict[str, Any], directory: Path, name: str
    ) -> tuple[dict[str, Any], int]:
        """DuckDB writes the file itself, when the rows need no splitting and every
        column has a type both writers store alike: the rows never become Arrow."""
        from ..engine import copy_to_parquet

        codec = _DUCKDB_CODECS.get(self.compression.lower())
        if self.partition_by or codec is None:
            return stage_query_result(self, sql, tables, directory, name)
        out = directory / f"part-{name}{self.suffix}"
        rows = copy_to_parquet(sql, tables, out, codec, _PLAIN_TYPES)
        if rows is None:  # a column type the two writers could store differently
            return stage_query_result(self, sql, tables, directory, name)
        return _write_listing(directory, [_listed(out, directory, rows)], rows), rows

    def _write(self, table: pa.Table, path: Path) -> None:
        import pyarrow.parquet as pq

        pq.write_table(
            table,
            path,
            compression=self.compression,
            use_dictionary=_dictionary_columns(table),
        )


@dataclass(frozen=True)
class CsvSink(_FileSink):
    """CSV exports with a header, one file per batch (or per reduce bucket)."""

    suffix = ".csv"

    def _write(self, table: pa.Table, path: Path) -> None:
        import pyarrow.csv as pacsv

        pacsv.write_csv(table, path)
