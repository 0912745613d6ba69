"""The watch loop: run a job each time its trigger fires, until stopped."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from .core import Event, EventKind
from .errors import DBatchError, JobSpecError
from .protocols import Trigger

if TYPE_CHECKING:
    from .ledger import Ledger
    from .monitor.result import RunResult
    from .pipeline import Pipeline

__all__ = ["WatchResult", "watch", "summary_line"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WatchResult:
    """How a watch ended: runs started, runs that failed, the last result, stopped by a signal."""

    runs: int
    failed: int
    last: RunResult | None
    last_failed: bool
    stopped: bool


def summary_line(result: RunResult) -> str:
    """One line per run, for logs: time, run id, status, batch and row counts.

    Examples
    --------
    >>> summary_line(result)  # doctest: +SKIP
    '2026-11-02T02:00:04Z nightly run 20261102T020000-1a2b3c: succeeded, 4 committed, ...'
    """
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return (
        f"{stamp} {result.job} run {result.run_id}: {result.status}, "
        f"{result.committed} committed, {result.skipped} already done, "
        f"{result.quarantined} quarantined, {result.failed} failed; "
        f"rows {result.rows_in:,} in, {result.rows_out:,} out, {result.rows_filtered:,} filtered, "
        f"{result.rows_quarantined:,} quarantined; {result.duration:.1f} s"
    )


def watch(
    pipeline: Pipeline,
    trigger: Trigger,
    *,
    client: Any = None,
    max_runs: int | None = None,
    stop: threading.Event | None = None,
    listeners: Sequence[Callable[[Event], None]] = (),
    on_result: Callable[[RunResult], None] | None = None,
    on_error: Callable[[Exception], None] | None = None,
    params: dict | None = None,
) -> WatchResult:
    """Run ``pipeline`` each time ``trigger`` fires, until ``stop`` is set or ``max_runs`` ran.

    Each run is an ordinary run (the plan minus the ledger). A failed run, or one
    that cannot start (no input yet, another run holds the job's lock), is reported
    and the loop goes on; listeners (such as alerts) get a ``finished`` event with
    status ``failed`` for a run that could not start. The cluster is connected once
    and reused by every run.

    Parameters
    ----------
    client
        Anything ``dbatch.connect`` accepts; default: the active client, else a
        LocalCluster started here and closed when the watch ends.
    max_runs
        Stop after this many runs (``None``: until stopped).
    stop
        Set it (from a signal handler or another thread) to stop after the current run.
    listeners
        Run-event listeners for every run, such as ``Alert``.
    on_result, on_error
        Called with each run's ``RunResult``, or with the error of a run that could not start.

    Examples
    --------
    >>> from dbatch import Interval
    >>> watch(pipeline, Interval("1h"))  # doctest: +SKIP
    """
    from .cluster import connect, has_active_client
    from .ledger import Ledger

    stop = stop or threading.Event()
    ledger = Ledger(pipeline.ledger_url())
    # Close at the end only a client made here, never the caller's (nor the notebook's).
    makes_client = client is None and not has_active_client()
    try:
        connected = connect(client, show_link=False)
    except BaseException:
        ledger.close()
        raise
    runs = failed = 0
    last_result = None
    last_failed = False
    fired: datetime | None = None
    try:
        while max_runs is None or runs < max_runs:
            due = trigger.next_fire(datetime.now(UTC), fired)
            if _wait_until(due, stop):
                break
            fired = datetime.now(UTC)
            if not _ready(trigger, pipeline, ledger):
                continue
            outcome = _run_once(pipeline, connected, listeners, params)
            runs += 1
            if isinstance(outcome, Exception):
                failed += 1
                last_failed = True
                (on_error or _log_error)(outcome)
            else:
                last_result = outcome
                last_failed = outcome.status == "failed"
                failed += last_failed
                (on_result or _log_result)(outcome)
    finally:
        ledger.close()
        if makes_client:
            _close(connected)
    return WatchResult(runs, failed, last_result, last_failed, stop.is_set())


def _close(client: Any) -> None:
    """Close a client the watch made, and the LocalCluster ``connect()`` started for it."""
    from .cluster import owns_cluster

    cluster = client.cluster if owns_cluster(client) else None
    client.close()
    if cluster is not None:
        cluster.close()


def _wait_until(due: datetime, stop: threading.Event) -> bool:
    """Sleep until ``due`` (re-reading the clock each second); True when stopped first."""
    while True:
        if stop.is_set():
            return True
        remaining = (due - datetime.now(UTC)).total_seconds()
        if remaining <= 0:
            return False
        stop.wait(min(remaining, 1.0))


def _ready(trigger: Trigger, pipeline: Pipeline, ledger: Ledger) -> bool:
    try:
        return trigger.ready(pipeline, ledger)
    except JobSpecError:
        raise  # the job itself is wrong; looking again will not help
    except (DBatchError, OSError) as e:  # a source or the ledger is unreachable for now
        log.warning("dbatch: %s: could not look for new input (%s); trying again", pipeline.name, e)
        return False


def _run_once(pipeline: Pipeline, client: Any, listeners, params) -> RunResult | Exception:
    from .runner import new_run_id

    try:
        return pipeline.run(client=client, progress=False, listeners=list(listeners), params=params)
    except JobSpecError:
        raise
    except Exception as e:  # noqa: BLE001 - a watcher outlives one bad run; it is reported
        finished = Event(
            EventKind.FINISHED,
            new_run_id(),
            pipeline.name,
            data={"status": "failed", "message": f"the run could not start: {e}"},
        )
        for listener in listeners:
            listener(finished)
        return e


def _log_result(result: RunResult) -> None:
    log.info("dbatch: %s", summary_line(result))


def _log_error(error: Exception) -> None:
    log.error("dbatch: a run could not start: %s", error)
