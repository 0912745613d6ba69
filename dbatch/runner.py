"""The runner: plan minus ledger, submit batches, retry, commit once, reduce, publish, report."""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import time
import traceback
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import config
from .core import Batch, BatchResult, Event, Plan
from .errors import RunFailedError, is_transient
from .execute import gather_quarantine, process_batch, read_result, reduce_bucket, warm_worker
from .faults import crash_point as _crash_point
from .ledger import Ledger
from .monitor.result import RunResult, RunSummary
from .pipeline import Pipeline
from .redact import redact
from .sinks.base import Part

__all__ = ["run", "RetryPolicy"]

log = logging.getLogger("dbatch")


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter, for transient failures only."""

    attempts: int = field(default_factory=lambda: int(config.get("retry.attempts")))
    base: float = field(default_factory=lambda: float(config.get("retry.backoff-base")))
    cap: float = field(default_factory=lambda: float(config.get("retry.backoff-max")))

    def delay(self, attempt: int, exc: BaseException | None = None) -> float:
        hinted = getattr(exc, "retry_after", None)
        if isinstance(hinted, (int, float)) and hinted > 0:
            return min(float(hinted), self.cap)
        return random.uniform(0, min(self.cap, self.base * 2 ** (attempt - 1)))


def new_run_id() -> str:
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + "-" + uuid.uuid4().hex[:6]


class _Work:
    """Where a job keeps staging and committed batches."""

    def __init__(self, pipeline: Pipeline, run_id: str):
        self.root = pipeline.work_area()
        self.staging = self.root / "staging" / run_id
        self.committed = self.root / "batches"

    def batch_dir(self, batch: Batch) -> Path:
        return self.committed / f"{batch.id}-{batch.fingerprint}"

    def clean_stale_staging(self) -> None:
        """Staging of earlier runs that died; safe because we hold the job's lock."""
        parent = self.staging.parent
        if parent.exists():
            for p in parent.iterdir():
                shutil.rmtree(p, ignore_errors=True)


def run(
    pipeline: Pipeline,
    client: Any = None,
    *,
    run_id: str | None = None,
    progress: bool | str | None = None,
    listeners: Sequence[Callable[[Event], None]] = (),
    replay: bool = False,
    retry: RetryPolicy | None = None,
    fault: Any = None,
    raise_on_failure: bool = False,
    params: dict | None = None,
    select: Callable[[Batch], bool] | None = None,
    force: bool = False,
) -> RunResult:
    """Run ``pipeline``: the plan minus the batches the ledger has committed.

    Parameters
    ----------
    client
        Anything ``dbatch.connect`` accepts; default: the active client or a new
        LocalCluster (closed again at the end).
    run_id
        Reuse an unfinished run's id (``dbatch resume`` does this).
    progress
        ``True``/``"auto"`` for a widget in Jupyter or a bar in a terminal, ``False`` for none.
    listeners
        Callables that receive every run ``Event``.
    replay
        Also re-run committed batches that have quarantined rows or files, after a fix.
    retry
        The retry policy for transient failures.
    fault
        A callable ``(batch, attempt)`` run before each batch on the worker; for fault tests.
    raise_on_failure
        Raise ``RunFailedError`` instead of returning a failed result.
    select
        Run only the batches it returns True for (a backfill's time range); batches
        already committed stay in the published output, the others wait.
    force
        Re-run the selected batches (all without ``select``) even when committed.

    Returns
    -------
    RunResult
        Counts per batch and for the run, the output location and the status.
    """
    retry = retry or RetryPolicy()
    plan = pipeline.plan()
    ledger = Ledger(pipeline.ledger_url())
    run_id = run_id or new_run_id()
    work = _Work(pipeline, run_id)
    ledger.acquire(pipeline.name, run_id)
    owned_client = None
    bar = None
    try:
        if select is not None:  # under the lock: what is committed cannot change meanwhile
            plan = _selected(plan, select, ledger, work)
        rerun = {b.id for b in plan if select is None or select(b)} if force else set()
        summary = RunSummary(plan, run_id, pipeline.sink.location)
        bus = _Bus([ledger.record, summary, *listeners])
        from .monitor.progress import make_progress

        bar = make_progress(progress, plan)
        if bar is not None:
            bus.listeners.append(bar)
        work.clean_stale_staging()
        bus.emit(
            Event(
                "run_started",
                run_id,
                pipeline.name,
                data={"batches": len(plan), "params": params or {}, "replay": replay},
            )
        )
        todo = _resolve_done(pipeline, plan, ledger, work, bus, run_id, replay, rerun)
        up_to_date = not todo and _already_published(pipeline, plan, summary)
        needs_cluster = bool(todo) or (
            pipeline.aggregate is not None and summary.publishable and not up_to_date
        )
        if needs_cluster:
            from .cluster import connect, dashboard_link

            had_client = client is not None or _has_active_client()
            client = connect(client, show_link=bar is not None)
            if not had_client:
                owned_client = client
            summary.dashboard = dashboard_link(client)
            if bar is not None and hasattr(bar, "set_dashboard"):
                bar.set_dashboard(summary.dashboard)
        if todo:
            _execute(pipeline, todo, client, work, bus, run_id, retry, fault, ledger)
        if up_to_date:
            summary.published = True
            summary.output_rows = _published_rows(pipeline)
            # The driver may have died between publishing and gathering the quarantine.
            committed = [b for b in plan if summary.state.get(b.id) == "committed"]
            dirs = [work.batch_dir(b) for b in committed]
            _Quarantine(pipeline, committed, dirs, work, client).put_in_place()
        elif summary.failed == 0 and summary.publishable:
            _publish(pipeline, plan, client, work, bus, run_id, summary)
        status = summary.status()
        finish = {**summary.finish_data(status), "dashboard": summary.dashboard}
        bus.emit(Event("finished", run_id, pipeline.name, data=finish))
    finally:
        if bar is not None and hasattr(bar, "close"):
            bar.close()  # also when the run raised, so the terminal is left clean
        shutil.rmtree(work.staging, ignore_errors=True)
        ledger.release(pipeline.name, run_id)
        ledger.close()
        if owned_client is not None:
            cluster = getattr(owned_client, "cluster", None)
            owned_client.close()
            if cluster is not None and getattr(owned_client, "_dbatch_owns_cluster", False):
                cluster.close()
    result = summary.result()
    if raise_on_failure and result.status == "failed":
        raise RunFailedError(result.message, result=result)
    return result


