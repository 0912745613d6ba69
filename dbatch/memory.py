"""How much a process grows while it does something, and keeping freed memory while a batch runs."""

from __future__ import annotations

import os
import threading
from types import TracebackType
from typing import Any

__all__ = ["PeakMemory", "FreedMemoryKept", "resident_memory"]

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


#: glibc's ``mallopt`` parameters (malloc.h) and its default for both thresholds.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_GLIBC_DEFAULT = 128 * 2**10
#: Inside the block: blocks up to 32 MiB (glibc's largest mmap threshold) come from the
#: heap, and up to 1 GiB freed at its top stays there.
_KEEP_MMAP, _KEEP_TRIM = 32 * 2**20, 2**30


def _fixed_thresholds() -> tuple[int, int] | None:
    """(trim, mmap) thresholds the environment fixed for glibc, or None if it fixed neither.

    Fixing either turns off glibc's own adjustment of the mmap threshold, so memory
    comes and goes at the fixed sizes; without them glibc adapts by itself.
    """
    trim, mmap = os.environ.get("MALLOC_TRIM_THRESHOLD_"), os.environ.get("MALLOC_MMAP_THRESHOLD_")
    if trim is None and mmap is None:
        return None
    try:
        return int(trim or _GLIBC_DEFAULT), int(mmap or _GLIBC_DEFAULT)
    except ValueError:
        return None


def _glibc() -> Any:
    """The C library when it is glibc (it has ``mallopt`` and ``malloc_trim``), else None."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


class FreedMemoryKept:
    """While the ``with`` block runs, memory this process frees stays in it for reuse.

    Dask's nanny starts workers with ``MALLOC_TRIM_THRESHOLD_=65536``, which also
    fixes glibc's mmap threshold at 128 KiB: every larger array is mapped afresh
    when made and unmapped when freed, so a batch that makes and drops arrays of
    megabytes (a model scoring 65,536 rows at a time) faults each one in again,
    page by page, and spends a tenth of its time in the kernel. Inside the block
    both thresholds are raised; when the last block ends (several threads may be
    in one) they are set back and the freed memory is returned to the system
    (``malloc_trim``), as the environment wants between tasks. Nothing changes
    where the environment fixed neither threshold (glibc then adapts by itself)
    or the C library is not glibc. Only for batches that score a model: in one that
    reads and aggregates, the freed buffers would sit unused and raise its peak (the
    CSV reference job peaked 45 % higher).

    Examples
    --------
    >>> with FreedMemoryKept():
    ...     blocks = [bytearray(2**20) for _ in range(4)]
    """

    _lock = threading.Lock()
    _inside = 0
    _libc: Any = None
    _looked = False

    def __enter__(self) -> FreedMemoryKept:
        with self._lock:
            FreedMemoryKept._inside += 1
            libc = self._fixed_libc()
            if FreedMemoryKept._inside == 1 and libc is not None:
                libc.mallopt(_M_MMAP_THRESHOLD, _KEEP_MMAP)
                libc.mallopt(_M_TRIM_THRESHOLD, _KEEP_TRIM)
        return self

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            FreedMemoryKept._inside -= 1
            fixed, libc = _fixed_thresholds(), self._fixed_libc()
            if FreedMemoryKept._inside == 0 and fixed is not None and libc is not None:
                libc.mallopt(_M_TRIM_THRESHOLD, fixed[0])
                libc.mallopt(_M_MMAP_THRESHOLD, fixed[1])
                libc.malloc_trim(0)

    @classmethod
    def _fixed_libc(cls) -> Any:
        """glibc, when the environment fixed its thresholds; else None (nothing to do)."""
        if _fixed_thresholds() is None:
            return None
        if not cls._looked:
            cls._libc, cls._looked = _glibc(), True
        return cls._libc
