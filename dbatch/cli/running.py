"""The commands that run a job: run, resume, replay, backfill and watch."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import click

from ..errors import DBatchError, JobSpecError
from ..protocols import Positioned
from .common import (
    RunEnd,
    client_for,
    echo_json,
    emit,
    fail,
    job_ledger,
    job_options,
    load,
    local_workers,
    run_failed,
    run_params,
)
from .logs import log_settings
from .settings import set_option
from .shapes import document, run_document

if TYPE_CHECKING:
    import threading

    from ..monitor.result import RunResult
    from ..protocols import Trigger
    from ..spec import JobFile
    from ..watch import WatchResult

__all__ = ["run", "resume", "replay", "backfill", "watch", "run_job"]


def run_job(
    job_path: str,
    scheduler: str | None,
    workers: int | None,
    as_json: bool,
    insecure: bool,
    progress: bool | None = None,
    window: tuple[str, str, bool] | None = None,
    settings: dict[str, Any] | None = None,
    cluster: str | None = None,
    metrics_file: str | None = None,
    **options: Any,
) -> None:
    """Run the job at ``job_path`` (or backfill ``window``), print the result and exit.

    ``settings`` (``--set``) are Dask configuration: set while the job file loads (its
    defaults come from the configuration) and again over its ``cluster:`` section.
    """
    import dask.config

    from ..cluster import close

    settings = settings or {}
    with dask.config.set(settings):
        job = load(job_path)
    client = None
    end = RunEnd()
    try:
        with dask.config.set(settings):  # --set dbatch.cluster.connect-timeout=... counts here
            client = client_for(job, scheduler, insecure, show_link=not as_json, cluster=cluster)
        with (
            job.inputs_checked(),
            dask.config.set(local_workers(job, workers)),
            dask.config.set(settings),
        ):
            common = {
                "client": client,
                "progress": False if as_json or not log_settings().shows_progress else progress,
                "params": run_params(job_path),
                "listeners": [*job.alerts, end, *_metrics_file(metrics_file)],
            }
            if window is None:
                result = job.pipeline.run(**common, **options)
            else:
                from ..backfill import backfill as backfill_job

                start, stop, force = window
                result = backfill_job(job.pipeline, start, stop, force=force, **common)
    except Exception as e:
        run_failed(e, end, as_json)  # raised after the run started: a failed run, status 1
        if not isinstance(e, DBatchError):
            raise
        fail(e)
    finally:
        if client is not None:
            close(client)
    emit(result, as_json)


cluster_option = click.option(
    "--cluster",
    "cluster",
    default=None,
    metavar="NAME",
    help="A cluster profile under dbatch.clusters of the dask config (see docs/scaling.md).",
)


def _metrics_file(path: str | None) -> list[Any]:
    if path is None:
        return []
    from ..monitor.board.metrics import MetricsFile

    return [MetricsFile(path)]


@click.command()
@job_options
@set_option
@cluster_option
@click.option(
    "--metrics-file",
    type=click.Path(dir_okay=False),
    default=None,
    help="Write the run's Prometheus metrics here when it ends (node_exporter textfile format).",
)
def run(job_path, scheduler, workers, as_json, insecure, settings, cluster, metrics_file):
    """Run a job: every batch not yet committed with the same inputs."""
    run_job(
        job_path,
        scheduler,
        workers,
        as_json,
        insecure,
        settings=settings,
        cluster=cluster,
        metrics_file=metrics_file,
    )


@click.command()
@job_options
@set_option
@cluster_option
def resume(job_path, scheduler, workers, as_json, insecure, settings, cluster):
    """Continue the last unfinished run of a job under the same run id."""
    job = load(job_path)
    with job_ledger(job) as ledger:
        last = ledger.last_run(job.pipeline.name)
    run_id = None
    if last is None or last["status"] not in ("running", "failed", "abandoned"):
        click.echo("no unfinished run to resume; starting a new run", err=True)
    else:
        run_id = last["run_id"]
        click.echo(f"resuming run {run_id}", err=True)
    run_job(
        job_path,
        scheduler,
        workers,
        as_json,
        insecure,
        settings=settings,
        cluster=cluster,
        run_id=run_id,
    )


@click.command()
@job_options
@set_option
@cluster_option
def replay(job_path, scheduler, workers, as_json, insecure, settings, cluster):
    """Re-run batches that quarantined rows or files (after fixing data or the job)."""
    run_job(
        job_path,
        scheduler,
        workers,
        as_json,
        insecure,
        settings=settings,
        cluster=cluster,
        replay=True,
    )


@click.command()
@job_options
@cluster_option
@click.option(
    "--start", required=True, help="First time included: 2026-11-01 or 2026-11-01T06:00 (UTC)."
)
@click.option("--end", required=True, help="First time excluded (the range is [start, end)).")
@click.option("--force", is_flag=True, help="Re-run windows already committed, as a replay does.")
@click.option(
    "--dry-run",
    is_flag=True,
    help="List the batches it would run, what is committed, and estimates; run nothing.",
)
@set_option
def backfill(
    job_path, start, end, force, dry_run, scheduler, workers, as_json, insecure, cluster, settings
):
    """Run only the batches whose units' times fall in [--start, --end)."""
    if dry_run:
        from .scheduling import show_backfill

        show_backfill(job_path, start, end, force, workers, as_json)
        return
    run_job(
        job_path,
        scheduler,
        workers,
        as_json,
        insecure,
        cluster=cluster,
        window=(start, end, force),
        settings=settings,
    )