def _inputs(plan: Plan, summary: RunSummary) -> list[list[str]]:
    return [[b.id, b.fingerprint] for b in plan if summary.state.get(b.id) == "committed"]


def _already_published(pipeline, plan: Plan, summary: RunSummary) -> bool:
    """Whether the sink's current output was published from exactly these committed batches."""
    current = getattr(pipeline.sink, "current_manifest", None)
    manifest = current() if callable(current) else None
    return bool(manifest) and manifest.get("inputs") == _inputs(plan, summary)


def _published_rows(pipeline) -> int | None:
    current = getattr(pipeline.sink, "current_manifest", None)
    manifest = current() if callable(current) else None
    return manifest.get("output_rows") if manifest else None


def _has_active_client() -> bool:
    try:
        from distributed import get_client

        get_client()
        return True
    except (ValueError, ImportError):
        return False


class _Bus:
    def __init__(self, listeners):
        self.listeners = list(listeners)

    def emit(self, event: Event) -> None:
        for listener in self.listeners:
            listener(event)


def _selected(plan: Plan, select, ledger: Ledger, work: _Work) -> Plan:
    """The selected batches plus those already done, so publishing keeps the rest of the output."""
    records = ledger.batch_states(plan.job)

    def done(b: Batch) -> bool:
        rec = records.get(b.id)
        settled = (
            rec is not None and rec.state == "quarantined" and rec.fingerprint == b.fingerprint
        )
        return settled or (work.batch_dir(b) / "_result.json").exists()

    kept = tuple(b for b in plan if select(b) or done(b))
    return Plan(job=plan.job, batches=kept, source=plan.source, sink=plan.sink)


