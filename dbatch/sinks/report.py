"""A report sink: the run's output as Parquet plus one self-contained HTML page of Bokeh charts."""

from __future__ import annotations

import html
import json
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from ..core import BATCH_COLUMNS, ROW_COUNTS, row_balance
from ..errors import JobSpecError
from ..arrow import as_arrow
from .base import Part, PublishedDirectory, Sink, file_checksum, local_path

__all__ = ["ReportSink"]

AGGREGATIONS = ("sum", "mean", "min", "max")
MAX_GROUPS = 20  # lines (or bar colours) in the data chart; the largest groups are kept
MAX_CATEGORIES = 100  # bars along a text x axis
MAX_TABLE_ROWS = 500  # rows of the per-batch table
LAYOUT_VERSION = 1  # bump when the page changes, so the next run renders it again
REPORT_FILE = "report.html"
DATA_FOLDER = "data"  # a folder of its own, so Parquet readers do not trip over the page

_STATE_COLORS = {
    "committed": "#1f77b4",
    "already done": "#9e9e9e",
    "quarantined": "#d62728",
}


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
        chart = self._chart_frame([f for _, f in files]) if self.x else None
        page = _render_page(self, run_id, summary, chart)
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
        for key in ("x", "y", "by"):
            column = getattr(self, key)
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

    def _chart_frame(self, files: Sequence[Path]):
        """``y`` combined per ``x`` (and ``by``), one file at a time: memory follows the groups."""
        import pyarrow.parquet as pq

        keys = [self.x] if self.by is None else [self.x, self.by]
        needed = ("sum", "count") if self.agg == "mean" else (self.agg,)
        partials = []
        for f in files:
            table = pq.read_table(f, columns=[*keys, self.y])
            value = pc.cast(table[self.y], pa.float64())
            table = table.set_column(table.schema.get_field_index(self.y), self.y, value)
            partials.append(table.group_by(keys).aggregate([(self.y, a) for a in needed]))
        if not partials:
            return None
        combined = pa.concat_tables(partials, promote_options="permissive")
        again = {"sum": "sum", "count": "sum", "min": "min", "max": "max"}
        totals = combined.group_by(keys).aggregate([(f"{self.y}_{a}", again[a]) for a in needed])
        if self.agg == "mean":
            value = pc.divide(totals[f"{self.y}_sum_sum"], totals[f"{self.y}_count_sum"])
        else:
            value = totals[f"{self.y}_{self.agg}_{again[self.agg]}"]
        group = (
            pc.fill_null(pc.cast(totals[self.by], pa.string()), "(empty)")
            if self.by
            else pa.array([self.y] * totals.num_rows, pa.string())
        )
        frame = pa.table({"x": totals[self.x], "group": group, "value": value})
        return frame.filter(pc.is_valid(frame["x"])).sort_by([("x", "ascending")])


# -- the page ---------------------------------------------------------------------------


def _render_page(sink: ReportSink, run_id: str, summary: dict[str, Any], chart) -> str:
    from bokeh.embed import file_html
    from bokeh.layouts import column
    from bokeh.models.widgets.markups import Div
    from bokeh.resources import INLINE

    title = sink.title or f"{summary.get('job', 'dbatch')} report"
    stats = _batch_rows(summary.get("batch_stats") or [])
    items: list[Any] = [Div(text=_header_html(title, run_id, summary, stats), name="header")]
    if chart is not None and chart.num_rows:
        items.append(_data_figure(sink, chart))
    elif sink.x is not None:
        items.append(
            Div(
                text=f"<p>No rows to chart ({html.escape(sink.y or '')} by "
                f"{html.escape(sink.x)}).</p>",
                name="chart-data-empty",
            )
        )
    bad = sum(stats["rows_quarantined"])
    items.append(
        _batch_figure(
            stats, "rows_quarantined", f"Rows quarantined per batch ({bad:,} in all)", "rows"
        )
    )
    slowest = max(stats["duration"], default=0.0)
    items.append(
        _batch_figure(stats, "duration", f"Batch durations (slowest {slowest:.2f} s)", "seconds")
    )
    items.append(Div(text=_table_html(stats), name="batch-table"))
    layout = column(*items, sizing_mode="stretch_width")
    return file_html(layout, INLINE, title=title)


