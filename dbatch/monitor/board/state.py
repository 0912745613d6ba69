"""What the dbatch page and the metrics show, kept from run events in bounded memory.

Everything here is plain data fed with ``Board.feed(message)``, where a message
is an event as the relay sends it (``to_message``): the runs seen (at most
``max_runs``, the oldest dropped first), for each its batches' states (at most
``max_batches`` cells; batches beyond are only counted), a rows-per-second
timeline (at most ``timeline`` points), rows quarantined by kind and the last
``max_errors`` errors; and, per job, the counters the Prometheus metrics
export (at most ``max_jobs`` jobs).
"""

from __future__ import annotations

import time
from collections import Counter, OrderedDict, deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ...core import Event

__all__ = [
    "STATES",
    "DURATION_BUCKETS",
    "Board",
    "RunView",
    "JobMetrics",
    "Limits",
    "to_message",
]

#: Batch states, worst first (the order the page's legend uses).
STATES = ("failed", "quarantined", "retrying", "running", "planned", "committed", "skipped")
_ENDED = {"committed", "skipped", "quarantined", "failed"}
_KIND_STATE = {
    "batch_started": "running",
    "batch_retry": "retrying",
    "batch_committed": "committed",
    "batch_skipped": "skipped",
    "batch_quarantined": "quarantined",
    "batch_failed": "failed",
}
#: Upper bounds (seconds) of the batch duration histogram.
DURATION_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
ROW_KINDS = ("in", "out", "filtered", "quarantined")
#: The fields of an event's data the page and the metrics read; the rest stays on the driver.
_FIELDS = (
    "attempt",
    "batches",
    "delay",
    "duration",
    "error_class",
    "rows_in",
    "rows_out",
    "rows_filtered",
    "rows_quarantined",
    "files_quarantined",
    "rows_by_kind",
    "recovered",
    "status",
    "committed",
    "skipped",
    "quarantined",
    "failed",
)
_MAX_KINDS = 50


def to_message(event: Event, batch_ids: list[str] | None = None) -> dict[str, Any]:
    """The plain, msgpack-safe dict the relay sends for ``event`` (messages cut to 500 characters)."""
    data = {k: event.data[k] for k in _FIELDS if k in event.data}
    if "error_message" in event.data:
        data["error_message"] = str(event.data["error_message"])[:500]
    if "message" in event.data:
        data["message"] = str(event.data["message"])[:500]
    files = event.data.get("quarantined_files") or []
    if files:
        data["file_kinds"] = dict(Counter(str(f.get("kind", "?")) for f in files))
    if batch_ids is not None:
        data["batch_ids"] = batch_ids
    return {
        "kind": str(event.kind.value),
        "run_id": event.run_id,
        "job": event.job,
        "batch_id": event.batch_id,
        "time": float(event.time),
        "data": data,
    }


@dataclass(frozen=True)
class Limits:
    """How much the board keeps (see the module's docstring)."""

    max_runs: int = 20
    max_batches: int = 20_000
    max_errors: int = 50
    timeline: int = 600
    max_jobs: int = 200


class Cell:
    """One batch on the grid."""

    __slots__ = ("state", "attempts", "rows", "duration")

    def __init__(self) -> None:
        self.state = "planned"
        self.attempts = 0
        self.rows = (0, 0, 0, 0)  # in, out, filtered, quarantined
        self.duration = 0.0


