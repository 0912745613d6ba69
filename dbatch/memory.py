"""How much a process grows while it does something: the peak of its resident memory."""

from __future__ import annotations

import os
import threading
from types import TracebackType
from typing import Any

__all__ = ["PeakMemory", "resident_memory"]

_PROCESS: dict[int, Any] = {}  # pid -> its psutil.Process, made once


def resident_memory() -> int:
    """This process's resident memory in bytes (0 where it cannot be read)."""
    try:
        pid = os.getpid()
        process = _PROCESS.get(pid)
        if process is None:
            import psutil

            process = _PROCESS[pid] = psutil.Process(pid)
        return int(process.memory_info().rss)
    except Exception:  # noqa: BLE001 - a platform without it measures nothing
        return 0


class _Sampler:
    """One daemon thread per process that samples while any ``PeakMemory`` is open.

    A thread of its own per batch cost a batch of small files a noticeable share of
    its time; this one is started once and sleeps while nothing is measured.
    """

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.open: dict[int, PeakMemory] = {}
        self.thread: threading.Thread | None = None
        self.idle = False  # the thread waits for something to measure

    def add(self, peak: PeakMemory) -> None:
        with self.cond:
            self.open[id(peak)] = peak
            if self.thread is None or not self.thread.is_alive():  # none yet, or forked
                self.thread = threading.Thread(
                    target=self._run, name="dbatch-peak-memory", daemon=True
                )
                self.idle = False
                self.thread.start()
            elif self.idle:
                self.cond.notify()

    def remove(self, peak: PeakMemory) -> None:
        with self.cond:
            self.open.pop(id(peak), None)

    def _run(self) -> None:
        while True:
            with self.cond:
                while not self.open:
                    self.idle = True
                    self.cond.wait()
                self.idle = False
                self.cond.wait(min(p.every for p in self.open.values()))
                watching = list(self.open.values())
            if watching:
                rss = resident_memory()
                for peak in watching:
                    peak.peak = max(peak.peak, rss)


_SAMPLER = _Sampler()


class PeakMemory:
    """Samples this process's resident memory while the ``with`` block runs.

    ``grown`` is the most it held above what it held on entering, in bytes: what a
    batch needs on top of an idle worker. Sampled about every ``every`` seconds by
    a daemon thread the process shares (and once on leaving), so a peak shorter
    than that may be missed.

    Examples
    --------
    >>> with PeakMemory() as peak:
    ...     block = bytearray(50 * 2**20)
    >>> peak.grown > 40 * 2**20
    True
    """

    def __init__(self, every: float = 0.05):
        self.every = every
        self.start = self.peak = 0

    def __enter__(self) -> PeakMemory:
        self.start = self.peak = resident_memory()
        _SAMPLER.add(self)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        _SAMPLER.remove(self)
        self.peak = max(self.peak, resident_memory())

    @property
    def grown(self) -> int:
        return max(0, self.peak - self.start)
