"""The dbatch page of the Dask dashboard, drawn with Bokeh from the scheduler's board.

Each browser tab gets a document; a periodic callback (every half second) redraws
what changed from the ``Board`` the plugin keeps. The models carry names
(``dbatch-runs``, ``dbatch-grid``, ...) so that a script can find them.
"""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime
from html import escape
from typing import Any

from bokeh.layouts import column, row
from bokeh.models import (
    ColumnDataSource,
    DatetimeTicker,
    DatetimeTickFormatter,
    FactorRange,
    HoverTool,
    Range1d,
)
from bokeh.models.widgets import Div, Select
from bokeh.plotting import figure

from ..progress import STATE_COLOURS
from .state import STATES, RunView

__all__ = ["run_doc", "batches_doc", "rows_doc", "RunPage"]

_LATEST = "latest"
_GRID_COLUMNS = 50
_GRID_ROWS = 36  # rows shown at least: square cells up to 1800 batches
_HISTORY_EVERY = 10.0
#: The history table: its key -> (title, the ledger's column).
_HISTORY = {
    "run_id": ("run id", "run_id"),
    "status": ("status", "status"),
    "started": ("started (UTC)", "started"),
    "ended": ("ended (UTC)", "ended"),
    "committed": ("committed", "batches_committed"),
    "quarantined": ("quarantined", "batches_quarantined"),
    "failed": ("failed", "batches_failed"),
    "rows_in": ("rows in", "rows_in"),
    "rows_out": ("rows out", "rows_out"),
}
HISTORY_COLUMNS = {key: column for key, (_, column) in _HISTORY.items()}


def _options(values: list[str]) -> list[Any]:
    return list(values)


def _legend() -> str:
    return " ".join(
        f'<span style="color:{STATE_COLOURS[s]};font-size:14px">&#9632;</span> {s}' for s in STATES
    )


def _when(t: float | None) -> str:
    return "" if t is None else datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _seconds(s: float | None) -> str:
    if s is None:
        return ""
    s = int(round(s))
    return (
        f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"
    )


class _Table:
    """Rows as an HTML table in a Div (redrawn whole: a few dozen rows at most)."""

    _CELL = "padding:2px 8px;border-bottom:1px solid #ddd;text-align:left;vertical-align:top"

    def __init__(self, name: str, columns: dict[str, str], width: int = 900):
        self.columns = columns
        self.div = Div(text=self.html({}), name=name, width=width)

    def update(self, data: dict[str, list[Any]]) -> None:
        text = self.html(data)
        if text != self.div.text:
            self.div.text = text

    def html(self, data: dict[str, list[Any]]) -> str:
        head = "".join(f'<th style="{self._CELL}">{escape(t)}</th>' for t in self.columns.values())
        n = len(next(iter(data.values()), [])) if data else 0
        body = "".join(
            "<tr>"
            + "".join(
                f'<td style="{self._CELL}">{escape(str(data[k][i]))}</td>' for k in self.columns
            )
            + "</tr>"
            for i in range(n)
        )
        return (
            '<table style="border-collapse:collapse;font-size:13px">'
            f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
        )


