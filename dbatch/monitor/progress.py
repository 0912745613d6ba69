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

    @property
    def ended(self) -> int:
        return self.done + self.failed + self.quarantined

    @property
    def rows_per_second(self) -> float:
        return self.rows / max(time.time() - self.started, 1e-6)

    def show(self, finished: Event | None = None) -> None:  # pragma: no cover
        raise NotImplementedError

    def on_batch_committed(self, event: Event) -> None:
        self.done += 1
        self.rows += int(event.data.get("rows_in", 0))
        self.rows_quarantined += int(event.data.get("rows_quarantined") or 0)
        self.show()

    def on_batch_skipped(self, event: Event) -> None:
        self.done += 1
        self.show()

    def on_batch_failed(self, event: Event) -> None:
        self.failed += 1
        self.show()

    def on_batch_quarantined(self, event: Event) -> None:
        self.quarantined += 1
        self.show()

    def on_batch_retry(self, event: Event) -> None:
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
            quarantined=self.quarantined,
            rows_s=f"{self.rows_per_second:,.0f}",
            refresh=False,
        )
        if finished is not None:
            self.bar.close()

    def on_end(self) -> None:
        self.bar.close()


class NotebookProgress(_Progress):
    """An ipywidgets panel: a bar, the counts, rows per second and the dashboard link."""

    def __init__(self, plan: Plan):
        import ipywidgets as w
        from IPython.display import display

        super().__init__(plan)
        self.bar = w.IntProgress(
            min=0, max=max(len(plan), 1), description=plan.job[:20], bar_style="info"
        )
        self.label = w.HTML(self._text())
        self.link = w.HTML("")
        self.box = w.VBox([w.HBox([self.bar, self.label]), self.link])
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
        self.bar.value = self.ended
        self.label.value = self._text()
        if finished is not None:
            status = finished.data.get("status")
            self.bar.bar_style = (
                "danger"
                if status == "failed"
                else "warning"
                if self.quarantined or self.rows_quarantined
                else "success"
            )