def _resolve_done(
    pipeline, plan: Plan, ledger: Ledger, work: _Work, bus, run_id, replay, rerun=frozenset()
) -> list[Batch]:
    """Plan minus ledger: skip recorded commits, adopt unrecorded ones, return the rest."""
    records = ledger.batch_states(pipeline.name)
    todo = []
    for batch in plan:
        rec = records.get(batch.id)
        directory = work.batch_dir(batch)
        committed_here = (directory / "_result.json").exists()
        if batch.id in rerun:
            todo.append(batch)
            continue
        if replay and committed_here and _has_quarantine(directory):
            todo.append(batch)
            continue
        if (
            rec
            and rec.state == "committed"
            and rec.fingerprint == batch.fingerprint
            and committed_here
        ):
            stats = read_result(directory)
            _ensure_batch_commit(pipeline, batch, directory, stats)
            bus.emit(
                Event(
                    "batch_skipped",
                    run_id,
                    pipeline.name,
                    batch.id,
                    _event_data(batch, stats, rec.attempts),
                )
            )
            continue
        if (
            rec
            and rec.state == "quarantined"
            and rec.fingerprint == batch.fingerprint
            and not replay
        ):
            bus.emit(
                Event(
                    "batch_quarantined",
                    run_id,
                    pipeline.name,
                    batch.id,
                    {
                        "fingerprint": batch.fingerprint,
                        "attempt": rec.attempts,
                        "units": len(batch.units),
                        "error_class": "Quarantined",
                        "error_message": "quarantined by an earlier run; "
                        "`dbatch replay` tries it again",
                    },
                )
            )
            continue
        if committed_here:
            # Promoted by an earlier driver that died before recording it: adopt, don't redo.
            stats = read_result(directory)
            _ensure_batch_commit(pipeline, batch, directory, stats)
            data = _event_data(batch, stats, rec.attempts if rec else 1)
            data["recovered"] = True
            bus.emit(Event("batch_committed", run_id, pipeline.name, batch.id, data))
            continue
        todo.append(batch)
    return todo


def _has_quarantine(directory: Path) -> bool:
    stats = read_result(directory)
    return bool(stats.rows_quarantined or stats.files_quarantined)


def _ensure_batch_commit(pipeline, batch: Batch, directory: Path, stats: BatchResult) -> None:
    if not pipeline.sink.find_commit(batch.id, batch.fingerprint):
        pipeline.sink.commit_batch(
            batch.id, batch.fingerprint, Part(batch.id, directory, stats.rows_out)
        )


def _event_data(batch: Batch, r: BatchResult, attempt: int) -> dict[str, Any]:
    return {
        "fingerprint": batch.fingerprint,
        "attempt": attempt,
        "units": len(batch.units),
        "rows_in": r.rows_in,
        "rows_out": r.rows_out,
        "rows_filtered": r.rows_filtered,
        "rows_quarantined": r.rows_quarantined,
        "files_quarantined": len(r.files_quarantined),
        "quarantined_files": [f.__dict__ for f in r.files_quarantined],
        "duration": r.duration,
        "checksum": r.checksum,
        "worker": r.worker,
    }


def _buckets(pipeline: Pipeline, client, work: _Work) -> int:
    """Bucket count for the aggregate: fixed per job once chosen, so resumed partials agree."""
    if pipeline.aggregate is None:
        return 1
    if pipeline.aggregate.buckets:
        return pipeline.aggregate.buckets
    marker = work.root / "_buckets.json"
    if marker.exists():
        return int(json.loads(marker.read_text())["buckets"])
    # Four per worker thread: each reduce task holds a quarter of a thread's share of
    # the groups, so the peak memory is lower (as fast in the reference benchmark),
    # and a straggler bucket leaves the other threads less idle.
    threads = sum(client.nthreads().values()) if client is not None else 1
    n = max(1, 4 * threads)
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({"buckets": n}))
    return n


def _warm(client) -> None:
    """Import the engines on every worker once, not in the first task."""

    # Only a speed-up: a worker that dies or restarts meanwhile imports them in its first task.
    client.run(warm_worker, on_error="ignore")


def _scatter(client, obj: Any):
    """Broadcast ``obj`` to every worker; a worker dying during the broadcast is retried.

    ``direct=True``: the client hands the object to a worker itself and workers copy it
    among themselves, so a large model or lookup never passes through the scheduler.
    """
    for attempt in range(1, 4):
        try:
            [future] = client.scatter([obj], broadcast=True, hash=False, direct=True)
            return future
        except OSError:
            if attempt == 3:
                raise
            time.sleep(0.2 * attempt)
    raise AssertionError("unreachable")


