"""What every dbatch command shares: loading the job, the client, the ledger, output, options."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

from ..cluster import MAX_LOCAL_WORKERS
from ..core import Event
from ..errors import DBatchError, JobSpecError
from ..listeners import RunListener
from .logs import log_settings

if TYPE_CHECKING:
    from ..ledger import Ledger
    from ..spec import JobFile

log = logging.getLogger("dbatch.cli")

__all__ = [
    "fail",
    "RunEnd",
    "run_failed",
    "load",
    "client_for",
    "echo_json",
    "emit",
    "run_params",
    "job_ledger",
    "echo_frame",
    "local_workers",
    "job_options",
    "scheduler_option",
    "workers_option",
    "json_option",
]


def fail(e: Exception) -> NoReturn:
    """Print ``error: ...`` on standard error and exit with status 2."""
    click.echo(f"error: {e}", err=True)
    sys.exit(2)


def load(job_path: str) -> JobFile:
    """The job file at ``job_path``; a wrong one ends the command with its error."""
    from ..spec import load_job

    try:
        return load_job(job_path)
    except DBatchError as e:
        fail(e)


def client_for(
    job: JobFile, scheduler: str | None, insecure: bool, show_link: bool, cluster: str | None = None
) -> Any:
    """A client for ``--scheduler``, ``--cluster`` or the job's ``cluster:``, else None.

    None lets the runner start a LocalCluster only when there is work, and close it.
    A cluster started for a profile is closed by ``dbatch.cluster.close(client)``.
    """
    from ..cluster import connect

    address = scheduler or (None if cluster else job.cluster.get("scheduler"))
    if address:
        shown = show_link and log_settings().shows_progress
        return connect(address, insecure=insecure, show_link=shown)
    profile = cluster or job.cluster.get("profile")
    if profile is not None:
        shown = show_link and log_settings().shows_progress
        return connect(cluster=profile, insecure=insecure, show_link=shown)
    return None


def local_workers(job: JobFile, workers: int | None) -> dict[str, int]:
    """The ``dask.config`` setting for the LocalCluster's worker count (``--workers`` first)."""
    n_workers = workers or job.cluster.get("workers")
    return {"dbatch.cluster.n-workers": int(n_workers)} if n_workers else {}


def echo_json(data: Any) -> None:
    """Print ``data`` as one JSON object with sorted keys."""
    click.echo(json.dumps(data, default=str, sort_keys=True))


def emit(result: Any, as_json: bool) -> NoReturn:
    """Print a run's result and exit: 0 when it succeeded, else 1."""
    if as_json:
        from .shapes import run_document

        echo_json(run_document(result))
    else:
        click.echo(repr(result))
    sys.exit(0 if result.ok else 1)


class RunEnd(RunListener):
    """Keeps how a run ended, for a run that raised after it started (it is then ``failed``)."""

    def __init__(self) -> None:
        self.event: Event | None = None

    def on_finished(self, event: Event) -> None:
        self.event = event


def run_failed(error: Exception, end: RunEnd, as_json: bool) -> None:
    """Exit with one line when ``error`` ended a started run; return when it never started.

    The status is 1, or 2 when the job file is wrong (a SQL step that does not
    compile is found after the run has taken its lock, before any batch is sent).
    """
    if end.event is None:
        return
    e = end.event
    log.debug("run %s of %r raised", e.run_id, e.job, exc_info=error)
    if as_json:
        echo_json({"job": e.job, "run_id": e.run_id, "status": "failed", "message": str(error)})
    click.echo(f"error: run {e.run_id} of {e.job!r} failed: {error}", err=True)
    sys.exit(2 if isinstance(error, JobSpecError) else 1)


def run_params(job_path: str) -> dict[str, str]:
    """The run parameters the ledger records for a run started from a job file."""
    return {"job_file": str(Path(job_path).resolve())}


@contextmanager
def job_ledger(job: JobFile) -> Iterator[Ledger]:
    """The job's ledger, closed again however the command ends."""
    from ..ledger import Ledger

    try:
        ledger = Ledger(job.pipeline.ledger_url())
    except DBatchError as e:
        fail(e)
    try:
        yield ledger
    finally:
        ledger.close()


def echo_frame(frame: Any, columns: Sequence[str], nothing: str, **to_string: Any) -> None:
    """Print ``columns`` of a pandas DataFrame as a table, or ``nothing`` when it is empty."""
    if frame.empty:
        click.echo(nothing)
    else:
        click.echo(frame[list(columns)].to_string(index=False, **to_string))


scheduler_option = click.option(
    "--scheduler", default=None, help="Dask scheduler address or scheduler file."
)
workers_option = click.option(
    "--workers",
    type=click.IntRange(min=1, max=MAX_LOCAL_WORKERS),
    default=None,
    help="Worker processes of the LocalCluster started for the run (without --scheduler).",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
_insecure = click.option("--insecure", is_flag=True, help="Allow a non-TLS non-loopback scheduler.")


def job_options(command: Callable) -> Callable:
    """JOB.yaml, --scheduler, --workers, --json and --insecure: what every job command takes."""
    for option in (
        _insecure,
        json_option,
        workers_option,
        scheduler_option,
        click.argument("job_path", metavar="JOB.yaml"),
    ):
        command = option(command)
    return command