class RunPage:
    """The components of the page, and how each is brought up to date."""

    def __init__(self, scheduler: Any):
        self.scheduler = scheduler
        self.seen: tuple[int, str] = (-1, "")
        self.history_at = 0.0
        self.history_key: tuple[str, str] = ("", "")  # (job, status) when last read
        self.header = Div(
            text="No dbatch run on this scheduler yet.", name="dbatch-header", width=900
        )
        self.select = Select(
            title="Run",
            value=_LATEST,
            options=_options([_LATEST]),
            name="dbatch-select",
            width=420,
        )
        self.select.on_change("value", lambda attr, old, new: self.update())
        self.runs = _Table(
            "dbatch-runs",
            {
                "job": "job",
                "run_id": "run id",
                "status": "status",
                "started": "started (UTC)",
                "elapsed": "elapsed",
                "eta": "ETA",
                "batches": "batches ended",
            },
        )
        self.grid = self._grid_figure()
        self.rates = self._rates_figure()
        self.kinds = self._kinds_figure()
        self.errors = _Table(
            "dbatch-errors",
            {"time": "time (UTC)", "batch_id": "batch", "state": "state", "message": "message"},
        )
        self.history = _Table(
            "dbatch-history",
            {key: title for key, (title, _) in _HISTORY.items()},
        )
        self.history_title = Div(text="", name="dbatch-history-title", width=900)
        self.root = column(
            self.header,
            self.select,
            self.runs.div,
            row(column(self.grid, Div(text=_legend(), width=520)), column(self.rates, self.kinds)),
            Div(text="<b>Last errors</b>"),
            self.errors.div,
            self.history_title,
            self.history.div,
            name="dbatch-page",
        )

    def _grid_figure(self) -> Any:
        self.grid_source = ColumnDataSource(
            {
                k: []
                for k in (
                    "x",
                    "y",
                    "colour",
                    "batch",
                    "state",
                    "attempts",
                    "rows_in",
                    "rows_out",
                    "rows_filtered",
                    "rows_quarantined",
                    "duration",
                )
            },
            name="dbatch-grid-source",
        )
        fig = figure(
            title="Batches",
            width=520,
            height=420,
            tools="",
            toolbar_location=None,
            x_range=Range1d(start=-0.5, end=_GRID_COLUMNS - 0.5),
            y_range=Range1d(start=_GRID_ROWS - 0.5, end=-0.5),
            name="dbatch-grid",
        )
        fig.rect(
            "x",
            "y",
            width=0.9,
            height=0.9,
            fill_color="colour",
            line_color=None,
            source=self.grid_source,
        )
        fig.axis.visible = False
        fig.grid.visible = False
        fig.add_tools(
            HoverTool(
                tooltips=[
                    ("batch", "@batch"),
                    ("state", "@state"),
                    ("attempts", "@attempts"),
                    ("rows in", "@rows_in"),
                    ("rows out", "@rows_out"),
                    ("filtered", "@rows_filtered"),
                    ("quarantined", "@rows_quarantined"),
                    ("duration", "@duration{0.00} s"),
                ]
            )
        )
        return fig

    def _rates_figure(self) -> Any:
        self.rates_source = ColumnDataSource({"time": [], "rate": []}, name="dbatch-rates-source")
        fig = figure(
            title="Rows per second (read)",
            width=380,
            height=200,
            x_axis_type="datetime",
            tools="",
            toolbar_location=None,
            name="dbatch-rates",
        )
        fig.xaxis.formatter = DatetimeTickFormatter(
            milliseconds="%H:%M:%S", seconds="%H:%M:%S", minsec="%H:%M:%S", minutes="%H:%M"
        )
        fig.xaxis[0].ticker = DatetimeTicker(desired_num_ticks=4)
        fig.line("time", "rate", source=self.rates_source, line_width=2)
        fig.scatter("time", "rate", source=self.rates_source, size=4)
        return fig

    def _kinds_figure(self) -> Any:
        self.kinds_source = ColumnDataSource({"kind": [], "rows": []}, name="dbatch-kinds-source")
        fig = figure(
            title="Quarantined by kind (rows; files)",
            width=380,
            height=200,
            y_range=FactorRange(factors=[]),
            tools="hover",
            tooltips="@kind: @rows",
            toolbar_location=None,
            name="dbatch-kinds",
        )
        fig.hbar(y="kind", right="rows", height=0.7, source=self.kinds_source, color="#e67e22")
        return fig

    # -- updates ------------------------------------------------------------------

    def board(self) -> Any:
        from .plugin import plugin_of

        plugin = plugin_of(self.scheduler)
        return None if plugin is None else plugin.board

    def update(self) -> None:
        board = self.board()
        if board is None or not board.runs:
            return
        now = time.time()
        self._update_runs(board, now)
        view = board.runs.get(self.select.value) or board.latest()
        if view is None:
            return
        self.header.text = self._header(view, now)
        key = (view.version, view.run_id)
        if key != self.seen:
            self.seen = key
            self._update_view(view)
        self._update_history(view, now)

    def _update_runs(self, board: Any, now: float) -> None:
        views = list(reversed(board.runs.values()))
        options = [_LATEST] + [v.run_id for v in views]
        if options != self.select.options:
            self.select.options = _options(options)
        self.runs.update(
            {
                "job": [v.job for v in views],
                "run_id": [v.run_id for v in views],
                "status": [v.status for v in views],
                "started": [_when(v.started) for v in views],
                "elapsed": [_seconds(v.elapsed(now)) for v in views],
                "eta": [_seconds(v.eta(now)) for v in views],
                "batches": [f"{v.ended}/{v.total}" for v in views],
            },
        )

    def _header(self, v: RunView, now: float) -> str:
        c = v.counts()
        eta = v.eta(now)
        parts = [f"{c[s]} {s}" for s in STATES if c[s]]
        return (
            f"<b>{v.job}</b> run <code>{v.run_id}</code>: <b>{v.status}</b> · "
            f"{v.ended}/{v.total} batches ({', '.join(parts) or 'none yet'}) · "
            f"rows in {v.rows[0]:,}, out {v.rows[1]:,}, filtered {v.rows[2]:,}, "
            f"quarantined {v.rows[3]:,} · elapsed {_seconds(v.elapsed(now))}"
            + (f" · ETA {_seconds(eta)}" if eta is not None else "")
        )

    def _update_view(self, v: RunView) -> None:
        self.grid_source.data = grid_data(v)
        n = max(len(v.cells), 1)
        rows = max(math.ceil(n / _GRID_COLUMNS), _GRID_ROWS)  # the first row on top
        self.grid.y_range.start, self.grid.y_range.end = rows - 0.5, -0.5
        self.grid.title.text = f"Batches of {v.run_id}" + (
            f" (the first {len(v.cells):,} of {v.total:,})" if v.total > len(v.cells) else ""
        )
        xs, ys = v.rates()
        self.rates_source.data = {"time": [x * 1000 for x in xs], "rate": ys}
        kinds = sorted(v.kinds.items(), key=lambda kv: -kv[1])
        self.kinds.y_range.factors = [k for k, _ in kinds]
        self.kinds_source.data = {"kind": [k for k, _ in kinds], "rows": [n for _, n in kinds]}
        errors = list(reversed(v.errors))
        self.errors.update(
            {
                "time": [_when(e[0]) for e in errors],
                "batch_id": [e[1] for e in errors],
                "state": [e[2] for e in errors],
                "message": [e[3] for e in errors],
            },
        )

    def _update_history(self, v: RunView, now: float) -> None:
        from .plugin import plugin_of

        plugin = plugin_of(self.scheduler)
        url = plugin.ledger_url if plugin is not None else None
        key = (v.job, v.status)  # read again when the run ends, else every _HISTORY_EVERY s
        if not url or (key == self.history_key and now - self.history_at < _HISTORY_EVERY):
            return
        self.history_at, self.history_key = now, key
        self.history_title.text = f"<b>Earlier runs of {v.job}</b> (from the ledger)"
        self.history.update(history_data(url, v.job))