def _execute(
    pipeline, todo, client, work: _Work, bus, run_id, retry: RetryPolicy, fault, ledger
) -> None:
    from concurrent.futures import CancelledError

    from distributed import wait
    from distributed.scheduler import KilledWorker

    run_pipeline = pipeline.replace(buckets_for_run=_buckets(pipeline, client, work))
    work.staging.mkdir(parents=True, exist_ok=True)
    _warm(client)
    shared = {obj.token: _scatter(client, obj.obj) for obj in run_pipeline.shared_objects()}
    pipeline_future = _scatter(client, run_pipeline)

    def rescatter_lost() -> None:
        """Scattered data dies with the workers holding it and Dask cannot recompute it."""
        nonlocal pipeline_future
        if pipeline_future.status != "finished":
            pipeline_future = _scatter(client, run_pipeline)
        for obj in run_pipeline.shared_objects():
            if shared[obj.token].status != "finished":
                shared[obj.token] = _scatter(client, obj.obj)

    attempts: dict[str, int] = {}
    running: dict[Any, Batch] = {}
    waiting: list[tuple[float, Batch]] = []
    last_beat = time.time()

    def submit(batch: Batch) -> None:
        attempts[batch.id] = attempts.get(batch.id, 0) + 1
        n = attempts[batch.id]
        rescatter_lost()
        bus.emit(
            Event(
                "batch_started",
                run_id,
                pipeline.name,
                batch.id,
                {"fingerprint": batch.fingerprint, "attempt": n, "units": len(batch.units)},
            )
        )
        fut = client.submit(
            process_batch,
            pipeline_future,
            batch,
            run_id,
            str(work.staging),
            shared,
            n,
            fault,
            key=f"dbatch-{pipeline.name}-{batch.id}-{run_id}-a{n}",
            pure=False,
            retries=0,
        )
        running[fut] = batch

    for batch in todo:
        submit(batch)
    stop = False
    while running or waiting:
        now = time.time()
        due = [item for item in waiting if item[0] <= now]
        for item in due:
            waiting.remove(item)
            if not stop:
                submit(item[1])
        if not running:
            if waiting:
                time.sleep(max(0.0, min(t for t, _ in waiting) - time.time()))
            continue
        timeout = max(0.05, min((t for t, _ in waiting), default=now + 1.0) - now)
        try:
            # `wait` waits on the default client's loop; make that ours (a notebook may have several).
            with client.as_current():
                done, _ = wait(list(running), timeout=timeout, return_when="FIRST_COMPLETED")
        except (TimeoutError, CancelledError):  # cancelled: handled one by one below
            done = [f for f in running if f.done()]
        if time.time() - last_beat > 30:
            ledger.heartbeat(pipeline.name, run_id)
            last_beat = time.time()
        for fut in done:
            batch = running.pop(fut)
            n = attempts[batch.id]
            exc: BaseException | None
            try:
                if fut.status == "finished":
                    result: BatchResult = fut.result()
                    fut.release()
                    _commit(pipeline, batch, result, work, bus, run_id, n)
                    continue
                exc = fut.exception() or CancelledError(f"task {fut.key} was {fut.status}")
            except CancelledError as cancelled:  # its inputs were lost with a worker
                exc = cancelled
            lost = isinstance(exc, CancelledError) and not stop
            tb = "".join(traceback.format_exception(exc)) if exc else ""
            fut.release()
            if isinstance(exc, KilledWorker):
                bus.emit(
                    _fail_event(
                        "batch_quarantined",
                        pipeline,
                        batch,
                        run_id,
                        n,
                        exc,
                        "this batch killed its worker process on every attempt (out of memory or "
                        "a crash in native code); it is quarantined so the other batches can "
                        "commit. Make the batch smaller (batching: size) or give workers more "
                        "memory, then run `dbatch replay`.",
                    )
                )
            elif (is_transient(exc) or lost) and n < retry.attempts and not stop:
                delay = retry.delay(n, exc)
                bus.emit(
                    Event(
                        "batch_retry",
                        run_id,
                        pipeline.name,
                        batch.id,
                        {
                            "attempt": n,
                            "delay": delay,
                            "error_class": type(exc).__name__,
                            "error_message": "its input data was lost with a worker"
                            if lost
                            else _short(exc),
                        },
                    )
                )
                waiting.append((time.time() + delay, batch))
            else:
                if stop and isinstance(exc, CancelledError):
                    why = "cancelled: fail_fast"
                elif is_transient(exc) or lost:
                    why = f"transient error persisted after {n} attempts"
                else:
                    why = "deterministic error (not retried)"
                ev = _fail_event("batch_failed", pipeline, batch, run_id, n, exc, why)
                ev.data["traceback"] = redact(tb[-4000:])
                bus.emit(ev)
                if pipeline.bad_input == "fail_fast":
                    stop = True
                    for other in list(running):
                        other.cancel()
                    for _, b in waiting:
                        bus.emit(
                            _fail_event(
                                "batch_failed",
                                pipeline,
                                b,
                                run_id,
                                attempts[b.id],
                                None,
                                "cancelled: fail_fast",
                            )
                        )
                    waiting.clear()
    for f in shared.values():
        f.release()
    pipeline_future.release()


def _short(exc: BaseException | None) -> str:
    if exc is None:
        return ""
    text = f"{exc}"
    return redact(text)[:2000] if "://" in text else text[:2000]