def _batch_rows(stats: Sequence[dict[str, Any]]) -> dict[str, list[Any]]:
    counts = (*ROW_COUNTS, "files_quarantined")
    columns: dict[str, list[Any]] = {
        k: [] for k in ("number", "batch_id", "state", "color", "attempts", *counts, "duration")
    }
    for i, row in enumerate(stats, start=1):
        state = str(row.get("state") or "")
        columns["number"].append(i)
        columns["batch_id"].append(str(row.get("batch_id", "")))
        columns["state"].append(state)
        columns["color"].append(_STATE_COLORS.get(state, "#ff7f0e"))
        columns["attempts"].append(int(row.get("attempts") or 0))
        for key in counts:
            columns[key].append(int(row.get(key) or 0))
        columns["duration"].append(round(float(row.get("duration") or 0.0), 3))
    return columns


def _batch_figure(stats: dict[str, list[Any]], field: str, title: str, unit: str):
    from bokeh.models import AdaptiveTicker, ColumnDataSource, DataRange1d, HoverTool
    from bokeh.plotting import figure

    source = ColumnDataSource(stats, name=f"batches-{field}")
    fig = figure(
        title=title,
        height=260,
        sizing_mode="stretch_width",
        x_axis_label="batch (plan order)",
        y_axis_label=unit,
        y_range=DataRange1d(start=0),
        tools="pan,wheel_zoom,box_zoom,reset,save",
        name=f"chart-{field}",
    )
    fig.vbar(x="number", top=field, width=0.8, source=source, color="color", legend_field="state")
    fig.xaxis.ticker = AdaptiveTicker(min_interval=1, num_minor_ticks=0)  # whole batch numbers
    fig.legend.location = "top_left"
    fig.add_tools(
        HoverTool(
            tooltips=[
                ("batch", "@batch_id (#@number)"),
                ("state", "@state, @attempts attempt(s)"),
                (
                    "rows",
                    "@rows_in in = @rows_out out + @rows_filtered filtered "
                    "+ @rows_quarantined quarantined",
                ),
                ("files quarantined", "@files_quarantined"),
                ("duration", "@duration s"),
            ]
        )
    )
    return fig


def _data_figure(sink: ReportSink, chart: pa.Table):
    from bokeh.models import ColumnDataSource, FactorRange, HoverTool
    from bokeh.palettes import Category10_10, Category20_20
    from bokeh.plotting import figure

    frame = chart.to_pandas()
    totals = frame.groupby("group")["value"].apply(lambda v: v.abs().sum())
    groups = sorted(totals.sort_values(ascending=False).index[:MAX_GROUPS].tolist())
    frame = frame[frame["group"].isin(groups)]
    palette = Category10_10 if len(groups) <= 10 else Category20_20
    colors = dict(zip(groups, palette, strict=False))
    label = f"{sink.agg} of {sink.y} per {sink.x}" + (f" and {sink.by}" if sink.by else "")
    if len(totals) > len(groups):
        label += f" (the {len(groups)} largest of {len(totals)} groups)"
    kind = chart.schema.field("x").type
    temporal = pa.types.is_temporal(kind)
    if temporal or pa.types.is_integer(kind) or pa.types.is_floating(kind):
        fig = figure(
            title=label,
            height=360,
            sizing_mode="stretch_width",
            x_axis_type="datetime" if temporal else "linear",
            x_axis_label=sink.x,
            y_axis_label=sink.y,
            name="chart-data",
        )
        xs = _x_values(frame["x"], temporal)
        for group in groups:
            mask = (frame["group"] == group).to_numpy()
            source = ColumnDataSource(
                {
                    "x": xs[mask],
                    "value": frame["value"].to_numpy()[mask],
                    "group": [group] * int(mask.sum()),
                },
                name=f"data-{group}",
                tags=["data"],
            )
            fig.line("x", "value", source=source, color=colors[group], legend_label=group)
            fig.scatter("x", "value", source=source, color=colors[group], size=6)
        dates = pa.types.is_date(kind)
        if dates:
            _day_axis(fig, xs)
        x_tip = ("x", "@x{%F}" if dates else "@x{%F %T}") if temporal else ("x", "@x")
        fig.add_tools(
            HoverTool(
                tooltips=[("group", "@group"), x_tip, (str(sink.y), "@value{0,0.[00]}")],
                formatters={"@x": "datetime"} if temporal else {},
            )
        )
    else:
        labels = frame["x"].astype(str)
        categories = sorted(labels.unique().tolist())
        if len(categories) > MAX_CATEGORIES:
            categories = categories[:MAX_CATEGORIES]
            fig_note = f" (first {MAX_CATEGORIES} values of {sink.x})"
        else:
            fig_note = ""
        keep = labels.isin(categories).to_numpy()
        factors = [
            (x, g) if sink.by else x
            for x, g in zip(labels[keep].tolist(), frame["group"][keep].tolist(), strict=True)
        ]
        order = [(c, g) for c in categories for g in groups] if sink.by else categories
        present = set(factors)
        fig = figure(
            title=label + fig_note,
            height=360,
            sizing_mode="stretch_width",
            x_range=FactorRange(factors=[f for f in order if f in present]),
            x_axis_label=sink.x,
            y_axis_label=sink.y,
            name="chart-data",
        )
        source = ColumnDataSource(
            {
                "x": factors,
                "value": frame["value"].to_numpy()[keep],
                "group": frame["group"][keep].tolist(),
                "color": [colors[g] for g in frame["group"][keep].tolist()],
            },
            name="data-bars",
            tags=["data"],
        )
        fig.vbar(x="x", top="value", width=0.9, source=source, color="color", legend_field="group")
        fig.xaxis.major_label_orientation = 0.8
        fig.add_tools(HoverTool(tooltips=[("x", "@x"), (str(sink.y), "@value{0,0.[00]}")]))
    fig.legend.location = "top_left"
    fig.legend.click_policy = "hide"
    return fig


