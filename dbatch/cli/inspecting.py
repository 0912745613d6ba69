"""The commands that look at a job without running it: plan, status, history, unlock, schema."""

from __future__ import annotations

import click

from ..errors import DBatchError
from .common import echo_json, fail, job_ledger, json_option, load
from .shapes import batch_object, document, records, run_object
from .views import print_history, print_status

__all__ = ["plan", "status", "history", "unlock", "schema"]


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
        echo_json(document("plan", p.job, batches=p.to_records()))
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
    run = run_object(last) if last else None
    batches = [batch_object(r) for r in records(frame)]
    if as_json:
        echo_json(document("status", job.pipeline.name, last_run=run, batches=batches))
    else:
        print_status(job.pipeline.name, run, batches)


@click.command()
@click.argument("job_path", metavar="JOB.yaml")
@json_option
def history(job_path, as_json):
    """Every run of a job: when, how long, status, counts."""
    job = load(job_path)
    with job_ledger(job) as ledger:
        frame = ledger.runs_frame(job.pipeline.name)
    runs = [run_object(r) for r in records(frame)]
    if as_json:
        echo_json(document("history", job.pipeline.name, runs=runs))
    else:
        print_history(job.pipeline.name, runs)


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