@dataclass
class RunView:
    """One run as the page shows it."""

    job: str
    run_id: str
    started: float
    total: int
    limits: Limits
    cells: dict[str, Cell] = field(default_factory=dict)
    ended_counts: Counter[str] = field(default_factory=Counter)
    untracked: int = 0
    status: str = "running"
    finished: float | None = None
    updated: float = 0.0
    rows: list[int] = field(default_factory=lambda: [0, 0, 0, 0])
    kinds: Counter[str] = field(default_factory=Counter)
    errors: deque[tuple[float, str, str, str]] = field(default_factory=deque)
    timeline: deque[tuple[float, int]] = field(default_factory=deque)
    version: int = 0
    _counts: tuple[int, dict[str, int]] | None = None

    def __post_init__(self) -> None:
        self.errors = deque(maxlen=self.limits.max_errors)
        self.timeline = deque([(self.started, 0)], maxlen=self.limits.timeline)

    def plan(self, batch_ids: list[str]) -> None:
        for batch_id in batch_ids[: self.limits.max_batches]:
            self.cells.setdefault(batch_id, Cell())
        self.version += 1

    def counts(self) -> dict[str, int]:
        """Batches per state (a batch past ``max_batches`` counts once it ends)."""
        cached = self._counts
        if cached is not None and cached[0] == self.version:
            return dict(cached[1])
        found = Counter(c.state for c in self.cells.values())
        for state in _ENDED:
            found[state] += self.ended_counts[state]
        tracked = sum(found.values())
        found["planned"] += max(self.total - tracked, 0)
        counts = {s: found[s] for s in STATES}
        self._counts = (self.version, counts)
        return dict(counts)

    @property
    def ended(self) -> int:
        c = self.counts()
        return sum(c[s] for s in _ENDED)

    def elapsed(self, now: float | None = None) -> float:
        return (self.finished or now or time.time()) - self.started

    def eta(self, now: float | None = None) -> float | None:
        """Seconds left at the pace so far (None before the first batch ends or once finished)."""
        ended = self.ended
        if self.finished is not None or ended == 0:
            return None
        return max(self.total - ended, 0) * self.elapsed(now) / ended

    def rates(self) -> tuple[list[float], list[float]]:
        """(times, rows per second) between consecutive timeline points."""
        points = list(self.timeline)
        xs, ys = [], []
        for (t0, r0), (t1, r1) in zip(points, points[1:], strict=False):
            xs.append(t1)
            ys.append((r1 - r0) / max(t1 - t0, 1e-3))
        return xs, ys

    def feed(self, m: Mapping[str, Any]) -> None:
        kind, data, now = m["kind"], m.get("data") or {}, float(m.get("time") or time.time())
        self.version += 1
        self.updated = now
        state = _KIND_STATE.get(kind)
        if state is not None and m.get("batch_id") is not None:
            self._batch(str(m["batch_id"]), state, data, now)
        elif kind == "finished":
            self.status = str(data.get("status", "finished"))
            self.finished = now

    def _batch(self, batch_id: str, state: str, data: Mapping[str, Any], now: float) -> None:
        cell = self.cells.get(batch_id)
        if cell is None and len(self.cells) < self.limits.max_batches:
            cell = self.cells[batch_id] = Cell()
        if cell is None:
            self.untracked += 1
            if state in _ENDED:
                self.ended_counts[state] += 1
        else:
            cell.state = state
            cell.attempts = max(cell.attempts, int(data.get("attempt") or 0))
        if state in ("committed", "skipped"):
            i, o, f, q = (int(data.get(f"rows_{k}") or 0) for k in ROW_KINDS)
            counts = (i, o, f, q)
            if cell is not None:
                cell.rows, cell.duration = counts, float(data.get("duration") or 0)
            if state == "committed":
                self._rows(counts, data, now)
        if state in ("retrying", "quarantined", "failed") and data.get("error_message"):
            self.errors.append(
                (now, batch_id, state, f"{data.get('error_class', '')}: {data['error_message']}")
            )
        if state == "quarantined" and data.get("rows_quarantined"):
            self._kind("too many bad rows", int(data["rows_quarantined"]))

    def _rows(self, counts: tuple[int, int, int, int], data: Mapping[str, Any], now: float) -> None:
        for i, n in enumerate(counts):
            self.rows[i] += n
        for kind, n in (data.get("rows_by_kind") or {}).items():
            self._kind(str(kind), int(n))
        for kind, n in (data.get("file_kinds") or {}).items():
            self._kind(f"file: {kind}", int(n))
        last_t, _ = self.timeline[-1]
        if now - last_t < 1.0 and len(self.timeline) > 1:
            self.timeline[-1] = (last_t, self.rows[0])  # one point a second at most
        else:
            self.timeline.append((now, self.rows[0]))

    def _kind(self, kind: str, n: int) -> None:
        if kind not in self.kinds and len(self.kinds) >= _MAX_KINDS:
            kind = "other"
        self.kinds[kind] += n


