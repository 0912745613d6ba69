"""The Dask executor: batch tasks as futures on a ``distributed`` cluster.

The shared objects (lookups, models) are scattered to every worker once, straight
from the client (``direct=True``), and scattered again if the workers holding them
die; so is a large physical plan (a small one, the usual case, travels inside each
task: no broadcast to wait for). A task whose inputs were lost with a worker is
reported as cancelled, one that killed its worker on every attempt Dask allows as
killed. Everything else (retries, commits, events) is the runner's.
"""

from __future__ import annotations

import time
import traceback
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import CancelledError
from contextlib import contextmanager
from typing import Any

import cloudpickle
from distributed import Client, Future

from ..compile.physical import PhysicalPlan
from ..retry import Failure
from ..tasks import BatchTask, process_batch, reduce_bucket
from ..workarea import staged_results
from .base import Executor, Handle, Outcome
from .grouping import BatchError, Grouping, run_group
from .shared import SharedOnWorkers
from .workers import prepare_workers

__all__ = ["DaskExecutor"]


#: Batches whose tasks a run keeps referenced (the newest), for the dashboard.
KEEP_FINISHED = 1000
#: A plan that pickles to at most this many bytes goes inside each task (models and
#: lookups are shared objects, not in it); a larger one is scattered to every worker once.
INLINE_PLAN = 64 * 1024
#: How old the cluster's thread count may be when the run uses it.
_THREADS_FRESH = 5.0
#: How long ``DaskExecutor.wait`` looks at the futures before waiting on the event loop.
_LOOK_FOR = 0.02


class _Submitted(Handle):
    """One batch's attempt: its future, and its place in the future's group (None: alone)."""

    def __init__(self, task: BatchTask, future: Future, index: int | None = None):
        self.task = task
        self.future = future
        self.index = index