def _day_axis(fig, days) -> None:
    """Label a date axis with dates; with a month or less of days, tick exactly on them."""
    import numpy as np
    from bokeh.models import DatetimeTickFormatter, FixedTicker

    distinct = np.unique(days)
    if len(distinct) <= 31:
        ms = distinct.astype("datetime64[ms]").astype("int64")
        fig.xaxis.ticker = FixedTicker(ticks=[float(v) for v in ms])
    fig.xaxis.formatter = DatetimeTickFormatter(
        hours="%F %H:%M", days="%F", months="%Y-%m", years="%Y", context=None
    )


def _x_values(series, temporal: bool):
    import numpy as np
    import pandas as pd

    if not temporal:
        return series.to_numpy(dtype="float64")
    stamps = pd.to_datetime(series)
    if getattr(stamps.dt, "tz", None) is not None:
        stamps = stamps.dt.tz_convert(None)
    return np.asarray(stamps.to_numpy(dtype="datetime64[ns]"))


def _header_html(title: str, run_id: str, summary: dict[str, Any], stats) -> str:
    e = html.escape
    states = stats["state"]
    now = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    done = states.count("committed")
    earlier = states.count("already done")
    quarantined = states.count("quarantined")
    return (
        f"<h1>{e(title)}</h1>"
        f"<p>Run <code>{e(run_id)}</code> of job <code>{e(str(summary.get('job', '')))}</code>, "
        f"published {e(now)}.</p>"
        f"<p>{len(states)} batches: {done} committed in this run, {earlier} already done, "
        f"{quarantined} quarantined. Rows: {row_balance(summary)}"
        f" ({int(summary.get('files_quarantined') or 0):,} files quarantined).</p>"
        f"<p>Published data: {int(summary.get('output_rows') or 0):,} rows in the "
        f"<code>{DATA_FOLDER}/</code> folder next to this page (Parquet).</p>"
    )


def _table_html(stats: dict[str, list[Any]]) -> str:
    e = html.escape
    heads = ["#", "batch", "state", "attempts", "in", "out", "filtered", "quarantined", "seconds"]
    keys = ["number", *BATCH_COLUMNS, "duration"]
    n = len(stats["number"])
    body = "".join(
        "<tr>" + "".join(f"<td>{e(str(stats[k][i]))}</td>" for k in keys) + "</tr>"
        for i in range(min(n, MAX_TABLE_ROWS))
    )
    note = f"<p>First {MAX_TABLE_ROWS} of {n} batches.</p>" if n > MAX_TABLE_ROWS else ""
    return (
        "<details><summary>Batches</summary><table><thead><tr>"
        + "".join(f"<th>{h}</th>" for h in heads)
        + f"</tr></thead><tbody>{body}</tbody></table>{note}</details>"
    )
