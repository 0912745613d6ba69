"""The commands that look at a job without running it: plan, status, history, unlock, schema."""

from __future__ import annotations

import click

from ..core import BATCH_COLUMNS
from ..errors import DBatchError
from .common import echo_frame, echo_json, fail, job_ledger, json_option, load

__all__ = ["plan", "status", "history", "unlock", "schema"]

_RUN_COLUMNS = [
    "run_id",
    "status",
    "started",
    "batches_committed",
    "batches_skipped",
    "batches_failed",
    "rows_in",
    "rows_out",
]


@click.command()
@click.argument("job_path", metavar="JOB.yaml")
@json_option
def plan(job_path, as_json):
    """Show the batches a job consists of (no cluster needed)."""
    job = load(job_path)
    try:
        p = job.plan()
    except DBatchError as e:
        fail(e)
    if as_json:
        echo_json({"job": p.job, "batches": p.to_records()})
    else:
        click.echo(repr(p))


@click.command()
@click.argument("job_path", metavar="JOB.yaml")
@json_option
def status(job_path, as_json):
    """Each batch's state in the ledger: committed, quarantined, failed, with counts."""
    job = load(job_path)
    with job_ledger(job) as ledger:
        frame = ledger.batches_frame(job.pipeline.name)
        last = ledger.last_run(job.pipeline.name)
    if as_json:
        echo_json({"last_run": last, "batches": frame.to_dict(orient="records")})
        return
    if last:
        click.echo(f"last run {last['run_id']}: {last['status']}")
    columns = [*BATCH_COLUMNS, "error_message"]
    echo_frame(frame, columns, "no batches recorded yet", max_colwidth=60)


@click.command()
@click.argument("job_path", metavar="JOB.yaml")
@json_option
def history(job_path, as_json):
    """Every run of a job: when, status, counts."""
    job = load(job_path)
    with job_ledger(job) as ledger:
        frame = ledger.runs_frame(job.pipeline.name)
    if as_json:
        echo_json(frame.to_dict(orient="records"))
        return
    echo_frame(frame, _RUN_COLUMNS, "no runs recorded yet")


@click.command()
@click.argument("job_path", metavar="JOB.yaml")
def unlock(job_path):
    """Clear the lock of a job whose driver died on another machine."""
    job = load(job_path)
    with job_ledger(job) as ledger:
        ledger.release(job.pipeline.name)
    click.echo(f"unlocked {job.pipeline.name}")


@click.command()
def schema():
    """Print the JSON Schema of job files (for editors and CI checks).

    It covers the source, sink and step types of every installed package; the
    schema of dbatch's own is shipped in the package as ``dbatch/job.schema.json``.
    """
    from ..jobschema import schema_text

    click.echo(schema_text(), nl=False)
