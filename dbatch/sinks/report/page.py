"""The report page: a header, the charts and the per-batch table, as one self-contained HTML file."""

from __future__ import annotations

import html
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from ...core import BATCH_COLUMNS, ROW_COUNTS, row_balance
from .figures import batch_figure, data_figure, kinds_figure

if TYPE_CHECKING:
    from .sink import ReportSink

__all__ = ["DATA_FOLDER", "MAX_TABLE_ROWS", "STATE_COLORS", "render_page", "batch_rows"]

DATA_FOLDER = "data"  # a folder of its own, so Parquet readers do not trip over the page
MAX_TABLE_ROWS = 500  # rows of the per-batch table

#: Bar colour of a batch in the run charts, by its state (any other state: orange).
STATE_COLORS = {
    "committed": "#1f77b4",
    "already done": "#9e9e9e",
    "quarantined": "#d62728",
}


def render_page(
    sink: ReportSink, run_id: str, summary: dict[str, Any], chart: pa.Table | None
) -> str:
    """The whole page for run ``run_id``, with Bokeh's JavaScript inlined (it reads offline)."""
    from bokeh.embed import file_html
    from bokeh.layouts import column
    from bokeh.models.widgets.markups import Div
    from bokeh.resources import INLINE

    title = sink.title or f"{summary.get('job', 'dbatch')} report"
    stats = batch_rows(summary.get("batch_stats") or [])
    items: list[Any] = [Div(text=_header_html(title, run_id, summary, stats), name="header")]
    if chart is not None and chart.num_rows:
        items.append(data_figure(sink, chart))
    elif sink.x is not None:
        items.append(
            Div(
                text=f"<p>No rows to chart ({html.escape(sink.y or '')} by "
                f"{html.escape(sink.x)}).</p>",
                name="chart-data-empty",
            )
        )
    items += _quarantine_items(summary.get("batch_stats") or [], stats)
    slowest = max(stats["duration"], default=0.0)
    items.append(
        batch_figure(stats, "duration", f"Batch durations (slowest {slowest:.2f} s)", "seconds")
    )
    items.append(Div(text=_table_html(stats), name="batch-table"))
    layout = column(*items, sizing_mode="stretch_width")
    return file_html(layout, INLINE, title=title)


def _quarantine_items(raw: Sequence[dict[str, Any]], stats: dict[str, list[Any]]) -> list[Any]:
    """The quarantine charts (by kind, per batch), or one line when nothing was set aside."""
    from bokeh.models.widgets.markups import Div

    bad, files = sum(stats["rows_quarantined"]), sum(stats["files_quarantined"])
    aside = stats["state"].count("quarantined")
    if not (bad or files or aside):
        return [
            Div(
                text=f"<p><b>Nothing was quarantined</b>: no row, file or batch of the "
                f"{len(stats['number']):,} batches was set aside.</p>",
                name="quarantine-none",
            )
        ]
    kinds: dict[str, int] = {}
    for row in raw:
        for kind, n in (row.get("quarantine_kinds") or {}).items():
            kinds[kind] = kinds.get(kind, 0) + int(n)
    if aside:
        kinds["(whole batch)"] = aside
    items: list[Any] = [kinds_figure(kinds)] if kinds else []
    title = f"Rows quarantined per batch ({bad:,} in all"
    title += f"; {files:,} files)" if files else ")"
    items.append(batch_figure(stats, "rows_quarantined", title, "rows"))
    return items


def batch_rows(stats: Sequence[dict[str, Any]]) -> dict[str, list[Any]]:
    """The run summary's batch statistics as columns, one row per batch in plan order.

    A batch is labelled by its time window (``2026-11-01``) when batched by window,
    else by its id.

    Examples
    --------
    >>> rows = batch_rows([{"batch_id": "b1", "state": "committed", "rows_in": 3}])
    >>> rows["number"], rows["label"], rows["color"], rows["rows_in"], rows["duration"]
    ([1], ['b1'], ['#1f77b4'], [3], [0.0])
    """
    counts = (*ROW_COUNTS, "files_quarantined")
    names = ("number", "label", "batch_id", "state", "color", "attempts", *counts, "duration")
    columns: dict[str, list[Any]] = {k: [] for k in names}
    for i, row in enumerate(stats, start=1):
        state = str(row.get("state") or "")
        columns["number"].append(i)
        columns["batch_id"].append(str(row.get("batch_id", "")))
        columns["label"].append(str(row.get("window") or row.get("batch_id") or f"#{i}"))
        columns["state"].append(state)
        columns["color"].append(STATE_COLORS.get(state, "#ff7f0e"))
        columns["attempts"].append(int(row.get("attempts") or 0))
        for key in counts:
            columns[key].append(int(row.get(key) or 0))
        columns["duration"].append(round(float(row.get("duration") or 0.0), 3))
    if len(set(columns["label"])) < len(columns["label"]):  # windows shared: ids tell apart
        columns["label"] = [
            w if w == b else f"{w} {b}"
            for w, b in zip(columns["label"], columns["batch_id"], strict=True)
        ]
    return columns


def _header_html(
    title: str, run_id: str, summary: dict[str, Any], stats: dict[str, list[Any]]
) -> str:
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
