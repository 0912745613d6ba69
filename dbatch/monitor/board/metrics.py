"""dbatch's Prometheus metrics: on the scheduler's ``/metrics``, or in a textfile after a run.

The same families either way, from a ``Board``:

=========================================  =======  ===========================================
name                                       type     labels, meaning
=========================================  =======  ===========================================
``dbatch_run_batches``                     gauge    job, state: batches of the job's latest run
``dbatch_batches_total``                   counter  job, state: batches that ended (committed,
                                                    skipped, quarantined, failed)
``dbatch_rows_total``                      counter  job, kind: rows in, out, filtered,
                                                    quarantined of committed batches
``dbatch_batch_duration_seconds``          histo.   job: how long committed batches took
``dbatch_batch_retries_total``             counter  job: attempts that failed and were retried
``dbatch_runs_total``                      counter  job, status: runs that finished
``dbatch_last_success_timestamp_seconds``  gauge    job: when a run last ended without failing
=========================================  =======  ===========================================
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ...core import Event
from ...listeners import RunListener
from .state import DURATION_BUCKETS, ROW_KINDS, STATES, Board, Limits, to_message

__all__ = ["families", "serve", "MetricsFile", "write_textfile"]

LAST_SUCCESS = "dbatch_last_success_timestamp_seconds"
_ENDED = ("committed", "skipped", "quarantined", "failed")


def families(board: Board) -> Iterator[Any]:
    """The metric families of ``board`` (``prometheus_client`` core families)."""
    from prometheus_client.core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
    )

    current = GaugeMetricFamily(
        "dbatch_run_batches",
        "Batches of the latest run of each job, by state",
        labels=["job", "state"],
    )
    ended = CounterMetricFamily(
        "dbatch_batches", "Batches that ended, by state", labels=["job", "state"]
    )
    rows = CounterMetricFamily("dbatch_rows", "Rows of committed batches", labels=["job", "kind"])
    durations = HistogramMetricFamily(
        "dbatch_batch_duration_seconds", "Duration of committed batches", labels=["job"]
    )
    retries = CounterMetricFamily(
        "dbatch_batch_retries", "Batch attempts that failed and were retried", labels=["job"]
    )
    runs = CounterMetricFamily(
        "dbatch_runs", "Runs that finished, by status", labels=["job", "status"]
    )
    last = GaugeMetricFamily(
        LAST_SUCCESS, "Unix time a run of the job last ended without failing", labels=["job"]
    )
    for job, m in board.jobs.items():
        counts = board.current_counts(job)
        for state in STATES:
            current.add_metric([job, state], counts.get(state, 0))
        for state in _ENDED:
            ended.add_metric([job, state], m.batches[state])
        for kind in ROW_KINDS:
            rows.add_metric([job, kind], m.rows[kind])
        cumulative, buckets = 0, []
        for bound, n in zip((*map(str, DURATION_BUCKETS), "+Inf"), m.durations, strict=True):
            cumulative += n
            buckets.append((bound, cumulative))
        durations.add_metric([job], buckets, sum_value=m.duration_sum)
        retries.add_metric([job], m.retries)
        for status, n in m.runs.items():
            runs.add_metric([job, status], n)
        if m.last_success is not None:
            last.add_metric([job], m.last_success)
    yield from (current, ended, rows, durations, retries, runs, last)


class _Collector:
    """A ``prometheus_client`` collector over whatever board ``source`` returns."""

    def __init__(self, source: Callable[[], Board | None]):
        self.source = source

    def collect(self) -> Iterator[Any]:
        board = self.source()
        if board is not None:
            yield from families(board)


_served: list[weakref.ref[Any]] = []  # the plugins of this process's open schedulers, in order
_registered = False


def _served_board() -> Board | None:
    for ref in reversed(_served):
        plugin = ref()
        if plugin is not None:
            return plugin.board
    return None


def serve(plugin: Any) -> None:
    """Export ``plugin``'s board on the ``/metrics`` of its scheduler (prometheus_client's registry).

    The registry is one per process, as Dask's own collectors are: of the
    schedulers open in this process (a notebook may start two LocalClusters), the
    one started last is exported; when it closes, the one before it again.
    Without ``prometheus_client`` nothing is.
    """
    global _registered
    try:
        import prometheus_client
    except ImportError:
        return
    _served.append(weakref.ref(plugin))
    if not _registered:
        prometheus_client.REGISTRY.register(_Collector(_served_board))
        _registered = True


def unserve(plugin: Any) -> None:
    """``plugin``'s scheduler is closing: export the one started before it again."""
    _served[:] = [ref for ref in _served if ref() is not None and ref() is not plugin]


def write_textfile(board: Board, path: str | os.PathLike[str]) -> None:
    """Write ``board``'s metrics to ``path`` for node_exporter's textfile collector, atomically.

    A job whose run did not succeed keeps the last-success time the file held.
    """
    from prometheus_client import CollectorRegistry
    from prometheus_client.exposition import generate_latest

    target = Path(path)
    kept = _last_success(target)
    for job, when in kept.items():
        m = board.jobs.get(job)
        if m is not None and m.last_success is None:
            m.last_success = when
    registry = CollectorRegistry()
    registry.register(_Collector(lambda: board))
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    temporary.write_bytes(generate_latest(registry))
    os.replace(temporary, target)  # a reader sees the old file or the new one, never half


def _last_success(path: Path) -> dict[str, float]:
    if not path.exists():
        return {}
    from prometheus_client.parser import text_string_to_metric_families

    found: dict[str, float] = {}
    try:
        for family in text_string_to_metric_families(path.read_text()):
            if family.name == LAST_SUCCESS:
                for sample in family.samples:
                    found[sample.labels["job"]] = float(sample.value)
    except ValueError:
        return {}  # not a metrics file we wrote: overwrite it
    return found


class MetricsFile(RunListener):
    """Writes a run's metrics to ``path`` when it ends (``dbatch run --metrics-file``)."""

    def __init__(self, path: str | os.PathLike[str]):
        self.path = path
        self.board = Board(Limits(max_runs=1, max_errors=1, timeline=2))

    def __call__(self, event: Event) -> None:
        self.board.feed(to_message(event))

    def on_end(self) -> None:
        write_textfile(self.board, self.path)
