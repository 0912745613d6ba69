"""Fault hooks for ``pipeline.run(fault=...)``, and a source and a sink that fail on cue."""

from __future__ import annotations

import os
import random
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core import Batch
from ..errors import TransientError
from ..protocols import CommitsBatches, Manifested, StagesQueries

__all__ = [
    "SeededFaults",
    "RaiseOn",
    "KillWorker",
    "Pause",
    "AllFaults",
    "FlakySource",
    "FlakySink",
]

_ERRORS: dict[str, type[BaseException]] = {
    "OSError": OSError,
    "TransientError": TransientError,
    "ConnectionError": ConnectionError,
    "TimeoutError": TimeoutError,
    "ValueError": ValueError,
    "KeyError": KeyError,
    "AssertionError": AssertionError,
}

# Faults armed by a fault hook for the read or the write of the batch this thread runs.
_ARMED: dict[tuple[str, int], tuple[str, BaseException]] = {}


# -- fault hooks (``pipeline.run(fault=...)``; run on the worker before each batch) --------


@dataclass(frozen=True)
class SeededFaults:
    """Transient failures at random but reproducible moments: before, in the read, in the write.

    Whether attempt ``n`` of a batch fails, where and with which error depends
    only on ``(seed, the batch's place in the plan, n)``. At most ``max_failures`` attempts of a
    batch fail, so a retry policy with more attempts always gets through.
    ``read`` and ``write`` faults fire inside ``FlakySource.load`` and
    ``FlakySink.stage`` (a write fault after the files hit the staging folder).

    Examples
    --------
    >>> faults = SeededFaults(seed=3, rate=0.5, max_failures=2)
    >>> [faults.failures(i) for i in range(6)]
    [2, 0, 1, 2, 1, 0]
    """

    seed: int
    rate: float = 0.5
    max_failures: int = 2
    where: tuple[str, ...] = ("before", "read", "write")
    errors: tuple[str, ...] = ("OSError", "TransientError", "ConnectionError", "TimeoutError")

    def fault_at(self, index: int, attempt: int) -> tuple[str, str] | None:
        """``(where, error class name)`` for attempt ``attempt`` of batch ``index``, or None."""
        if attempt > self.max_failures:
            return None
        rng = random.Random(f"{self.seed}:{index}:{attempt}")
        if rng.random() >= self.rate:
            return None
        return rng.choice(self.where), rng.choice(self.errors)

    def failures(self, index: int) -> int:
        """How many attempts of batch ``index`` (its place in the plan) fail before one passes."""
        n = 0
        while self.fault_at(index, n + 1) is not None:
            n += 1
        return n

    def __call__(self, batch: Batch, attempt: int) -> None:
        key = (batch.id, threading.get_ident())
        _ARMED.pop(key, None)
        planned = self.fault_at(batch.index, attempt)
        if planned is None:
            return
        where, error = planned
        exc = _ERRORS[error](f"injected {error} in {where} of batch {batch.id}, attempt {attempt}")
        if where == "before":
            raise exc
        _ARMED[key] = (where, exc)


@dataclass(frozen=True)
class RaiseOn:
    """Raise ``error`` (a class name such as ``ValueError``) on every attempt of some batches.

    Examples
    --------
    >>> hook = RaiseOn(("b-0123456789ab",), error="ValueError")
    """

    batch_ids: tuple[str, ...]
    error: str = "ValueError"
    message: str = "injected failure"

    def __call__(self, batch: Batch, attempt: int) -> None:
        if batch.id in self.batch_ids:
            raise _ERRORS[self.error](f"{self.message} (batch {batch.id}, attempt {attempt})")


@dataclass(frozen=True)
class KillWorker:
    """Kill the worker process running a batch (``SIGKILL``), like the kernel's OOM killer.

    Each of the first ``times`` attempts of a victim batch kills its worker;
    later attempts run through. ``marker`` is a folder every worker can see,
    where the kills are counted. With no ``batch_ids`` every batch is a victim.

    Examples
    --------
    >>> hook = KillWorker("/tmp/kills", batch_ids=("b-0123456789ab",))  # doctest: +SKIP
    """

    marker: str
    batch_ids: tuple[str, ...] = ()
    times: int = 1

    def __call__(self, batch: Batch, attempt: int) -> None:
        if self.batch_ids and batch.id not in self.batch_ids:
            return
        Path(self.marker).mkdir(parents=True, exist_ok=True)
        for n in range(self.times):
            try:
                fd = os.open(
                    Path(self.marker) / f"killed-{batch.id}-{n}",
                    os.O_CREAT | os.O_EXCL | os.O_WRONLY,
                )
            except FileExistsError:
                continue
            os.close(fd)
            os.kill(os.getpid(), signal.SIGKILL)

    def kills(self) -> int:
        """How many workers this hook has killed so far."""
        folder = Path(self.marker)
        return len(list(folder.glob("killed-*"))) if folder.exists() else 0