class DaskExecutor(Executor):
    """Runs a run's tasks on the cluster of ``client``.

    ``owned``: the client (and its LocalCluster, if ``connect`` started one) was
    made for this run and is closed with the executor.
    """

    def __init__(self, client: Client, *, owned: bool = False):
        self.client, self.owned = client, owned
        self._plan: PhysicalPlan | None = None
        self._plan_sent: PhysicalPlan | Future | None = None  # what tasks get: _plan_arg
        self._shared_objects: list[Any] = []
        self._shared: dict[str, Future] = {}
        # The tasks of the newest batches stay referenced until the run ends, so the
        # dashboard's Progress panel counts them; older ones are let go, or a run of 10^4
        # batches would keep 10^4 results on the workers and as many tasks on the scheduler.
        self._kept: deque[tuple[Future, int]] = deque()  # (task, its batches), newest last
        self._kept_batches = 0
        self._threads, self._threads_at, self._workers = 0, -1e9, frozenset[str]()
        self._grouping = Grouping()
        from ..cluster import dashboard_link

        self.dashboard = dashboard_link(client)

    @property
    def _job(self) -> str:
        return self._plan.job if self._plan is not None else "job"

    @property
    def threads(self) -> int:
        """Worker threads of the cluster, asked of the scheduler at most every 5 seconds.

        The run asks it at every turn (the in-flight cap follows a cluster that grows).
        """
        if time.monotonic() - self._threads_at > _THREADS_FRESH:
            self._ask_threads()
        return max(1, self._threads)

    def _ask_threads(self) -> int:
        nthreads = self.client.nthreads()
        self._threads, self._threads_at = sum(nthreads.values()), time.monotonic()
        self._workers = frozenset(nthreads)
        return self._threads

    @property
    def in_flight(self) -> int:
        """As many tasks in flight as for batches alone, whatever the batches a task carries."""
        return super().in_flight * self._grouping.size()

    @property
    def memory_limit(self) -> int | None:
        limits = [
            int(w.get("memory_limit") or 0)
            for w in self.client.scheduler_info()["workers"].values()
        ]
        limits = [m for m in limits if m > 0]
        return min(limits) if limits else None

    def demand(self, batches_left: int) -> None:
        from ..cluster import scaler_of

        scaler = scaler_of(self.client)
        if scaler is not None:
            scaler.demand(batches_left)

    def _await_workers(self) -> None:
        """Wait for a first worker (a cluster started at zero workers is getting some).

        Workers seen in the last 5 seconds count (the reduce follows the last batch).
        """
        fresh = time.monotonic() - self._threads_at <= _THREADS_FRESH
        if (fresh and self._threads) or self._ask_threads():
            return
        from .. import config

        limit = config.parse_timedelta(config.get("cluster.worker-wait"))
        try:
            self.client.wait_for_workers(1, timeout=limit)
        except TimeoutError:
            where = getattr(self.client.scheduler, "address", "?")
            raise TimeoutError(
                f"no worker joined the cluster at {where} in {limit:g}s; "
                "look at the cluster's job queue or logs (a batch scheduler may hold the jobs), "
                "or raise dbatch.cluster.worker-wait"
            ) from None

    def start(self, plan: PhysicalPlan, shared: Sequence[Any]) -> None:
        self._await_workers()
        # Only a speed-up: a worker that dies meanwhile does it in its first task.
        prepare_workers(self.client, plan, self._workers)
        self._plan = plan
        self._shared_objects = list(shared)
        self._shared = {
            obj.token: self._scatter(obj.obj, f"shared-{obj.token}") for obj in self._shared_objects
        }
        for token, future in self._shared.items():
            self._variable(token).set(future)
        self._release_plan()  # sent with the first tasks, once preflight decided it

    def shared(self) -> SharedOnWorkers:
        return SharedOnWorkers(
            {t: (str(f.key), self._variable(t).name) for t, f in self._shared.items()}
        )

    def replan(self, plan: PhysicalPlan) -> None:
        self._release_plan()
        self._plan = plan

    @contextmanager
    def span(self, name: str) -> Iterator[None]:
        """The run's tasks as one span of Dask's Spans view."""
        from distributed import span

        with span(name):
            yield

    def _variable(self, token: str) -> Any:
        """Where a worker that missed the broadcast finds a shared object (by name)."""
        from distributed import Variable

        return Variable(f"dbatch-shared-{id(self):x}-{token}", client=self.client)

    def _scatter(self, obj: Any, what: str) -> Future:
        """Broadcast ``obj`` to every worker; a worker dying during the broadcast is retried.

        Keyed ``dbatch-<job>-<what>``, so the dashboard shows a model or a lookup as
        dbatch's, not as a task group named after its Python type.
        """
        assert self._plan is not None or what == "plan"
        job = self._job
        for attempt in range(1, 4):
            key = f"dbatch-{job}-{what}-{uuid.uuid4().hex[:12]}"
            try:
                scattered = self.client.scatter({key: obj}, broadcast=True, direct=True)
                return scattered[key]
            except OSError:  # TimeoutError("No valid workers found") too: all died at once
                if attempt == 3:
                    raise
                time.sleep(0.2 * attempt)
                self._await_a_worker()
        raise AssertionError("unreachable")

    def _await_a_worker(self, timeout: float = 60.0) -> None:
        """Wait until a worker is there again (nannies restart killed workers)."""
        try:
            self.client.wait_for_workers(1, timeout=timeout)
        except (OSError, TimeoutError):
            pass  # the next attempt reports it

    def _plan_arg(self) -> PhysicalPlan | Future:
        """The plan as the tasks get it: itself when small, else scattered (again if lost)."""
        assert self._plan is not None
        if self._plan_sent is None:
            small = len(cloudpickle.dumps(self._plan)) <= INLINE_PLAN
            self._plan_sent = self._plan if small else self._scatter(self._plan, "plan")
        elif isinstance(self._plan_sent, Future) and self._plan_sent.status != "finished":
            self._plan_sent = self._scatter(self._plan, "plan")  # lost with its workers
        return self._plan_sent

    def _release_plan(self) -> None:
        if isinstance(self._plan_sent, Future):
            self._plan_sent.release()
        self._plan_sent = None

    def _rescatter_lost(self) -> None:
        """Scattered data dies with the workers holding it, and Dask cannot recompute it."""
        for obj in self._shared_objects:
            if self._shared[obj.token].status != "finished":
                self._shared[obj.token] = self._scatter(obj.obj, f"shared-{obj.token}")
                self._variable(obj.token).set(self._shared[obj.token])

    def submit(self, task: BatchTask) -> Handle:
        return self.submit_many([task])[0]

    def submit_many(self, tasks: Sequence[BatchTask]) -> list[Handle]:
        """All ``tasks`` in one message to the scheduler (``client.map``), short ones grouped.

        Batches that end quickly go ``grouping.GROUP`` to a Dask task (see
        ``executors.grouping``); the others, and retries (sent alone), one per task.
        """
        if not tasks:
            return []
        self._rescatter_lost()
        plan, shared = self._plan_arg(), self.shared()
        size = self._grouping.size()
        groups = [list(tasks[i : i + size]) for i in range(0, len(tasks), size)]
        alone = [g for g in groups if len(g) == 1]
        together = [g for g in groups if len(g) > 1]
        singles = self._map(process_batch, plan, [g[0] for g in alone], alone, shared)
        grouped = self._map(run_group, plan, together, together, shared)
        handles = {id(g[0]): _Submitted(g[0], f) for g, f in zip(alone, singles, strict=True)}
        for group, future in zip(together, grouped, strict=True):
            handles.update({id(t): _Submitted(t, future, i) for i, t in enumerate(group)})
        return [handles[id(t)] for t in tasks]

    def _map(
        self,
        fn: Callable[..., Any],
        plan: PhysicalPlan | Future,
        args: Sequence[Any],
        groups: list[list[BatchTask]],
        shared: Any,
    ) -> list[Future]:
        """``fn(plan, arg, shared)`` for each arg, keyed by its group's first batch attempt."""
        if not args:
            return []
        futures = self.client.map(
            fn,
            [plan] * len(args),
            args,
            [shared] * len(args),
            key=[self._key(g[0]) for g in groups],
            pure=False,
            retries=0,
        )
        self._keep(futures, [len(g) for g in groups])
        return futures

    def _keep(self, futures: Sequence[Future], batches: Sequence[int]) -> None:
        """Keep ``futures`` referenced, letting go of the oldest beyond ``KEEP_FINISHED`` batches."""
        self._kept.extend(zip(futures, batches, strict=True))
        self._kept_batches += sum(batches)
        while self._kept_batches > KEEP_FINISHED and len(self._kept) > 1:
            self._kept_batches -= self._kept.popleft()[1]

    def _key(self, task: BatchTask) -> tuple[str, str, int, int]:
        return (f"dbatch-{self._job}-batch", task.run_id, task.batch.index, task.attempt)

    def outcomes(self, handles: Sequence[Handle]) -> list[Outcome]:
        """Results of the finished ones read from the work area; failures one by one.

        A finished task's result is the ``_result.json`` it wrote next to its staged
        output (the driver renames that folder, so it sees the work area anyway): no
        round trip to the worker. What is not found there is fetched from the
        workers, the finished ones in one round trip.
        """
        finished = [
            h for h in handles if isinstance(h, _Submitted) and h.future.status == "finished"
        ]
        fetched: dict[int, Outcome] = {}
        by_root: dict[str, list[_Submitted]] = {}
        for h in finished:
            by_root.setdefault(h.task.staging_root, []).append(h)
        for root, group in by_root.items():
            staged = staged_results(root, [(h.task.batch.id, h.task.attempt) for h in group])
            for h in group:
                result = staged.get((h.task.batch.id, h.task.attempt))
                if result is not None:
                    fetched[id(h)] = Outcome(result=result)
        rest = [h for h in finished if id(h) not in fetched]
        unique = list(dict.fromkeys(h.future for h in rest))  # a group's batches share one
        if len(unique) > 1:
            try:
                values = dict(zip(unique, self.client.gather(unique), strict=True))
            except Exception:  # noqa: BLE001 - lost meanwhile: each is asked on its own below
                values = {}
            fetched.update({id(h): _read(h, values[h.future]) for h in rest if h.future in values})
        outcomes = [fetched.get(id(h)) or self.outcome(h) for h in handles]
        for outcome in outcomes:
            if outcome.result is not None:
                self._grouping.saw(outcome.result)
        return outcomes

    def wait(self, handles: Sequence[Handle], timeout: float) -> list[Handle]:
        """The ended ones: looked up every millisecond for ``_LOOK_FOR``, then waited for.

        The client's thread keeps the futures' state, so a look costs microseconds;
        ``distributed.wait`` costs a round trip through the client's event loop (about
        0.5 ms of driver CPU), once per batch when batches are small.
        """
        from distributed import wait

        by_future: dict[Future, list[Handle]] = {}
        for h in handles:
            if isinstance(h, _Submitted):
                by_future.setdefault(h.future, []).append(h)
        deadline = time.monotonic() + timeout
        until = min(deadline, time.monotonic() + _LOOK_FOR)
        while True:
            ended = [f for f in by_future if f.done()]
            if ended or time.monotonic() >= until:
                break
            time.sleep(0.001)
        left = deadline - time.monotonic()
        if not ended and left > 0:
            try:
                # `wait` waits on the default client's loop; make that ours (a notebook may have several).
                with self.client.as_current():
                    done, _ = wait(list(by_future), timeout=left, return_when="FIRST_COMPLETED")
            except (TimeoutError, CancelledError):  # cancelled: reported by outcome()
                done = {f for f in by_future if f.done()}
            ended = list(done)
        return [h for f in ended for h in by_future[f]]

    def outcome(self, handle: Handle) -> Outcome:
        from distributed.scheduler import KilledWorker

        assert isinstance(handle, _Submitted)
        future = handle.future
        try:
            if future.status == "finished":
                return _read(handle, future.result())
            error = future.exception() or CancelledError(f"task {future.key} was {future.status}")
        except CancelledError as cancelled:  # its inputs were lost with a worker
            error = cancelled
        tb = "".join(traceback.format_exception(error))
        killed = isinstance(error, KilledWorker)
        # A group's task that killed its worker every time: which of its batches did it is
        # not known, so each is retried as a lost one, alone, where the culprit shows.
        in_group = killed and handle.index is not None
        return Outcome(
            failure=Failure(
                error=error,
                traceback=tb,
                cancelled=isinstance(error, CancelledError) or in_group,
                killed=killed and not in_group,
            )
        )

    def cancel(self, handles: Sequence[Handle]) -> None:
        for future in dict.fromkeys(h.future for h in handles if isinstance(h, _Submitted)):
            future.cancel()

    def call(self, key: Any, fn: Callable[..., Any], *args: Any) -> Callable[[], Any]:
        future = self.client.submit(fn, *args, key=key, pure=False)
        return future.result

    def reduce(
        self, plan: PhysicalPlan, args: Sequence[tuple[Any, ...]], keys: Sequence[Any]
    ) -> list[Any]:
        self._await_workers()
        futures = [
            self.client.submit(reduce_bucket, plan, *a, key=key, pure=False)
            for a, key in zip(args, keys, strict=True)
        ]
        self._keep(futures, [1] * len(futures))
        return self.client.gather(futures)

    def finish(self) -> None:
        for kept, _ in self._kept:
            kept.release()
        self._kept.clear()
        self._kept_batches = 0
        for token, f in self._shared.items():
            self._variable(token).delete()
            f.release()
        self._release_plan()
        self._shared = {}

    def close(self) -> None:
        if not self.owned:
            return
        from ..cluster import close

        close(self.client)


def _read(handle: _Submitted, value: Any) -> Outcome:
    """The outcome of ``handle`` from its finished future's value (a group's: a list)."""
    if handle.index is not None:
        value = value[handle.index]
    if isinstance(value, BatchError):
        return Outcome(failure=Failure(error=value.error, traceback=value.traceback))
    return Outcome(result=value)
