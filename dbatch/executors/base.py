"""The executor interface: run batch tasks and reduce buckets somewhere, report how they ended."""

from __future__ import annotations

import abc
import dataclasses
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

from ..compile.physical import PhysicalPlan
from ..core import Batch, BatchResult
from ..retry import Failure
from ..tasks import BatchTask

__all__ = ["Executor", "Handle", "Outcome"]

#: What the preflight decided, by (pipeline definition, first batch's fingerprint): a
#: re-run in this process over the same first batch (a notebook, ``dbatch watch``) does
#: not ask a worker again. Only checks that passed are kept; the newest 256.
_VERDICTS: OrderedDict[tuple[str, str], tuple[Any, str]] = OrderedDict()
_VERDICTS_LOCK = threading.Lock()


class Handle(abc.ABC):
    """A submitted task; executors subclass it."""

    task: BatchTask


@dataclass(frozen=True)
class Outcome:
    """How a task ended: its result, or how it failed."""

    result: BatchResult | None = None
    failure: Failure | None = None


class Executor(abc.ABC):
    """Runs the tasks of one run: a Dask cluster, or this process.

    The runner calls ``start`` once with the physical plan and the shared objects,
    then ``submit``s tasks, ``wait``s for some to end and asks each ``outcome``.
    Retries, commits and events are the runner's; an executor only runs things.
    """

    #: The dashboard of the cluster, when there is one.
    dashboard: str | None = None

    @property
    @abc.abstractmethod
    def threads(self) -> int:
        """How many tasks can run at once."""

    @property
    def in_flight(self) -> int:
        """How many tasks to keep submitted at once: enough that no thread waits for work.

        Four per thread, and at least sixteen: while the driver commits one batch, the
        scheduler holds the next ones (it hands a worker one task per thread), and
        several batches ending together are collected, and as many sent, at once.
        """
        return max(16, 4 * self.threads)

    @abc.abstractmethod
    def start(self, plan: PhysicalPlan, shared: Sequence[Any]) -> None: ...

    @abc.abstractmethod
    def submit(self, task: BatchTask) -> Handle: ...

    @abc.abstractmethod
    def wait(self, handles: Sequence[Handle], timeout: float) -> list[Handle]:
        """The handles among ``handles`` that have ended (waiting up to ``timeout`` for one)."""

    @abc.abstractmethod
    def outcome(self, handle: Handle) -> Outcome: ...

    def submit_many(self, tasks: Sequence[BatchTask]) -> list[Handle]:
        """Submit ``tasks`` at once (an executor may send them in one message)."""
        return [self.submit(t) for t in tasks]

    def outcomes(self, handles: Sequence[Handle]) -> list[Outcome]:
        """The outcomes of ended ``handles``, in order (an executor may fetch them at once)."""
        return [self.outcome(h) for h in handles]

    @abc.abstractmethod
    def cancel(self, handles: Sequence[Handle]) -> None: ...

    @abc.abstractmethod
    def call(self, key: Any, fn: Callable[..., Any], *args: Any) -> Callable[[], Any]:
        """Run ``fn(*args)`` there; returns a function that waits for its result."""

    def preflight(
        self, key: Any, plan: PhysicalPlan, sample: Batch | None, token: str | None = None
    ) -> PhysicalPlan:
        """``plan`` after the checks of ``sample`` (``compile.check.preflight``), made there.

        Called after ``start``, so the checks see the shared objects; the tasks
        submitted afterwards run the plan returned. On a cluster a worker does it:
        DuckDB is loaded there already. A SQL step that cannot compile raises
        ``JobSpecError`` here, before any batch is sent. ``token``: the pipeline's
        definition token; a definition this process checked before over the same
        first batch is not checked again (only checks that passed are remembered).
        """
        from ..compile.check import preflight
        from ..compile.physical import SqlStage

        if plan.aggregate is None and not (plan.stages and isinstance(plan.stages[0], SqlStage)):
            # Nothing to compile (checks stop at the first step that is not SQL, as its
            # columns are known only when it runs) and no partials to decide: no round trip.
            return plan
        memo = (token, sample.fingerprint) if token and sample is not None else None
        with _VERDICTS_LOCK:
            verdict = _VERDICTS.get(memo) if memo else None
        if verdict is not None:
            checked = dataclasses.replace(plan, partials=verdict[0], partials_note=verdict[1])
        else:
            checked = self.call(key, preflight, plan, sample, self.shared())()
            if isinstance(checked, Exception):
                raise checked
            if memo:
                with _VERDICTS_LOCK:
                    _VERDICTS[memo] = (checked.partials, checked.partials_note)
                    while len(_VERDICTS) > 256:
                        _VERDICTS.popitem(last=False)
        self.replan(checked)
        return checked

    @abc.abstractmethod
    def shared(self) -> Mapping[str, Any]:
        """The shared objects by token, as a task here finds them."""

    @abc.abstractmethod
    def replan(self, plan: PhysicalPlan) -> None:
        """Tasks submitted from now on run ``plan`` (the one ``start`` was given, decided)."""

    @abc.abstractmethod
    def reduce(
        self, plan: PhysicalPlan, args: Sequence[tuple[Any, ...]], keys: Sequence[Any]
    ) -> list[Any]:
        """Run ``reduce_bucket(plan, *a)`` for each ``a`` of ``args``; the results in order."""

    @property
    def memory_limit(self) -> int | None:
        """The smallest memory limit of a worker in bytes, when there is one."""
        return None

    def demand(self, batches_left: int) -> None:
        """How many batches the run has left, so an elastic cluster can grow or shrink to it."""
        return None

    def span(self, name: str) -> AbstractContextManager[None]:
        """A context in which the run's tasks are grouped under ``name`` (where that exists)."""
        return nullcontext()

    def finish(self) -> None:
        """The run is over: release what it holds (shared objects, the plan)."""
        return None

    def close(self) -> None:
        """Close what this executor started itself (a cluster, a client)."""
        return None
