"""The runner wires a run together: reconcile -> executor -> commit -> publish, emitting events.

What to do with each batch is ``reconcile``'s (pure); where tasks run is the
executor's; the work area renames; the sink publishes. The runner holds the
job's lock, drives the attempts (retries are ``retry.after_failure``'s verdicts)
and tells every listener what happened.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from functools import cached_property
from typing import TYPE_CHECKING, Any

from . import config
from .attempts import Attempts
from .batching import ByWindow
from .core import BadInputMode, Batch, BatchResult, Event, EventKind, Part, Plan, RunStatus
from .errors import RunFailedError, TooManyBadRows
from .executors.base import Executor
from .faults import crash_point
from .ledger import Ledger
from .listeners import Bus
from .monitor.result import RunResult, RunSummary
from .protocols import CommitsBatches, Positioned
from .publish import Publication, refuse_foreign_output
from .reconcile import Action, Decision, reconcile, select
from .redact import redact
from .retry import Failure, Next, RetryPolicy, Verdict
from .runspec import Runnable, RunOptions, batch_counts, new_run_id, short_error
from .tasks import BatchTask
from .workarea import WorkArea

if TYPE_CHECKING:
    from .compile.physical import PhysicalPlan

__all__ = ["run", "RunOptions", "RetryPolicy", "new_run_id"]

log = logging.getLogger(__name__)


def run(
    pipeline: Runnable,
    client: Any = None,
    *,
    executor: Executor | None = None,
    options: RunOptions | None = None,
) -> RunResult:
    """Run ``pipeline``: the plan minus the batches the ledger has committed.

    ``executor`` runs the tasks (default: a ``DaskExecutor`` on ``client``, or on
    what ``dbatch.connect`` finds or starts, made only when there is work; a new
    LocalCluster starts while the run plans).
    """
    options = options or RunOptions()
    plan = pipeline.plan()
    ledger = Ledger(pipeline.ledger_url())
    no_cluster = client is None and executor is None
    start = _early_start(pipeline, plan, ledger, options) if no_cluster else None
    try:
        run_id = options.run_id or new_run_id()
        ledger.acquire(pipeline.name, run_id)
    except BaseException:
        ledger.close()
        if start is not None:
            start.close()
        raise
    active = _Run(pipeline, plan, ledger, run_id, options, start or client, executor)
    try:
        active.execute()
    except Exception as error:
        active.abort(error)
        raise
    finally:
        active.close()
    result = active.summary.result()
    if options.raise_on_failure and result.status == RunStatus.FAILED:
        raise RunFailedError(result.message, result=result)
    return result


def _early_start(pipeline: Runnable, plan: Plan, ledger: Ledger, options: RunOptions) -> Any:
    """A LocalCluster starting while the run plans; None with a client or nothing to run."""
    from .cluster import LocalStart, has_active_client

    if has_active_client():
        return None
    committed = WorkArea(pipeline.work_area()).state(plan)
    decisions = reconcile(plan, ledger.batch_states(plan.job), committed, replay=options.replay)
    work = options.force or any(d.action is Action.RUN for d in decisions)
    return LocalStart() if work else None


class _Run:
    """One run in progress: its plan, lock, listeners, executor and work area."""

    def __init__(
        self,
        pipeline: Runnable,
        plan: Plan,
        ledger: Ledger,
        run_id: str,
        options: RunOptions,
        client: Any,
        executor: Executor | None,
    ):
        self.pipeline, self.plan, self.ledger = pipeline, plan, ledger
        # The whole plan, before a backfill narrows it: batches and bytes.
        self._planned = (len(plan), plan.total_bytes)
        self.run_id, self.options = run_id, options
        self.policy = options.retry or RetryPolicy()
        self.work = WorkArea(pipeline.work_area())
        self.client, self.executor, self._made_executor = client, executor, False
        self.summary = RunSummary(
            plan,
            run_id,
            pipeline.sink.location,
            work_area=str(self.work.root),
            window=pipeline.batching.freq if isinstance(pipeline.batching, ByWindow) else None,
        )
        self.bus = Bus([ledger, self.summary, *options.listeners])
        self._stack = ExitStack()
        self._started = self._finished = False
        self.relay: Any = None  # sends the events to the scheduler's dbatch page

    @cached_property
    def physical(self) -> PhysicalPlan:
        """The physical plan; ``_drive`` replaces it with one whose partials are decided."""
        return self.pipeline.physical()

    # -- the run ------------------------------------------------------------------

    def execute(self) -> None:
        refuse_foreign_output(self.plan.job, self.pipeline.sink)
        # The pipeline's source: the physical plan is made once it is known what runs.
        if isinstance(self.pipeline.source, Positioned):
            # Planned again under the lock, then kept: a later plan repeats these batches.
            self.plan = self.summary.plan = self.pipeline.plan()
            self.ledger.record_cut(self.plan.job, list(self.plan.batches))
            crash_point("planned")
        records = self.ledger.batch_states(self.plan.job)
        if self.options.select is not None:  # under the lock: what is committed cannot change
            self.plan = select(self.plan, self.options.select, records, self.work.state(self.plan))
            self.summary.plan = self.plan
        from .monitor.logs import LogListener
        from .monitor.progress import make_progress

        bar = make_progress(self.options.progress, self.plan)
        if bar is not None:
            self.bus.add(bar)
        self.bus.add(LogListener(self.plan))
        if config.get("dashboard.enabled", True):
            from .monitor.board.relay import Relay

            self.relay = Relay(self.plan)
            self.bus.add(self.relay)
        self.work.clean_stale_staging()
        self.emit(
            EventKind.RUN_STARTED,
            batches=len(self.plan),
            params=dict(self.options.params),
            replay=self.options.replay,
        )
        self._started = True
        todo = self._settle(records)
        self._acknowledge()  # what an earlier driver committed but did not live to acknowledge
        up_to_date = not todo and self._publication().up_to_date()
        needs_cluster = bool(todo) or (
            self.pipeline.aggregate is not None and self.summary.publishable and not up_to_date
        )
        if needs_cluster:
            # An elastic cluster grows before the plan is sent: the reduce needs a worker too.
            executor = self._connect(show_link=bar is not None)
            executor.demand(max(1, len(todo)))
            if todo:
                from .sizing import warn_unfit

                history = self.ledger.history(self.pipeline.name)
                warn_unfit(
                    self.pipeline.name, [d.batch for d in todo], history, executor.memory_limit
                )
        if todo:
            self._drive(todo)
        if up_to_date:
            self._publication().confirm()
        elif self.summary.failed == 0 and self.summary.publishable:
            info = self._publication().publish()
            self.emit(EventKind.PUBLISHED, **info)
        status = self.summary.status()
        self._finished = True
        self.emit(
            EventKind.FINISHED,
            **self.summary.finish_data(status),
            dashboard=self.summary.dashboard,
        )

    def abort(self, error: Exception) -> None:
        """A started run that raised ``error`` ends ``failed``, with the error as its message.

        The ledger, the alerts and the logs hear of it as of any failed run, so the
        run does not stay ``running`` in ``dbatch history``.
        """
        if not self._started or self._finished:
            return
        self._finished = True
        message = f"{type(error).__name__}: {short_error(error)}"
        data = {**self.summary.finish_data(RunStatus.FAILED), "message": message}
        try:
            self.emit(EventKind.FINISHED, **data, dashboard=self.summary.dashboard)
        except Exception:  # noqa: BLE001 - the error that stopped the run is the one to raise
            log.exception("run %s of %r: recording its failure failed", self.run_id, self.plan.job)

    def close(self) -> None:
        self._stack.close()
        self.bus.end()
        self.work.drop_staging(self.run_id)
        self.ledger.release(self.pipeline.name, self.run_id)
        self.ledger.close()
        from .cluster import LocalStart

        if isinstance(self.client, LocalStart):  # started early; closed here if never needed
            self.client.close()
        if self.executor is not None:
            self.executor.finish()
            if self._made_executor:
                self.executor.close()

    def emit(self, kind: EventKind, batch_id: str | None = None, **data: Any) -> None:
        self.bus.emit(Event(kind, self.run_id, self.pipeline.name, batch_id, data))

    def _connect(self, show_link: bool) -> Executor:
        from .executors.dask import DaskExecutor

        if self.executor is None:
            from .cluster import LocalStart, connect, has_active_client

            started = isinstance(self.client, LocalStart)  # a cluster started for this run
            owned = started or (self.client is None and not has_active_client())
            client = connect(self.client, show_link=show_link)
            self.executor = DaskExecutor(client, owned=owned)
            self._made_executor = True
        if self.relay is not None:  # an executor without a scheduler: the relay keeps nothing
            self.relay.attach(getattr(self.executor, "client", None))
        self.summary.dashboard = self.executor.dashboard
        self.bus.dashboard(self.executor.dashboard)
        self._stack.enter_context(self.executor.span(f"dbatch {self.pipeline.name} {self.run_id}"))
        return self.executor

    # -- plan minus ledger ----------------------------------------------------------

    def _settle(self, records: Mapping[str, Any]) -> list[Decision]:
        """Carry out every decision but ``run``; return the batches to run."""
        rerun: set[str] = set()
        if self.options.force:
            wanted = self.options.select
            rerun = {b.id for b in self.plan if wanted is None or wanted(b)}
        decisions = reconcile(
            self.plan,
            records,
            self.work.state(self.plan),
            replay=self.options.replay,
            rerun=rerun,
        )
        todo = []
        for d in decisions:
            if d.action is Action.RUN:
                todo.append(d)
            elif d.action is Action.SKIP:
                result = self._ensure_sink_commit(d.batch)
                self.emit(
                    EventKind.BATCH_SKIPPED, d.batch.id, **batch_counts(d.batch, result, d.attempts)
                )
            elif d.action is Action.ADOPT:
                # Promoted by an earlier driver that died before recording it: adopt, don't redo.
                result = self._ensure_sink_commit(d.batch)
                data = batch_counts(d.batch, result, d.attempts or 1)
                self.emit(EventKind.BATCH_COMMITTED, d.batch.id, **data, recovered=True)
            else:
                self.emit(
                    EventKind.BATCH_QUARANTINED,
                    d.batch.id,
                    fingerprint=d.batch.fingerprint,
                    attempt=d.attempts,
                    units=len(d.batch.units),
                    error_class="Quarantined",
                    error_message="quarantined by an earlier run; `dbatch replay` tries it again",
                )
        return todo

    def _ensure_sink_commit(self, batch: Batch) -> BatchResult:
        result = self.work.result(batch)
        sink = self.pipeline.sink
        if isinstance(sink, CommitsBatches) and not sink.find_commit(batch.id, batch.fingerprint):
            part = Part(batch.id, self.work.batch_dir(batch), result.rows_out)
            sink.commit_batch(batch.id, batch.fingerprint, part)
        return result

    # -- attempts -------------------------------------------------------------------

    def _drive(self, todo: Sequence[Decision]) -> None:
        """Submit every batch, retry what is worth it, commit what finishes."""
        executor = self.executor
        assert executor is not None
        buckets = self._buckets()
        staging = str(self.work.staging(self.run_id))
        self.work.staging(self.run_id).mkdir(parents=True, exist_ok=True)
        executor.start(self.physical, self.physical.shared_objects())
        # Steps checked, partials decided on the plan's first batch (a resume decides alike).
        key, first = (f"dbatch-{self.plan.job}-preflight", self.run_id), self.plan.batches[0]
        token = self.pipeline.definition_token  # the same definition and batch: checked once
        self.physical = executor.preflight(key, self.physical, first, token)

        def make_task(batch: Batch, attempt: int) -> BatchTask:
            return BatchTask(batch, self.run_id, staging, attempt, buckets, self.options.fault)

        attempts = Attempts(
            executor,
            make_task,
            self,
            self.policy,
            fail_fast=self.physical.mode == BadInputMode.FAIL_FAST,
        )
        attempts.run([d.batch for d in todo])

    # the AttemptHooks the attempts call back

    def started(self, attempts: Sequence[tuple[Batch, int]]) -> None:
        data = [
            (b.id, dict(fingerprint=b.fingerprint, attempt=n, units=len(b.units), bytes=b.size))
            for b, n in attempts
        ]
        # Submitted together: the ledger writes them in one transaction.
        job, kind = self.pipeline.name, EventKind.BATCH_STARTED
        self.bus.emit_all([Event(kind, self.run_id, job, i, d) for i, d in data])

    def succeeded(self, batch: Batch, result: BatchResult, attempt: int) -> None:
        self._commit(batch, result, attempt)

    def retrying(self, batch: Batch, attempt: int, failure: Failure, verdict: Verdict) -> None:
        message = verdict.reason if failure.cancelled else short_error(failure.error)
        self.emit(
            EventKind.BATCH_RETRY,
            batch.id,
            attempt=attempt,
            delay=verdict.delay,
            error_class=type(failure.error).__name__,
            error_message=message,
        )

    def gave_up(self, batch: Batch, attempt: int, failure: Failure, verdict: Verdict) -> None:
        quarantined = verdict.next is Next.QUARANTINE
        kind = EventKind.BATCH_QUARANTINED if quarantined else EventKind.BATCH_FAILED
        error = failure.error
        data: dict[str, Any] = {
            "fingerprint": batch.fingerprint,
            "attempt": attempt,
            "units": len(batch.units),
            "error_class": type(error).__name__ if error is not None else "Cancelled",
            "error_message": f"{verdict.reason}: {short_error(error)}" if error else verdict.reason,
        }
        if isinstance(error, TooManyBadRows):
            kept = self.work.reject(batch, error.staged)
            data.update(
                rows_in=error.rows_in,
                rows_quarantined=error.rows_quarantined,
                quarantine=str(kept / "_quarantine.parquet"),
                error_message=f"{error}: the rows are kept in {kept / '_quarantine.parquet'}",
            )
        elif not quarantined and failure.traceback:
            data["traceback"] = redact(failure.traceback[-4000:])
        self.emit(kind, batch.id, **data)

    def alive(self) -> None:
        self.ledger.heartbeat(self.pipeline.name, self.run_id)

    def _commit(self, batch: Batch, result: BatchResult, attempt: int) -> None:
        """Promote the staged batch with one rename, then record it (in that order)."""
        target = self.work.promote(batch, result.staging)
        crash_point("promoted")
        sink = self.pipeline.sink
        if isinstance(sink, CommitsBatches):
            sink.commit_batch(batch.id, batch.fingerprint, Part(batch.id, target, result.rows_out))
        self.emit(EventKind.BATCH_COMMITTED, batch.id, **batch_counts(batch, result, attempt))
        crash_point("recorded")
        self._acknowledge()
        crash_point("acknowledged")

    def _acknowledge(self) -> None:
        """Move the broker's position over what the ledger holds as done (a stream source)."""
        source = self.pipeline.source
        if not isinstance(source, Positioned):
            return
        units: list[Any] = []
        for b in self.plan:  # the done prefix: never past a batch that is not committed yet
            if self.summary.state.get(b.id) not in ("committed", "quarantined"):
                break
            units.extend(b.units)
        try:
            source.acknowledge(units)
        except Exception as e:  # noqa: BLE001 - the ledger holds the position; the next run retries
            log.warning("dbatch: %s: could not acknowledge on the broker (%s)", self.plan.job, e)

    def _buckets(self) -> int:
        aggregate = self.pipeline.aggregate
        return 1 if aggregate is None else self.work.bucket_count(aggregate.buckets, *self._planned)

    def _publication(self) -> Publication:
        return Publication(
            self.pipeline.name,
            self.run_id,
            self.plan,
            self.summary,
            self.work,
            self.physical,
            self.executor,
            self._buckets,
        )