@dataclass(frozen=True)
class Pause:
    """Sleep before each batch, so that a short test run lasts long enough to break it midway.

    With a ``marker`` folder, each start is recorded first as a file
    ``started-<batch id>-a<attempt>-<pid>``: which worker process ran which batch, when.
    After :meth:`hold` of a process, the next batch it starts stays in this hook (and
    says so with a ``held-...`` file) until the process is killed: a test then strikes
    inside a batch however slow the machine is.

    Examples
    --------
    >>> Pause(0.1)(Batch("b-1", (), "f"), 1)
    """

    seconds: float
    marker: str | None = None

    def __call__(self, batch: Batch, attempt: int) -> None:
        import time

        if self.marker is not None:
            folder = Path(self.marker)
            folder.mkdir(parents=True, exist_ok=True)
            name = f"{batch.id}-a{attempt}-{os.getpid()}"
            (folder / f"started-{name}").touch()
            if (folder / f"hold-{os.getpid()}").exists():
                (folder / f"held-{name}").touch()
                time.sleep(120)  # killed long before, or the test has failed
        time.sleep(self.seconds)

    def hold(self, pid: int) -> None:
        """Keep the next batch that process ``pid`` starts inside this hook."""
        assert self.marker is not None, "Pause(marker=...) is needed to hold a process"
        Path(self.marker).mkdir(parents=True, exist_ok=True)
        (Path(self.marker) / f"hold-{pid}").touch()

    def starts(self) -> list[tuple[str, int, int, float]]:
        """``(batch id, attempt, pid, time)`` of every recorded start, oldest first."""
        return self._recorded("started")

    def held(self) -> list[tuple[str, int, int, float]]:
        """The same for every batch held after :meth:`hold`."""
        return self._recorded("held")

    def _recorded(self, kind: str) -> list[tuple[str, int, int, float]]:
        if self.marker is None or not Path(self.marker).exists():
            return []
        found = []
        for f in Path(self.marker).glob(f"{kind}-*"):
            batch_id, attempt, pid = f.name.removeprefix(f"{kind}-").rsplit("-", 2)
            found.append((batch_id, int(attempt[1:]), int(pid), f.stat().st_mtime))
        return sorted(found, key=lambda s: s[3])


@dataclass(frozen=True)
class AllFaults:
    """Several fault hooks in turn: ``AllFaults((KillWorker(...), RaiseOn(...)))``."""

    hooks: tuple[Callable[[Batch, int], None], ...]

    def __call__(self, batch: Batch, attempt: int) -> None:
        for hook in self.hooks:
            hook(batch, attempt)


def _fire(where: str, batch_id: str) -> None:
    armed = _ARMED.get((batch_id, threading.get_ident()))
    if armed is not None and armed[0] == where:
        del _ARMED[(batch_id, threading.get_ident())]
        raise armed[1]


@dataclass(frozen=True)
class FlakySource:
    """A source whose reads fail when a ``SeededFaults`` hook says so; otherwise ``source``.

    Its token is the wrapped source's, so batches and fingerprints are the same as without it.
    """

    source: Any

    def describe(self) -> str:
        return self.source.describe()

    def token(self) -> list[Any]:
        return self.source.token()

    def list_units(self):
        return self.source.list_units()

    def load(self, batch: Batch, ctx):
        _fire("read", batch.id)
        return self.source.load(batch, ctx)


@dataclass(frozen=True)
class _FlakySink:
    """A sink whose staging writes fail (after writing) when a ``SeededFaults`` hook says so.

    Everything else is the wrapped sink's, token included.
    """

    sink: Any

    def describe(self) -> str:
        return self.sink.describe()

    def token(self) -> list[Any]:
        return self.sink.token()

    @property
    def location(self) -> str:
        return self.sink.location

    def stage(self, data, directory: Path, name: str) -> dict[str, Any]:
        info = self.sink.stage(data, directory, name)
        _fire("write", name)
        return info

    def publish(self, run_id: str, parts, summary: dict[str, Any]) -> dict[str, Any]:
        return self.sink.publish(run_id, parts, summary)


class _Commits:
    sink: Any

    def commit_batch(self, batch_id: str, fingerprint: str, part) -> None:
        self.sink.commit_batch(batch_id, fingerprint, part)

    def find_commit(self, batch_id: str, fingerprint: str) -> bool:
        return self.sink.find_commit(batch_id, fingerprint)


class _Manifest:
    sink: Any

    def current_manifest(self):
        return self.sink.current_manifest()


class _Queries:
    sink: Any

    def stage_query(self, sql: str, tables: dict[str, Any], directory: Path, name: str):
        return self.sink.stage_query(sql, tables, directory, name)


_CAPABILITIES = ((CommitsBatches, _Commits), (Manifested, _Manifest), (StagesQueries, _Queries))
_FLAKY: dict[tuple[type, ...], type] = {}


def _flaky_classes() -> None:
    """One class per combination of capabilities, at module level so that they pickle."""
    for n in range(1 << len(_CAPABILITIES)):
        mixins = tuple(m for k, (_, m) in enumerate(_CAPABILITIES) if n >> k & 1)
        name = "_FlakySink" + "".join(m.__name__ for m in mixins)
        namespace = {"__module__": __name__, "__qualname__": name}
        cls: type = dataclass(frozen=True)(type(name, (*mixins, _FlakySink), namespace))
        globals()[name] = cls
        _FLAKY[mixins] = cls


_flaky_classes()


def FlakySink(sink: Any) -> Any:  # noqa: N802 - used like the class it returns
    """A sink whose staging writes fail (after writing) when a ``SeededFaults`` hook says so.

    It has exactly the capabilities of ``sink`` (``CommitsBatches``, ``Manifested``,
    ``StagesQueries``); everything else is the wrapped sink's, token included.
    """
    mixins = tuple(m for protocol, m in _CAPABILITIES if isinstance(sink, protocol))
    return _FLAKY[mixins](sink)
