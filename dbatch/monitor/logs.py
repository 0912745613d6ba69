"""Log lines for unattended runs: one per batch state change, a progress line now and then.

Under cron, nohup, CI or in a Kubernetes pod there is no terminal for a
progress bar; the ``dbatch.run`` logger then says what happens: the dashboard
link at the start, each batch committed (rows, duration), each retry once as a
warning with its reason, each failure with its error, a progress line every
``dbatch.logging.progress-every`` seconds, and the summary at the end.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from .. import config
from ..core import Event, Plan, row_balance
from ..listeners import RunListener

__all__ = ["LogListener", "JsonFormatter"]

log = logging.getLogger("dbatch.run")


class LogListener(RunListener):
    """Writes a run's events to the ``dbatch.run`` logger (INFO per batch, WARNING per retry)."""

    def __init__(self, plan: Plan, every: float | None = None):
        self.total = len(plan)
        self.job = plan.job
        self.every = float(config.get("logging.progress-every", 30) if every is None else every)
        self.ended = 0
        self.rows = 0
        self.started = time.time()
        self._last = self.started

    def _extra(self, e: Event, **more: Any) -> dict[str, Any]:
        return {"dbatch": {"job": e.job, "run_id": e.run_id, "batch_id": e.batch_id, **more}}

    def on_run_started(self, event: Event) -> None:
        log.info(
            "run %s of %r started: %d batches",
            event.run_id,
            event.job,
            self.total,
            extra=self._extra(event, event="run_started", batches=self.total),
        )

    def on_dashboard(self, link: str | None) -> None:
        if link:
            log.info("Dask dashboard: %s", link, extra={"dbatch": {"dashboard": link}})

    def on_batch_started(self, event: Event) -> None:
        attempt = event.data.get("attempt", 1)
        log.debug(
            "batch %s started (attempt %s, %s units)",
            event.batch_id,
            attempt,
            event.data.get("units"),
            extra=self._extra(event, event="batch_started", attempt=attempt),
        )

    def on_batch_committed(self, event: Event) -> None:
        d = event.data
        self.rows += int(d.get("rows_in") or 0)
        state = "adopted (committed by a run that died)" if d.get("recovered") else "committed"
        log.info(
            "batch %s %s: %s in %.1f s",
            event.batch_id,
            state,
            row_balance(d),
            float(d.get("duration") or 0),
            extra=self._extra(event, event="batch_committed", **_counts(d)),
        )
        self._ended()

    def on_batch_skipped(self, event: Event) -> None:
        log.debug(
            "batch %s already done", event.batch_id, extra=self._extra(event, event="batch_skipped")
        )
        self._ended()

    def on_batch_retry(self, event: Event) -> None:
        d = event.data
        log.warning(
            "batch %s: attempt %s failed (%s: %s); retrying in %.1f s",
            event.batch_id,
            d.get("attempt"),
            d.get("error_class"),
            str(d.get("error_message", ""))[:500],
            float(d.get("delay") or 0),
            extra=self._extra(event, event="batch_retry", attempt=d.get("attempt")),
        )

    def on_batch_quarantined(self, event: Event) -> None:
        log.warning(
            "batch %s quarantined: %s",
            event.batch_id,
            str(event.data.get("error_message", ""))[:1000],
            extra=self._extra(event, event="batch_quarantined"),
        )
        self._ended()

    def on_batch_failed(self, event: Event) -> None:
        d = event.data
        log.error(
            "batch %s failed after %s attempt(s): %s: %s",
            event.batch_id,
            d.get("attempt"),
            d.get("error_class"),
            str(d.get("error_message", ""))[:1000],
            extra=self._extra(event, event="batch_failed"),
        )
        self._ended()

    def on_finished(self, event: Event) -> None:
        d = event.data
        level = logging.ERROR if d.get("status") == "failed" else logging.INFO
        log.log(
            level,
            "run %s of %r %s in %.1f s: %s%s",
            event.run_id,
            event.job,
            d.get("status"),
            time.time() - self.started,
            row_balance(d),
            f"; {d['message']}" if d.get("message") else "",
            extra=self._extra(event, event="finished", status=d.get("status"), **_counts(d)),
        )

    def _ended(self) -> None:
        self.ended += 1
        now = time.time()
        if self.every > 0 and now - self._last >= self.every and self.ended < self.total:
            self._last = now
            elapsed = now - self.started
            left = (self.total - self.ended) * elapsed / max(self.ended, 1)
            log.info(
                "%s: %d/%d batches, %s rows, %s rows/s, about %.0f s left",
                self.job,
                self.ended,
                self.total,
                f"{self.rows:,}",
                f"{self.rows / max(elapsed, 1e-6):,.0f}",
                left,
                extra={"dbatch": {"event": "progress", "done": self.ended, "of": self.total}},
            )


def _counts(d: dict[str, Any]) -> dict[str, int]:
    keys = ("rows_in", "rows_out", "rows_filtered", "rows_quarantined")
    return {k: int(d.get(k) or 0) for k in keys}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and dbatch's fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(getattr(record, "dbatch", {}) or {})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        return time.strftime(datefmt or "%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
