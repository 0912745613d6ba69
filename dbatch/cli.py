"""The command line: dbatch run | plan | resume | replay | backfill | watch | status | history | unlock | demo."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

from .core import BATCH_COLUMNS
from .errors import DBatchError

if TYPE_CHECKING:
    from .ledger import Ledger
    from .spec import JobFile

__all__ = ["main"]


def _fail(e: Exception) -> NoReturn:
    click.echo(f"error: {e}", err=True)
    sys.exit(2)


def _load(job_path: str):
    from .spec import load_job

    try:
        return load_job(job_path)
    except DBatchError as e:
        _fail(e)


def _client(job, scheduler: str | None, insecure: bool, show_link: bool):
    """A client for ``--scheduler`` (or the job's ``cluster.scheduler``), else None.

    None lets the runner start a LocalCluster only when there is work, and close it.
    """
    from .cluster import connect

    address = scheduler or job.cluster.get("scheduler")
    if address:
        return connect(address, insecure=insecure, show_link=show_link)
    return None


def _echo_json(data: Any) -> None:
    click.echo(json.dumps(data, default=str, sort_keys=True))


def _emit(result, as_json: bool) -> None:
    if as_json:
        _echo_json(result.to_dict())
    else:
        click.echo(repr(result))
    sys.exit(0 if result.ok else 1)


def _params(job_path: str) -> dict[str, str]:
    """The run parameters the ledger records for a run started from a job file."""
    return {"job_file": str(Path(job_path).resolve())}


@contextmanager
def _ledger(job: JobFile) -> Iterator[Ledger]:
    """The job's ledger, closed again however the command ends."""
    from .ledger import Ledger

    ledger = Ledger(job.pipeline.ledger_url())
    try:
        yield ledger
    finally:
        ledger.close()


def _echo_frame(frame, columns: Sequence[str], nothing: str, **to_string: Any) -> None:
    if frame.empty:
        click.echo(nothing)
    else:
        click.echo(frame[list(columns)].to_string(index=False, **to_string))


_scheduler = click.option(
    "--scheduler", default=None, help="Dask scheduler address or scheduler file."
)
_workers = click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=None,
    help="Worker processes of the LocalCluster started for the run (without --scheduler).",
)
_json = click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
_insecure = click.option("--insecure", is_flag=True, help="Allow a non-TLS non-loopback scheduler.")


def _job_options(command: Callable) -> Callable:
    """JOB.yaml, --scheduler, --workers, --json and --insecure: what every job command takes."""
    for option in (
        _insecure,
        _json,
        _workers,
        _scheduler,
        click.argument("job_path", metavar="JOB.yaml"),
    ):
        command = option(command)
    return command


@click.group(name="dbatch")
@click.version_option(package_name="dbatch")
def main() -> None:
    """Batch jobs on Dask: planned batches, exactly-once output, resume, quarantine."""


def _local_workers(job, workers) -> dict:
    n_workers = workers or job.cluster.get("workers")
    return {"dbatch.cluster.n-workers": int(n_workers)} if n_workers else {}


def _run(job_path, scheduler, workers, as_json, insecure, progress=None, window=None, **options):
    import dask.config

    job = _load(job_path)
    local = _local_workers(job, workers)
    client = None
    try:
        client = _client(job, scheduler, insecure, show_link=not as_json)
        with job.inputs_checked(), dask.config.set(local):
            common = {
                "client": client,
                "progress": False if as_json else progress,
                "params": _params(job_path),
                "listeners": list(job.alerts),
            }
            if window is None:
                result = job.pipeline.run(**common, **options)
            else:
                from .triggers import backfill

                start, end, force = window
                result = backfill(job.pipeline, start, end, force=force, **common)
    except DBatchError as e:
        _fail(e)
    finally:
        if client is not None:
            client.close()
    _emit(result, as_json)


@main.command()
@_job_options
def run(job_path, scheduler, workers, as_json, insecure):
    """Run a job: every batch not yet committed with the same inputs."""
    _run(job_path, scheduler, workers, as_json, insecure)


@main.command()
@_job_options
def resume(job_path, scheduler, workers, as_json, insecure):
    """Continue the last unfinished run of a job under the same run id."""
    job = _load(job_path)
    with _ledger(job) as ledger:
        last = ledger.last_run(job.pipeline.name)
    if last is None or last["status"] not in ("running", "failed"):
        click.echo("no unfinished run to resume; starting a new run", err=True)
        _run(job_path, scheduler, workers, as_json, insecure)
    else:
        click.echo(f"resuming run {last['run_id']}", err=True)
        _run(job_path, scheduler, workers, as_json, insecure, run_id=last["run_id"])


@main.command()
@_job_options
def replay(job_path, scheduler, workers, as_json, insecure):
    """Re-run batches that quarantined rows or files (after fixing data or the job)."""
    _run(job_path, scheduler, workers, as_json, insecure, replay=True)


@main.command()
@_job_options
@click.option(
    "--start", required=True, help="First time included: 2026-11-01 or 2026-11-01T06:00 (UTC)."
)
@click.option("--end", required=True, help="First time excluded (the range is [start, end)).")
@click.option("--force", is_flag=True, help="Re-run windows already committed, as a replay does.")
def backfill(job_path, start, end, force, scheduler, workers, as_json, insecure):
    """Run only the batches whose units' times fall in [--start, --end)."""
    _run(job_path, scheduler, workers, as_json, insecure, window=(start, end, force))


