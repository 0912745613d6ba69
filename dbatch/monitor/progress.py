"""Progress driven by run events: a widget in Jupyter, a tqdm bar in a terminal."""

from __future__ import annotations

import sys
import time

from .. import config
from ..core import Event, Plan

__all__ = ["make_progress", "TerminalProgress", "NotebookProgress"]


def make_progress(mode: bool | str | None, plan: Plan):
    """``None``/``"auto"``: a widget in Jupyter, a bar on a terminal, nothing otherwise."""
    if mode is None:
        mode = config.get("progress.mode")
    if mode is False or mode == "off":
        return None
    from ..cluster import _in_notebook

    if _in_notebook():
        return NotebookProgress(plan)
    if mode is True or mode == "bar" or sys.stderr.isatty():
        return TerminalProgress(plan)
    return None


class _Counts:
    def __init__(self, plan: Plan):
        self.total = len(plan)
        self.done = 0
        self.failed = 0
        self.quarantined = 0
        self.retries = 0
        self.rows = 0
        self.started = time.time()

    def update(self, e: Event) -> bool:
        if e.kind in ("batch_committed", "batch_skipped"):
            self.done += 1
            self.rows += int(e.data.get("rows_in", 0)) if e.kind == "batch_committed" else 0
        elif e.kind == "batch_failed":
            self.failed += 1
        elif e.kind == "batch_quarantined":
            self.quarantined += 1
        elif e.kind == "batch_retry":
            self.retries += 1
        else:
            return e.kind in ("finished", "published")
        return True

    @property
    def rows_per_second(self) -> float:
        return self.rows / max(time.time() - self.started, 1e-6)


class TerminalProgress:
    """A tqdm bar: batches done, failures, rows per second."""

    def __init__(self, plan: Plan):
        from tqdm.auto import tqdm

        self.counts = _Counts(plan)
        self.bar = tqdm(
            total=len(plan), unit="batch", desc=plan.job, file=sys.stderr, dynamic_ncols=True
        )

    def set_dashboard(self, link: str | None) -> None:
        pass

    def close(self) -> None:
        self.bar.close()

    def __call__(self, e: Event) -> None:
        before = self.counts.done + self.counts.failed + self.counts.quarantined
        if not self.counts.update(e):
            return
        after = self.counts.done + self.counts.failed + self.counts.quarantined
        self.bar.update(after - before)
        self.bar.set_postfix(
            failed=self.counts.failed,
            quarantined=self.counts.quarantined,
            rows_s=f"{self.counts.rows_per_second:,.0f}",
            refresh=False,
        )
        if e.kind == "finished":
            self.bar.close()


class NotebookProgress:
    """An ipywidgets panel: a bar per state, rows per second, and the dashboard link."""

    def __init__(self, plan: Plan):
        import ipywidgets as w
        from IPython.display import display

        self.counts = _Counts(plan)
        self.bar = w.IntProgress(
            min=0, max=max(len(plan), 1), description=plan.job[:20], bar_style="info"
        )
        self.label = w.HTML(self._text())
        self.link = w.HTML("")
        self.box = w.VBox([w.HBox([self.bar, self.label]), self.link])
        display(self.box)

    def set_dashboard(self, link: str | None) -> None:
        if link:
            self.link.value = f'<a href="{link}" target="_blank">Dask dashboard</a>'

    def _text(self) -> str:
        c = self.counts
        return (
            f"{c.done}/{c.total} batches · <b>{c.failed}</b> failed · {c.quarantined} quarantined"
            f" · {c.retries} retries · {c.rows_per_second:,.0f} rows/s"
        )

    def __call__(self, e: Event) -> None:
        if not self.counts.update(e):
            return
        self.bar.value = self.counts.done + self.counts.failed + self.counts.quarantined
        self.label.value = self._text()
        if e.kind == "finished":
            status = e.data.get("status")
            self.bar.bar_style = (
                "danger"
                if status == "failed"
                else "warning"
                if self.counts.quarantined
                else "success"
            )