def _fail_event(kind, pipeline, batch, run_id, attempt, exc, why) -> Event:
    return Event(
        kind,
        run_id,
        pipeline.name,
        batch.id,
        {
            "fingerprint": batch.fingerprint,
            "attempt": attempt,
            "units": len(batch.units),
            "error_class": type(exc).__name__ if exc is not None else "Cancelled",
            "error_message": f"{why}: {_short(exc)}" if exc is not None else why,
        },
    )


def _commit(pipeline, batch: Batch, result: BatchResult, work: _Work, bus, run_id, attempt) -> None:
    """Promote the staged batch with one rename, then record it (in that order)."""
    target = work.batch_dir(batch)
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():  # a replay replaces an earlier commit of the same batch
        trash = target.with_name(target.name + f".old-{uuid.uuid4().hex[:6]}")
        os.rename(target, trash)
        os.rename(result.staging, target)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.rename(result.staging, target)
    _crash_point("promoted")
    pipeline.sink.commit_batch(batch.id, batch.fingerprint, Part(batch.id, target, result.rows_out))
    bus.emit(
        Event(
            "batch_committed", run_id, pipeline.name, batch.id, _event_data(batch, result, attempt)
        )
    )
    _crash_point("recorded")


def _publish(pipeline, plan: Plan, client, work: _Work, bus, run_id, summary: RunSummary) -> None:
    committed = [b for b in plan if summary.state.get(b.id) == "committed"]
    dirs = [work.batch_dir(b) for b in committed]
    # Gathered while the reduce tasks run; put in place once the output is published.
    quarantine = _Quarantine(pipeline, committed, dirs, work, client)
    if pipeline.aggregate is not None:
        buckets = _buckets(pipeline, client, work)
        run_pipeline = pipeline.replace(buckets_for_run=buckets)
        work.staging.mkdir(parents=True, exist_ok=True)
        futures = client.map(
            reduce_bucket,
            [run_pipeline] * buckets,
            range(buckets),
            [[str(d) for d in dirs]] * buckets,
            [str(work.staging)] * buckets,
            key=[f"dbatch-reduce-{pipeline.name}-{run_id}-{k}" for k in range(buckets)],
            pure=False,
        )
        outputs = client.gather(futures)
        parts = [Part(f"reduce-{o['bucket']:03d}", Path(o["staging"]), o["rows"]) for o in outputs]
        summary.output_rows = sum(o["rows"] for o in outputs)
    else:
        parts = [
            Part(b.id, d, summary.rows_out_of(b.id)) for b, d in zip(committed, dirs, strict=True)
        ]
        summary.output_rows = sum(p.rows for p in parts)
    _crash_point("before_publish")
    manifest = {
        **summary.manifest_data(),
        "inputs": _inputs(plan, summary),
        "output_rows": summary.output_rows,
    }
    info = pipeline.sink.publish(run_id, parts, manifest)
    quarantine.put_in_place()
    bus.emit(Event("published", run_id, pipeline.name, data=info))
    _gc_committed(plan, work)


class _Quarantine:
    """Every committed batch's quarantined rows and files, gathered into ``quarantine.parquet``.

    Gathered by a task on a worker when there is a cluster (the driver never loads
    the Parquet reader or the rows), into the run's staging area; ``put_in_place``
    renames it next to the work area once the output is published, so the file
    always describes the published output.
    """

    def __init__(self, pipeline, committed, dirs, work: _Work, client=None):
        work.staging.mkdir(parents=True, exist_ok=True)
        self.pending = work.staging / "quarantine.parquet"
        self.target = work.root / "quarantine.parquet"
        args = (
            pipeline.bad_input,
            [(b.id, str(d)) for b, d in zip(committed, dirs, strict=True)],
            str(self.pending),
        )
        if client is None:
            self.rows = gather_quarantine(*args)
            self.future = None
        else:
            key = f"dbatch-quarantine-{uuid.uuid4().hex[:12]}"
            self.future = client.submit(gather_quarantine, *args, key=key, pure=False)

    def put_in_place(self) -> None:
        rows = self.future.result() if self.future is not None else self.rows
        if rows:
            os.replace(self.pending, self.target)
        else:
            self.target.unlink(missing_ok=True)


def _gc_committed(plan: Plan, work: _Work) -> None:
    """Remove committed batches that are no longer part of the plan (changed inputs)."""
    keep = {work.batch_dir(b).name for b in plan}
    if not work.committed.exists():
        return
    for p in work.committed.iterdir():
        if p.name not in keep:
            shutil.rmtree(p, ignore_errors=True)
