"""Progress driven by run events: a widget in Jupyter, a tqdm bar in a terminal."""

from __future__ import annotations

import sys
import time

from .. import config
from ..core import Event, Plan
from ..display import in_notebook
from ..listeners import RunListener

__all__ = ["make_progress", "TerminalProgress", "NotebookProgress"]


def make_progress(mode: bool | str | None, plan: Plan) -> RunListener | None:
    """``None``/``"auto"``: a widget in Jupyter, a bar on a terminal, nothing otherwise."""
    if mode is None:
        mode = config.get("progress.mode")
    if mode is False or mode == "off":
        return None
    if in_notebook():
        return NotebookProgress(plan)
    if mode is True or mode == "bar" or sys.stderr.isatty():
        return TerminalProgress(plan)
    return None


class _Progress(RunListener):
    """Counts batches as they end; subclasses show the counts."""

    def __init__(self, plan: Plan):
        self.total = len(plan)
        self.done = 0
        self.failed = 0
        self.quarantined = 0
        self.retries = 0
        self.rows = 0
        self.rows_quarantined = 0
        self.started = time.time()
        self.states = {b.id: "planned" for b in plan}

    @property
    def ended(self) -> int:
        return self.done + self.failed + self.quarantined

    @property
    def rows_per_second(self) -> float:
        return self.rows / max(time.time() - self.started, 1e-6)

    def show(self, finished: Event | None = None) -> None:  # pragma: no cover
        raise NotImplementedError

    def _state(self, event: Event, state: str) -> None:
        if event.batch_id is not None:
            self.states[event.batch_id] = state

    def on_batch_started(self, event: Event) -> None:
        self._state(event, "running")
        self.show()

    def on_batch_committed(self, event: Event) -> None:
        self._state(event, "committed")
        self.done += 1
        self.rows += int(event.data.get("rows_in", 0))
        self.rows_quarantined += int(event.data.get("rows_quarantined") or 0)
        self.show()

    def on_batch_skipped(self, event: Event) -> None:
        self._state(event, "skipped")
        self.done += 1
        self.show()

    def on_batch_failed(self, event: Event) -> None:
        self._state(event, "failed")
        self.failed += 1
        self.show()

    def on_batch_quarantined(self, event: Event) -> None:
        self._state(event, "quarantined")
        self.quarantined += 1
        self.show()

    def on_batch_retry(self, event: Event) -> None:
        self._state(event, "retrying")
        self.retries += 1
        self.show()

    def on_published(self, event: Event) -> None:
        self.show()

    def on_finished(self, event: Event) -> None:
        self.show(finished=event)


class TerminalProgress(_Progress):
    """A tqdm bar on stderr: batches done, failures, rows per second."""

    def __init__(self, plan: Plan):
        from tqdm.auto import tqdm

        super().__init__(plan)
        self.bar = tqdm(
            total=len(plan), unit="batch", desc=plan.job, file=sys.stderr, dynamic_ncols=True
        )

    def show(self, finished: Event | None = None) -> None:
        self.bar.update(self.ended - self.bar.n)
        self.bar.set_postfix(
            failed=self.failed,
            batches_quarantined=self.quarantined,
            rows_quarantined=f"{self.rows_quarantined:,}",
            rows_s=f"{self.rows_per_second:,.0f}",
            refresh=False,
        )
        if finished is not None:
            self.bar.close()

    def on_end(self) -> None:
        self.bar.close()


#: Colours of batch states, in the widget's grid (and the order in which a cell that
#: stands for several batches shows the worst of them).
STATE_COLOURS = {
    "failed": "#e74c3c",
    "quarantined": "#e67e22",
    "retrying": "#f5b041",
    "running": "#5dade2",
    "planned": "#d5d8dc",
    "committed": "#58d68d",
    "skipped": "#a9dfbf",
}
_CELLS = 600  # at most this many cells: a cell stands for several batches beyond


def batch_grid(states: dict[str, str]) -> str:
    """The batches as a grid of small squares coloured by state (HTML)."""
    ids = list(states)
    per = max(1, -(-len(ids) // _CELLS))
    order = list(STATE_COLOURS)
    cells = []
    for i in range(0, len(ids), per):
        group = ids[i : i + per]
        worst = min((states[b] for b in group), key=order.index)
        title = group[0] if per == 1 else f"{group[0]} .. {group[-1]} ({len(group)} batches)"
        cells.append(
            f'<span title="{title}: {worst}" style="display:inline-block;width:8px;'
            f'height:8px;margin:1px;background:{STATE_COLOURS[worst]}"></span>'
        )
    legend = " ".join(
        f'<span style="color:{c}">&#9632;</span> {name}' for name, c in STATE_COLOURS.items()
    )
    return f'<div style="line-height:8px;max-width:640px">{"".join(cells)}</div><small>{legend}</small>'


class NotebookProgress(_Progress):
    """An ipywidgets panel: a bar, the counts, the batch grid and the dashboard link."""

    def __init__(self, plan: Plan):
        import ipywidgets as w
        from IPython.display import display

        super().__init__(plan)
        self.bar = w.IntProgress(
            min=0, max=max(len(plan), 1), description=plan.job[:20], bar_style="info"
        )
        self.label = w.HTML(self._text())
        self.link = w.HTML("")
        self.grid = w.HTML(batch_grid(self.states))
        self.box = w.VBox([w.HBox([self.bar, self.label]), self.grid, self.link])
        self._drawn = 0.0
        display(self.box)

    def on_dashboard(self, link: str | None) -> None:
        if link:
            self.link.value = f'<a href="{link}" target="_blank">Dask dashboard</a>'

    def _text(self) -> str:
        return (
            f"{self.done}/{self.total} batches · <b>{self.failed}</b> failed · "
            f"{self.quarantined} batches quarantined · {self.rows_quarantined:,} rows "
            f"quarantined · {self.retries} retries · "
            f"{self.rows_per_second:,.0f} rows/s"
        )

    def show(self, finished: Event | None = None) -> None:
        now = time.time()
        if finished is None and now - self._drawn < 0.25:
            return  # a run of many small batches: redraw four times a second at most
        self._drawn = now
        self.bar.value = self.ended
        self.label.value = self._text()
        self.grid.value = batch_grid(self.states)
        if finished is not None:
            status = finished.data.get("status")
            self.bar.bar_style = (
                "danger"
                if status == "failed"
                else "warning"
                if self.quarantined or self.rows_quarantined
                else "success"
            )
