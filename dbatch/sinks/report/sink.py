"""The report sink: stage Parquet parts, then publish them with the rendered page in one switch."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from ...arrow import as_arrow
from ...errors import JobSpecError
from ..base import Part, PublishedDirectory, Sink, file_checksum, local_path
from .data import AGGREGATIONS, chart_frame
from .page import DATA_FOLDER, render_page

__all__ = ["ReportSink", "LAYOUT_VERSION", "REPORT_FILE"]

LAYOUT_VERSION = 2  # bump when the page changes, so the next run renders it again
REPORT_FILE = "report.html"


@dataclass(frozen=True)
class ReportSink(Sink):
    """Publish the run's output as Parquet and one HTML report that reads offline.

    ``path`` becomes a folder, switched atomically to each run's complete
    version (like ``ParquetSink``): ``report.html``, the data as Parquet
    in ``data/``, ``_manifest.json`` and ``_SUCCESS``. A reader sees the
    previous report or the new one, never part of one. The page embeds Bokeh's
    JavaScript (no network needed) and always shows rows quarantined and the
    duration of every batch; with ``x`` and ``y`` it also charts the data:
    ``y`` combined with ``agg`` per value of ``x``, one line (or bar colour)
    per value of ``by``.

    Chart options are not part of the batches' fingerprints: changing them
    renders the report again at the next run without recomputing any batch.

    Parameters
    ----------
    path
        The folder to publish (a local or mounted path).
    title
        The page's title; default ``"<job> report"``.
    x, y
        Columns of the data chart. A date, time or number ``x`` draws lines; any
        other ``x`` draws bars. ``y`` must hold numbers.
    by
        One line per value of this column (the largest 20 are drawn).
    agg
        How ``y`` values with the same ``x`` (and ``by``) combine: ``sum``,
        ``mean``, ``min`` or ``max``.

    Examples
    --------
    >>> sink = ReportSink("out/report", x="day", y="total_usd", by="currency")
    >>> sink.location
    'out/report/report.html'
    """

    path: str
    title: str = ""
    x: str | None = None
    y: str | None = None
    by: str | None = None
    agg: str = "sum"

    def __post_init__(self):
        object.__setattr__(self, "path", local_path(self.path, "report"))
        if (self.x is None) != (self.y is None):
            missing = "y" if self.y is None else "x"
            raise JobSpecError(
                "the data chart needs both x and y (or neither, for the run charts only)",
                key=f"sink.{missing}",
            )
        if self.by is not None and self.x is None:
            raise JobSpecError("'by' splits the data chart; set x and y too", key="sink.by")
        named = [c for c in (self.x, self.y, self.by) if c is not None]
        if len(set(named)) != len(named):
            raise JobSpecError(f"x, y and by must be different columns; got {named}", key="sink")
        if self.agg not in AGGREGATIONS:
            raise JobSpecError(
                f"unknown aggregation {self.agg!r}; use one of {list(AGGREGATIONS)}",
                key="sink.agg",
            )

    # -- the sink contract ------------------------------------------------------------

    @property
    def location(self) -> str:
        return str(Path(self.path) / REPORT_FILE)

    def describe(self) -> str:
        return f"report {self.path}"

    def token(self) -> list[Any]:
        # Only what shapes the staged files; chart options are checked by current_manifest.
        return ["ReportSink", "parquet"]

    def stage(self, data: Any, directory: Path, name: str) -> dict[str, Any]:
        """Write one batch (or reduce bucket) as ``part-<name>.parquet`` below ``directory``."""
        import pyarrow.parquet as pq

        table = as_arrow(data)
        self._check_columns(table.schema)
        out = Path(directory) / f"part-{name}.parquet"
        pq.write_table(table, out)
        listing = {"path": out.name, "rows": table.num_rows, "sha256": file_checksum(out)}
        return {"files": [listing], "rows": table.num_rows}

    def publish(
        self, run_id: str, parts: Sequence[Part], summary: dict[str, Any]
    ) -> dict[str, Any]:
        """Render the report from the committed parts; publish it with the data in one switch."""
        root = Path(self.path)
        root.parent.mkdir(parents=True, exist_ok=True)
        target = PublishedDirectory(root)
        target.check_target()
        files = [
            (f"{DATA_FOLDER}/{f.name}", f)
            for part in parts
            for f in sorted(part.directory.glob("part-*.parquet"))
        ]
        listing = [
            {"path": name, "bytes": f.stat().st_size, "sha256": file_checksum(f)}
            for name, f in files
        ]
        chart = self._chart([f for _, f in files])
        page = render_page(self, run_id, summary, chart)
        for stale in root.parent.glob(f".{root.name}.render-*"):
            shutil.rmtree(stale, ignore_errors=True)  # left by a driver that died; we hold the lock
        scratch = Path(tempfile.mkdtemp(prefix=f".{root.name}.render-", dir=root.parent))
        try:
            report = scratch / REPORT_FILE
            report.write_text(page, encoding="utf-8")
            manifest = {"run_id": run_id, "files": listing, "report": self._options(), **summary}
            final = target.publish(run_id, [*files, (REPORT_FILE, report)], manifest)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        return {
            "path": str(root),
            "report": self.location,
            "version": str(final),
            "files": len(listing),
        }

    def current_manifest(self) -> dict[str, Any] | None:
        """The published manifest, or None when absent or rendered with other chart options."""
        try:
            manifest = json.loads((Path(self.path) / "_manifest.json").read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(manifest, dict) or manifest.get("report") != self._options():
            return None
        return manifest

    # -- data chart -------------------------------------------------------------------

    def _options(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "x": self.x,
            "y": self.y,
            "by": self.by,
            "agg": self.agg,
            "layout": LAYOUT_VERSION,
        }

    def _check_columns(self, schema: pa.Schema) -> None:
        for key, column in (("x", self.x), ("y", self.y), ("by", self.by)):
            if column is not None and column not in schema.names:
                raise JobSpecError(
                    f"column {column!r} is not in the output; it has {schema.names}",
                    key=f"sink.{key}",
                )
        if self.y is not None:
            kind = schema.field(self.y).type
            if not (
                pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind)
            ):
                raise JobSpecError(
                    f"column {self.y!r} holds {kind}; the chart's y needs numbers "
                    "(cast it in a derive step)",
                    key="sink.y",
                )

    def _chart(self, files: Sequence[Path]) -> pa.Table | None:
        """The data chart's points from the published files; None without a data chart."""
        if not self.x or self.y is None:
            return None
        return chart_frame(files, self.x, self.y, self.by, self.agg)