def grid_data(v: RunView) -> dict[str, list[Any]]:
    """One square per batch, row-major, coloured by state."""
    cells = list(v.cells.items())
    return {
        "x": [i % _GRID_COLUMNS for i in range(len(cells))],
        "y": [i // _GRID_COLUMNS for i in range(len(cells))],
        "colour": [STATE_COLOURS[c.state] for _, c in cells],
        "batch": [b for b, _ in cells],
        "state": [c.state for _, c in cells],
        "attempts": [c.attempts for _, c in cells],
        "rows_in": [c.rows[0] for _, c in cells],
        "rows_out": [c.rows[1] for _, c in cells],
        "rows_filtered": [c.rows[2] for _, c in cells],
        "rows_quarantined": [c.rows[3] for _, c in cells],
        "duration": [c.duration for _, c in cells],
    }


def history_data(url: str, job: str, limit: int = 50) -> dict[str, list[Any]]:
    """The last ``limit`` runs of ``job`` in the ledger at ``url``, newest first."""
    from ...ledger import Ledger

    ledger = Ledger(url)
    try:
        frame = ledger.runs_frame(job).tail(limit).iloc[::-1]
    finally:
        ledger.close()

    def stamp(name: str) -> list[str]:
        return [x.strftime("%Y-%m-%d %H:%M:%S") if x == x else "" for x in frame[name]]  # NaT

    data: dict[str, list[Any]] = {"started": stamp("started"), "ended": stamp("ended")}
    for key, name in HISTORY_COLUMNS.items():
        if key not in data:
            data[key] = [int(x) if isinstance(x, float) and x == x else x for x in frame[name]]
    return data


def _document(doc: Any, extra: dict[str, Any], title: str, root: Any) -> None:
    from distributed.dashboard.components.scheduler import BOKEH_THEME, env

    doc.title = title
    doc.add_root(root)
    doc.template = env.get_template("simple.html")
    doc.template_variables.update(extra)
    doc.theme = BOKEH_THEME


def run_doc(scheduler: Any, extra: dict[str, Any], doc: Any) -> None:
    """The whole page: runs, the batch grid, rows per second, quarantine kinds, errors, history."""
    page = RunPage(scheduler)
    page.update()
    doc.add_periodic_callback(page.update, 500)
    _document(doc, extra, "Dask: dbatch", page.root)


def batches_doc(scheduler: Any, extra: dict[str, Any], doc: Any) -> None:
    """The batch grid of the latest run alone (an individual plot)."""
    page = RunPage(scheduler)
    page.update()
    doc.add_periodic_callback(page.update, 500)
    _document(doc, extra, "Dask: dbatch batches", page.grid)


def rows_doc(scheduler: Any, extra: dict[str, Any], doc: Any) -> None:
    """Rows per second of the latest run alone (an individual plot)."""
    page = RunPage(scheduler)
    page.update()
    doc.add_periodic_callback(page.update, 500)
    _document(doc, extra, "Dask: dbatch rows per second", page.rates)
