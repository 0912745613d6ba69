"""How much a process grows while it does something: the peak of its resident memory."""

from __future__ import annotations

import threading
from types import TracebackType

__all__ = ["PeakMemory", "resident_memory"]


def resident_memory() -> int:
    """This process's resident memory in bytes (0 where it cannot be read)."""
    try:
        import psutil

        return int(psutil.Process().memory_info().rss)
    except Exception:  # noqa: BLE001 - a platform without it measures nothing
        return 0


class PeakMemory:
    """Samples this process's resident memory while the ``with`` block runs.

    ``grown`` is the most it held above what it held on entering, in bytes: what a
    batch needs on top of an idle worker. Sampled every ``every`` seconds by a
    daemon thread (and once on leaving), so a peak shorter than that may be missed.

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
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> PeakMemory:
        self.start = self.peak = resident_memory()
        self._thread = threading.Thread(target=self._sample, name="dbatch-peak-memory", daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(self.every):
            self.peak = max(self.peak, resident_memory())

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.peak = max(self.peak, resident_memory())

    @property
    def grown(self) -> int:
        return max(0, self.peak - self.start)