@click.command()
@job_options
@cluster_option
@click.option("--once", is_flag=True, help="Wait for the trigger once, run, and exit.")
@click.option(
    "--max-runs", type=click.IntRange(min=1), default=None, help="Stop after this many runs."
)
@set_option
def watch(job_path, once, max_runs, scheduler, workers, as_json, insecure, cluster, settings):
    """Run a job each time its schedule fires (cron, every or arrival) until stopped.

    A failed run is reported (and alerted) and the watch goes on. Ctrl-C or
    SIGTERM stops after the current run; a second one aborts it. The exit status
    is 1 when the last run failed, else 0.
    """
    import threading

    import dask.config

    from ..cluster import close as close_client

    with dask.config.set(settings):
        job = load(job_path)
    schedule = job.schedule
    if schedule is None and isinstance(job.pipeline.source, Positioned):
        from ..triggers import Poll

        schedule = Poll()  # a stream: consume as messages come, with a bounded lag
    if schedule is None:
        fail(
            JobSpecError(
                'no schedule; add one of schedule: {cron: "0 2 * * *"}, {every: 1h} or '
                "{arrival: {count: 10, poll: 30s}} (see docs/schedules.md)",
                key="schedule",
                file=job_path,
            )
        )
    stop = threading.Event()
    if not as_json:
        _announce(job.pipeline.name, schedule)
    client = None
    try:
        with (
            _stop_on_signals(stop),
            dask.config.set(local_workers(job, workers)),
            dask.config.set(settings),
        ):
            client = client_for(job, scheduler, insecure, show_link=not as_json, cluster=cluster)
            outcome = _watch_job(
                job, schedule, job_path, client, 1 if once else max_runs, stop, as_json
            )
    except DBatchError as e:
        fail(e)
    finally:
        if client is not None:
            close_client(client)
    if not as_json:
        click.echo(
            f"watch of {job.pipeline.name!r} ended: {outcome.runs} run(s), "
            f"{outcome.failed} failed" + (" (stopped)" if outcome.stopped else ""),
            err=True,
        )
    sys.exit(1 if outcome.last_failed else 0)


def _announce(name: str, schedule: Trigger) -> None:
    """Say on standard error what is watched and when the trigger first looks."""
    from datetime import UTC, datetime

    first = schedule.next_fire(datetime.now(UTC))
    click.echo(
        f"watching {name!r}: {schedule.describe()}; first look at {first:%Y-%m-%d %H:%M:%S %Z}",
        err=True,
    )


def _watch_job(
    job: JobFile,
    schedule: Trigger,
    job_path: str,
    client: Any,
    max_runs: int | None,
    stop: threading.Event,
    as_json: bool,
) -> WatchResult:
    """The watch loop over ``schedule``, printing one line (or object) per run."""
    from ..watch import watch as watch_job

    on_result, on_error = _reporters(job, as_json)
    return watch_job(
        job.pipeline,
        schedule,
        client=client,
        max_runs=max_runs,
        stop=stop,
        listeners=job.alerts,
        on_result=on_result,
        on_error=on_error,
        params=run_params(job_path),
    )


def _reporters(
    job: JobFile, as_json: bool
) -> tuple[Callable[[RunResult], None], Callable[[Exception], None]]:
    """What the watch prints for each run's result, and for a run that could not start."""
    from ..watch import summary_line

    def on_result(result: RunResult) -> None:
        if as_json:
            echo_json(run_document(result))
        else:
            click.echo(summary_line(result))

    def on_error(error: Exception) -> None:
        if as_json:
            echo_json(document("run", job.pipeline.name, status="failed", message=str(error)))
        else:
            click.echo(f"error: the run could not start: {error}", err=True)

    return on_result, on_error


@contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGINT/SIGTERM set ``stop`` (finish the current run, then end); a second one aborts."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        click.echo(
            f"{signal.Signals(signum).name}: stopping after the current run "
            "(send it again to abort the run)",
            err=True,
        )

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