@dataclass
class JobMetrics:
    """The counters of one job since the scheduler started (what ``/metrics`` exports)."""

    batches: Counter[str] = field(default_factory=Counter)
    rows: Counter[str] = field(default_factory=Counter)
    retries: int = 0
    runs: Counter[str] = field(default_factory=Counter)
    durations: list[int] = field(default_factory=lambda: [0] * (len(DURATION_BUCKETS) + 1))
    duration_sum: float = 0.0
    last_success: float | None = None

    def feed(self, m: Mapping[str, Any]) -> None:
        kind, data = m["kind"], m.get("data") or {}
        state = _KIND_STATE.get(kind)
        if kind == "batch_retry":
            self.retries += 1
        elif state in _ENDED:
            self.batches[state] += 1
            if state == "committed":
                for k in ROW_KINDS:
                    self.rows[k] += int(data.get(f"rows_{k}") or 0)
                self._duration(float(data.get("duration") or 0.0))
        elif kind == "finished":
            status = str(data.get("status", ""))
            self.runs[status] += 1
            if status.startswith("succeeded") or status == "nothing_to_do":
                self.last_success = float(m.get("time") or time.time())

    def _duration(self, seconds: float) -> None:
        self.duration_sum += seconds
        for i, bound in enumerate(DURATION_BUCKETS):
            if seconds <= bound:
                self.durations[i] += 1
                return
        self.durations[-1] += 1


class Board:
    """The runs seen on one scheduler and the metrics of their jobs, bounded by ``limits``."""

    def __init__(self, limits: Limits | None = None):
        self.limits = limits or Limits()
        self.runs: OrderedDict[str, RunView] = OrderedDict()
        self.jobs: OrderedDict[str, JobMetrics] = OrderedDict()
        self.version = 0

    def feed(self, message: Mapping[str, Any]) -> None:
        """Take one event message (see ``to_message``); a malformed one raises ``KeyError``."""
        run_id, job, kind = str(message["run_id"]), str(message["job"]), message["kind"]
        self.version += 1
        view = self.runs.get(run_id)
        if kind == "run_started" or view is None:
            view = self._start(message, run_id, job)
        else:
            self.runs.move_to_end(run_id)
        if kind != "run_started":
            view.feed(message)
        metrics = self.jobs.pop(job, None) or JobMetrics()
        self.jobs[job] = metrics  # the most recently active job last
        metrics.feed(message)
        while len(self.jobs) > self.limits.max_jobs:
            self.jobs.popitem(last=False)

    def _start(self, message: Mapping[str, Any], run_id: str, job: str) -> RunView:
        data = message.get("data") or {}
        view = RunView(
            job,
            run_id,
            float(message.get("time") or time.time()),
            int(data.get("batches") or 0),
            self.limits,
        )
        view.plan([str(b) for b in data.get("batch_ids") or []])
        self.runs.pop(run_id, None)  # a resumed run starts afresh under its id
        self.runs[run_id] = view
        while len(self.runs) > self.limits.max_runs:
            self.runs.popitem(last=False)
        return view

    def latest(self) -> RunView | None:
        return next(reversed(self.runs.values()), None)

    def current_counts(self, job: str) -> dict[str, int]:
        """Batches by state in the latest run of ``job`` seen here."""
        for view in reversed(self.runs.values()):
            if view.job == job:
                return view.counts()
        return {}