@main.command()
@_job_options
@click.option("--once", is_flag=True, help="Wait for the trigger once, run, and exit.")
@click.option(
    "--max-runs", type=click.IntRange(min=1), default=None, help="Stop after this many runs."
)
def watch(job_path, once, max_runs, scheduler, workers, as_json, insecure):
    """Run a job each time its schedule fires (cron, every or arrival) until stopped.

    A failed run is reported (and alerted) and the watch goes on. Ctrl-C or
    SIGTERM stops after the current run; a second one aborts it. The exit status
    is 1 when the last run failed, else 0.
    """
    import threading
    from datetime import UTC, datetime

    import dask.config

    from .errors import JobSpecError
    from .triggers import summary_line
    from .triggers import watch as watch_job

    job = _load(job_path)
    if job.schedule is None:
        _fail(
            JobSpecError(
                'no schedule; add one of schedule: {cron: "0 2 * * *"}, {every: 1h} or '
                "{arrival: {count: 10, poll: 30s}} (see docs/schedules.md)",
                key="schedule",
                file=job_path,
            )
        )

    def on_result(result) -> None:
        if as_json:
            _echo_json(result.to_dict())
        else:
            click.echo(summary_line(result))

    def on_error(error: Exception) -> None:
        if as_json:
            _echo_json({"job": job.pipeline.name, "status": "failed", "message": str(error)})
        else:
            click.echo(f"error: the run could not start: {error}", err=True)

    stop = threading.Event()
    if not as_json:
        first = job.schedule.next_fire(datetime.now(UTC))
        click.echo(
            f"watching {job.pipeline.name!r}: {job.schedule.describe()}; "
            f"first look at {first:%Y-%m-%d %H:%M:%S %Z}",
            err=True,
        )
    client = None
    try:
        with _stop_on_signals(stop), dask.config.set(_local_workers(job, workers)):
            client = _client(job, scheduler, insecure, show_link=not as_json)
            outcome = watch_job(
                job.pipeline,
                job.schedule,
                client=client,
                max_runs=1 if once else max_runs,
                stop=stop,
                listeners=job.alerts,
                on_result=on_result,
                on_error=on_error,
                params=_params(job_path),
            )
    except DBatchError as e:
        _fail(e)
    finally:
        if client is not None:
            client.close()
    if not as_json:
        click.echo(
            f"watch of {job.pipeline.name!r} ended: {outcome.runs} run(s), "
            f"{outcome.failed} failed" + (" (stopped)" if outcome.stopped else ""),
            err=True,
        )
    sys.exit(1 if outcome.last_failed else 0)


@contextmanager
def _stop_on_signals(stop):
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


@main.command()
@click.argument("job_path", metavar="JOB.yaml")
@_json
def plan(job_path, as_json):
    """Show the batches a job consists of (no cluster needed)."""
    job = _load(job_path)
    try:
        p = job.plan()
    except DBatchError as e:
        _fail(e)
    if as_json:
        _echo_json({"job": p.job, "batches": p.to_records()})
    else:
        click.echo(repr(p))


@main.command()
@click.argument("job_path", metavar="JOB.yaml")
@_json
def status(job_path, as_json):
    """Each batch's state in the ledger: committed, quarantined, failed, with counts."""
    job = _load(job_path)
    with _ledger(job) as ledger:
        frame = ledger.batches_frame(job.pipeline.name)
        last = ledger.last_run(job.pipeline.name)
    if as_json:
        _echo_json({"last_run": last, "batches": frame.to_dict(orient="records")})
        return
    if last:
        click.echo(f"last run {last['run_id']}: {last['status']}")
    columns = [*BATCH_COLUMNS, "error_message"]
    _echo_frame(frame, columns, "no batches recorded yet", max_colwidth=60)


@main.command()
@click.argument("job_path", metavar="JOB.yaml")
@_json
def history(job_path, as_json):
    """Every run of a job: when, status, counts."""
    job = _load(job_path)
    with _ledger(job) as ledger:
        frame = ledger.runs_frame(job.pipeline.name)
    if as_json:
        _echo_json(frame.to_dict(orient="records"))
        return
    columns = [
        "run_id",
        "status",
        "started",
        "batches_committed",
        "batches_skipped",
        "batches_failed",
        "rows_in",
        "rows_out",
    ]
    _echo_frame(frame, columns, "no runs recorded yet")


@main.command()
@click.argument("job_path", metavar="JOB.yaml")
def unlock(job_path):
    """Clear the lock of a job whose driver died on another machine."""
    job = _load(job_path)
    with _ledger(job) as ledger:
        ledger.release(job.pipeline.name)
    click.echo(f"unlocked {job.pipeline.name}")


@main.command()
@click.option(
    "--dir", "directory", default="dbatch-demo", show_default=True, help="Where to write it."
)
@click.option("--days", default=5, show_default=True, help="Days of transaction files.")
@click.option(
    "--rows-per-file", default=20_000, show_default=True, help="Transactions per branch and day."
)
@_scheduler
@_workers
@_json
def demo(directory, days, rows_per_file, scheduler, workers, as_json):
    """Write a landing area of transaction files and the reconciliation job, then run it."""
    from .demo import write_job, write_landing_area

    root = Path(directory)
    info = write_landing_area(root, days=days, rows_per_file=rows_per_file)
    job_path = write_job(root)
    if not as_json:
        click.echo(
            f"wrote {info['files']} files, {info['rows']:,} transactions "
            f"({info['damaged_rows']} damaged on purpose) and {job_path}"
        )
    _run(str(job_path), scheduler, workers, as_json, False, progress=True)


if __name__ == "__main__":  # pragma: no cover
    main()
