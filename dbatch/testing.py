"""Contract tests every sink inherits, and tools for tests that break things on purpose."""

from __future__ import annotations

import hashlib
import os
import random
import signal
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .core import Batch, Event
from .errors import TransientError
from .protocols import CommitsBatches, Manifested, StagesQueries

__all__ = [
    "SinkContract",
    "EventLog",
    "SeededFaults",
    "RaiseOn",
    "KillWorker",
    "Pause",
    "AllFaults",
    "FlakySource",
    "FlakySink",
    "data_files",
    "leftovers",
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


# -- observing a run ---------------------------------------------------------------


class EventLog:
    """A run listener that keeps every event.

    Examples
    --------
    >>> log = EventLog()
    >>> result = pipeline.run(listeners=[log])  # doctest: +SKIP
    >>> log.started()  # doctest: +SKIP
    Counter({'b-1f2e...': 1, ...})
    """

    def __init__(self) -> None:
        self.events: list[Event] = []
        self._lock = threading.Lock()

    def __call__(self, event: Event) -> None:
        with self._lock:
            self.events.append(event)

    def of(self, kind: str) -> list[Event]:
        """The events of one kind, in order."""
        return [e for e in self.events if e.kind == kind]

    def started(self) -> Counter:
        """How many attempts each batch was started with in this run."""
        return Counter(e.batch_id for e in self.of("batch_started"))


def data_files(path: str | os.PathLike) -> dict[str, str]:
    """``relative path -> sha256`` of every data file below ``path`` (``_manifest`` etc. excluded).

    Two outputs are byte-identical when these are equal.

    Examples
    --------
    >>> data_files("out/daily_totals")  # doctest: +SKIP
    {'part-b-3f1c2a9e0d11.parquet': '9b1d...'}
    """
    root = Path(path).resolve()
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root)
        if p.is_file() and not any(part.startswith(("_", ".")) for part in rel.parts):
            out[str(rel)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def leftovers(work_area: str | os.PathLike, output: str | os.PathLike | None = None) -> list[str]:
    """Files a run should not leave behind: staging, replaced batches, half-built versions.

    Examples
    --------
    >>> leftovers(pipeline.work_area(), "out/daily_totals")  # doctest: +SKIP
    []
    """
    work = Path(work_area)
    found = [str(p) for p in (work / "staging").rglob("*")] if (work / "staging").exists() else []
    if (work / "batches").exists():
        found += [str(p) for p in (work / "batches").iterdir() if ".old-" in p.name]
    if output is not None:
        out = Path(output)
        versions = out.parent / f".{out.name}.versions"
        if versions.exists():
            found += [str(p) for p in versions.iterdir() if p.name.endswith(".building")]
        found += [str(p) for p in out.parent.glob(f".{out.name}.link-*")]
    return found


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
            (folder / f"started-{batch.id}-a{attempt}-{os.getpid()}").touch()
        time.sleep(self.seconds)

    def starts(self) -> list[tuple[str, int, int, float]]:
        """``(batch id, attempt, pid, time)`` of every recorded start, oldest first."""
        if self.marker is None or not Path(self.marker).exists():
            return []
        found = []
        for f in Path(self.marker).glob("started-*"):
            batch_id, attempt, pid = f.name.removeprefix("started-").rsplit("-", 2)
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
        cls = dataclass(frozen=True)(type(name, (*mixins, _FlakySink), {}))
        cls.__qualname__ = name
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


# -- the sink contract -----------------------------------------------------------------


class SinkContract:
    """The tests every sink passes. Subclass it in a test module and fill in two hooks.

    ``make_sink(tmp_path)`` returns a new sink writing below (or named after)
    ``tmp_path``; ``read_output(sink)`` returns what a reader sees now (a pandas
    DataFrame for table sinks). The test methods take pytest's ``tmp_path`` and a
    ``client`` fixture (a ``distributed.Client``), which the test suite provides.

    The input is a few small CSV files, one batch each. A sink that needs other
    data (an array store) overrides ``write_input``/``make_source`` and
    ``assert_same_output``.

    What is checked: a re-run and a re-commit are idempotent; a driver that died
    before the promote leaves nothing visible and its staging is cleaned; one
    that died after the promote (before or after ``commit_batch``) is adopted,
    not redone, and never duplicated; a failed run leaves the previous output
    as it was; failed attempts leave no staging behind.

    Examples
    --------
    >>> class TestParquetSink(SinkContract):  # doctest: +SKIP
    ...     def make_sink(self, tmp_path):
    ...         return ParquetSink(str(tmp_path / "out"))
    ...     def read_output(self, sink):
    ...         return pd.read_parquet(sink.path)
    """

    n_files = 4
    rows_per_file = 25

    # -- hooks -------------------------------------------------------------------------

    def make_sink(self, tmp_path: Path) -> Any:
        raise NotImplementedError("return a new sink that writes below tmp_path")

    def read_output(self, sink: Any) -> Any:
        raise NotImplementedError("return what a reader of the sink's output sees now")

    def write_input(self, folder: Path, index: int) -> None:
        """Write input file number ``index`` into ``folder``."""
        folder.mkdir(parents=True, exist_ok=True)
        lines = ["id,account,amount,day"]
        for i in range(self.rows_per_file):
            lines.append(
                f"{index}-{i},A{i % 5},{(i * 7 + index) % 100}.5,2026-01-{1 + index % 28:02d}"
            )
        (folder / f"part-{index:03d}.csv").write_text("\n".join(lines) + "\n")

    def make_source(self, folder: Path) -> Any:
        from .sources.files import Files

        return Files(
            str(folder / "*.csv"),
            schema={"id": "string", "account": "string", "amount": "float64", "day": "date32"},
        )

    def assert_same_output(self, got: Any, want: Any) -> None:
        """Same rows, each exactly once (order does not matter)."""
        import pandas as pd

        assert list(got.columns) == list(want.columns)
        assert len(got) == len(want), f"{len(got)} rows, expected {len(want)}"

        def norm(frame):
            return frame.sort_values(list(frame.columns)).reset_index(drop=True)

        pd.testing.assert_frame_equal(norm(got), norm(want))

    # -- building blocks ------------------------------------------------------------------

    def make_pipeline(self, tmp_path: Path, sink: Any, name: str = "contract"):
        from .batching import ByCount
        from .pipeline import Pipeline

        return Pipeline(
            self.make_source(tmp_path / "input"),
            sink,
            batching=ByCount(1),
            name=name,
            workdir=str(tmp_path / f"work-{name}"),
        )

    def reference(self, tmp_path: Path, client) -> Any:
        """The output of a fault-free run over the current input."""
        root = tmp_path / f"reference-{len(list(tmp_path.glob('reference-*')))}"
        root.mkdir()
        sink = self.make_sink(root)
        result = (
            self.make_pipeline(tmp_path, sink, name="reference")
            .replace(workdir=str(root / "work"))
            .run(client=client)
        )
        assert result.status == "succeeded", result
        return self.read_output(sink)

    def _inputs(self, tmp_path: Path, n: int) -> None:
        for i in range(n):
            self.write_input(tmp_path / "input", i)

    def _stage_as_dead_driver(self, pipeline, batch: Batch, run_id: str):
        """Do what a run does for ``batch`` up to the promote, in this process."""
        from .tasks import BatchTask, process_batch
        from .workarea import WorkArea

        work = WorkArea(pipeline.work_area())
        task = BatchTask(batch, run_id, str(work.staging(run_id)))
        return work, process_batch(pipeline.physical(), task)

    def _one_more_input(self, tmp_path: Path, client) -> tuple[Any, Any, Any, Batch]:
        """Run over all inputs but the last, then add it.

        Returns the sink, a fresh pipeline over every input, the output before the
        new input, and the batch the new input makes.
        """
        self._inputs(tmp_path, self.n_files - 1)
        sink = self.make_sink(tmp_path / "subject")
        first = self.make_pipeline(tmp_path, sink).run(client=client)
        assert first.status == "succeeded", first
        before = self.read_output(sink)
        self.write_input(tmp_path / "input", self.n_files - 1)
        pipeline = self.make_pipeline(tmp_path, sink)
        last = f"{self.n_files - 1:03d}.csv"
        [new] = [b for b in pipeline.plan() if b.units[0].key.endswith(last)]
        return sink, pipeline, before, new

    def _staging_runs(self, pipeline) -> list[str]:
        staging = pipeline.work_area() / "staging"
        return sorted(p.name for p in staging.iterdir()) if staging.exists() else []

    # -- the contract ------------------------------------------------------------------

    def test_rerun_and_recommit_are_idempotent(self, tmp_path, client):
        from .ledger import Ledger, batches

        self._inputs(tmp_path, self.n_files)
        want = self.reference(tmp_path, client)
        sink = self.make_sink(tmp_path / "subject")
        pipeline = self.make_pipeline(tmp_path, sink)
        first = pipeline.run(client=client)
        assert first.status == "succeeded", first
        self.assert_same_output(self.read_output(sink), want)

        again = pipeline.run(client=client)
        assert again.status == "nothing_to_do" and again.committed == 0, again
        self.assert_same_output(self.read_output(sink), want)

        # The ledger lost every batch record: each committed batch is found and adopted,
        # committed to the sink again (idempotently), and nothing is recomputed.
        ledger = Ledger(pipeline.ledger_url())
        with ledger.engine.begin() as con:
            con.execute(batches.delete().where(batches.c.job == pipeline.name))
        ledger.close()
        log = EventLog()
        third = pipeline.run(client=client, listeners=[log])
        assert third.ok and third.recovered == self.n_files, third
        assert log.started() == Counter(), "a committed batch was recomputed"
        self.assert_same_output(self.read_output(sink), want)

    def test_driver_died_before_promote(self, tmp_path, client):
        sink, pipeline, before, new = self._one_more_input(tmp_path, client)
        self._stage_as_dead_driver(pipeline, new, "dead-run")
        assert self._staging_runs(pipeline) == ["dead-run"]
        self.assert_same_output(self.read_output(sink), before)  # staged is not visible

        log = EventLog()
        result = pipeline.run(client=client, listeners=[log])
        assert result.status == "succeeded", result
        assert self._staging_runs(pipeline) == []
        assert log.started() == Counter({new.id: 1})
        self.assert_same_output(self.read_output(sink), self.reference(tmp_path, client))

    def test_driver_died_after_promote(self, tmp_path, client):
        import os as _os

        from .sinks.base import Part

        self._inputs(tmp_path, self.n_files)
        want = self.reference(tmp_path, client)
        sink = self.make_sink(tmp_path / "subject")
        pipeline = self.make_pipeline(tmp_path, sink)
        plan = pipeline.plan()
        # Batch 0: renamed into place, then the driver died. Batch 1: also committed to
        # the sink (a sink that publishes per batch), then the driver died before recording.
        for batch, sink_commit in ((plan[0], False), (plan[1], True)):
            work, staged = self._stage_as_dead_driver(pipeline, batch, "dead-run")
            target = work.batch_dir(batch)
            target.parent.mkdir(parents=True, exist_ok=True)
            _os.rename(staged.staging, target)
            if sink_commit and isinstance(sink, CommitsBatches):
                sink.commit_batch(
                    batch.id, batch.fingerprint, Part(batch.id, target, staged.rows_out)
                )

        log = EventLog()
        result = pipeline.run(client=client, listeners=[log])
        assert result.status == "succeeded", result
        assert result.recovered == 2, result
        assert plan[0].id not in log.started() and plan[1].id not in log.started()
        assert sum(log.started().values()) == len(plan) - 2
        self.assert_same_output(self.read_output(sink), want)

    def test_failed_run_keeps_previous_output(self, tmp_path, client):
        sink, pipeline, before, new = self._one_more_input(tmp_path, client)
        failed = pipeline.run(client=client, fault=RaiseOn((new.id,)))
        assert failed.status == "failed" and failed.failed == 1, failed
        self.assert_same_output(self.read_output(sink), before)
        assert self._staging_runs(pipeline) == []

        fixed = pipeline.run(client=client)
        assert fixed.status == "succeeded" and fixed.committed == 1, fixed
        self.assert_same_output(self.read_output(sink), self.reference(tmp_path, client))

    def test_failed_attempts_leave_no_staging(self, tmp_path, client):
        self._inputs(tmp_path, self.n_files)
        want = self.reference(tmp_path, client)
        sink = self.make_sink(tmp_path / "subject")
        pipeline = self.make_pipeline(tmp_path, FlakySink(sink))
        # Every batch's first write fails after its files reached the staging folder.
        faults = SeededFaults(seed=0, rate=1.0, max_failures=1, where=("write",))
        log = EventLog()
        result = pipeline.run(client=client, fault=faults, listeners=[log])
        assert result.status == "succeeded", result
        assert len(log.of("batch_retry")) == self.n_files
        assert self._staging_runs(pipeline) == []
        self.assert_same_output(self.read_output(sink), want)
