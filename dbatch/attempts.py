"""The attempts of a run: submit batches, wait, retry what the verdict says, stop on fail_fast.

``Attempts`` knows nothing of commits, the ledger or events: it calls back the
runner (``AttemptHooks``) when an attempt starts, succeeds, will be retried or
fails for good. At most ``max_in_flight`` batches are submitted at a time
(default: ``dbatch.cluster.max-in-flight``, else the executor's ``in_flight``, read
again at each turn so that it follows a cluster that grows), so a run of many
batches keeps the cluster busy without flooding the scheduler: the scheduler holds
a bounded number of tasks, and the driver only the batches not yet submitted.
The executor is told the batches left (``Executor.demand``) whenever that changes.
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from . import config
from .core import Batch, BatchResult
from .executors.base import Executor, Handle, Outcome
from .retry import Failure, Next, RetryPolicy, Verdict, after_failure
from .tasks import BatchTask

__all__ = ["Attempts", "AttemptHooks"]


class AttemptHooks(Protocol):
    """What the runner does at each turn of an attempt."""

    def started(self, attempts: Sequence[tuple[Batch, int]]) -> None:
        """Attempts submitted together: (batch, attempt number), in order."""
        ...

    def succeeded(self, batch: Batch, result: BatchResult, attempt: int) -> None: ...

    def retrying(self, batch: Batch, attempt: int, failure: Failure, verdict: Verdict) -> None: ...

    def gave_up(self, batch: Batch, attempt: int, failure: Failure, verdict: Verdict) -> None: ...

    def alive(self) -> None:
        """Called at least every ``heartbeat`` seconds while attempts run."""
        ...


@dataclass
class _State:
    attempts: dict[str, int]  # of the batches submitted and not done yet
    running: dict[Handle, Batch]
    waiting: list[tuple[float, int, Batch]]  # (due, tie-breaker, batch)
    pending: list[Batch]
    stopping: bool = False


class Attempts:
    """Runs ``batches`` on ``executor`` until each has succeeded or been given up."""

    def __init__(
        self,
        executor: Executor,
        make_task: Callable[[Batch, int], BatchTask],
        hooks: AttemptHooks,
        policy: RetryPolicy,
        *,
        fail_fast: bool = False,
        max_in_flight: int | None = None,
        heartbeat: float = 30.0,
    ):
        self.executor = executor
        self.make_task = make_task
        self.hooks = hooks
        self.policy = policy
        self.fail_fast = fail_fast
        self.fixed_in_flight = max_in_flight or int(config.get("cluster.max-in-flight") or 0)
        self.heartbeat = heartbeat
        self._order = itertools.count()

    @property
    def max_in_flight(self) -> int:
        """Batches submitted at once: the fixed cap, else what the executor can run."""
        return self.fixed_in_flight or max(1, self.executor.in_flight)

    def run(self, batches: Sequence[Batch]) -> None:
        state = _State({}, {}, [], list(reversed(batches)))
        beat = time.time()
        left = -1
        while state.pending or state.running or state.waiting:
            now_left = len(state.pending) + len(state.running) + len(state.waiting)
            if now_left != left:
                self.executor.demand(now_left)
                left = now_left
            self._submit_due(state)
            if not state.running:
                if state.waiting:
                    time.sleep(max(0.0, state.waiting[0][0] - time.time()))
                continue
            due = state.waiting[0][0] if state.waiting else time.time() + 1.0
            done = self.executor.wait(list(state.running), max(0.05, due - time.time()))
            if time.time() - beat > self.heartbeat:
                self.hooks.alive()
                beat = time.time()
            for handle, outcome in zip(done, self.executor.outcomes(done), strict=True):
                self._ended(state, handle, outcome)

    def _submit_due(self, state: _State) -> None:
        now = time.time()
        while state.waiting and state.waiting[0][0] <= now and not state.stopping:
            _, _, batch = heapq.heappop(state.waiting)
            self._submit(state, batch)
        cap = self.max_in_flight
        if state.running and cap - len(state.running) < max(1, cap // 4):
            return  # topped up once a quarter of the window is free: fewer, larger messages
        fresh: list[Batch] = []
        while state.pending and len(state.running) + len(fresh) < cap and not state.stopping:
            fresh.append(state.pending.pop())
        self._submit_all(state, fresh)

    def _submit(self, state: _State, batch: Batch) -> None:
        self._submit_all(state, [batch])

    def _submit_all(self, state: _State, batches: Sequence[Batch]) -> None:
        if not batches:
            return
        tasks, started = [], []
        for batch in batches:
            state.attempts[batch.id] = n = state.attempts.get(batch.id, 0) + 1
            started.append((batch, n))
            tasks.append(self.make_task(batch, n))
        self.hooks.started(started)
        for batch, handle in zip(batches, self.executor.submit_many(tasks), strict=True):
            state.running[handle] = batch

    def _ended(self, state: _State, handle: Handle, outcome: Outcome) -> None:
        batch = state.running.pop(handle)
        n = state.attempts[batch.id]
        if outcome.result is not None:
            del state.attempts[batch.id]  # the run keeps nothing of a batch that is done
            self.hooks.succeeded(batch, outcome.result, n)
            return
        assert outcome.failure is not None
        verdict = after_failure(outcome.failure, n, self.policy, stopping=state.stopping)
        if verdict.next is Next.RETRY:
            self.hooks.retrying(batch, n, outcome.failure, verdict)
            heapq.heappush(state.waiting, (time.time() + verdict.delay, next(self._order), batch))
            return
        del state.attempts[batch.id]
        self.hooks.gave_up(batch, n, outcome.failure, verdict)
        if verdict.next is Next.FAIL and self.fail_fast and not state.stopping:
            self._stop(state)

    def _stop(self, state: _State) -> None:
        """fail_fast: cancel what runs, give up what waits or was never submitted."""
        state.stopping = True
        self.executor.cancel(list(state.running))
        cancelled = Verdict(Next.FAIL, "cancelled: fail_fast")
        never = [(b, state.attempts.get(b.id, 0)) for _, _, b in state.waiting]
        never += [(b, 0) for b in reversed(state.pending)]
        state.waiting.clear()
        state.pending.clear()
        for batch, n in never:
            self.hooks.gave_up(batch, n, Failure(None, cancelled=True), cancelled)
