"""Planning a job's runs: dbatch export (to another scheduler) and backfill --dry-run."""

from __future__ import annotations

import shlex
import shutil
from pathlib import Path

import click

from ..errors import DBatchError
from .common import echo_frame, echo_json, fail, load, local_workers

__all__ = ["export", "show_backfill"]


def _schedule(job_schedule, cron: str | None, tz: str):
    if cron is None:
        return job_schedule
    from ..triggers import Cron

    return Cron(cron, tz=tz)


def _command(to: str, given: str | None) -> list[str]:
    """How the export calls dbatch: ``--command``, else this dbatch (``dbatch`` in an image)."""
    if given:
        return shlex.split(given)
    if to == "k8s-cronjob":
        return ["dbatch"]
    found = shutil.which("dbatch")
    return [str(Path(found).resolve())] if found else ["dbatch"]


@click.command()
@click.argument("job_path", metavar="JOB.yaml")
@click.option(
    "--to",
    "to",
    required=True,
    type=click.Choice(["cron", "systemd", "k8s-cronjob", "airflow"]),
    help="What runs the job on its schedule.",
)
@click.option(
    "-o", "--output", type=click.Path(file_okay=False), default=None, help="Write the files here."
)
@click.option("--schedule", "cron", default=None, help="A cron expression instead of the job's.")
@click.option("--tz", default="UTC", show_default=True, help="Time zone of --schedule.")
@click.option("--cluster", default=None, metavar="NAME", help="Pass --cluster NAME to the run.")
@click.option("--command", default=None, help="How to call dbatch there (default: this dbatch).")
@click.option("--image", default="dbatch:latest", show_default=True, help="k8s: container image.")
@click.option("--cpu", default="2", show_default=True, help="k8s: CPU request.")
@click.option("--memory", default="4Gi", show_default=True, help="k8s: memory request and limit.")
@click.option("--claim", default=None, help="k8s: PersistentVolumeClaim holding the work area.")
@click.option("--job-path-in-image", default=None, help="k8s: the job file's path in the image.")
def export(
    job_path, to, output, cron, tz, cluster, command, image, cpu, memory, claim, job_path_in_image
):
    """Write what runs JOB.yaml on its schedule: a crontab line, systemd units, a Kubernetes
    CronJob or an Airflow DAG, each calling `dbatch run JOB --json`.

    Printed, or written into --output. Install them with `crontab -e`,
    `systemctl enable --now dbatch-<job>.timer`, `kubectl apply -f` or by copying the
    DAG into Airflow's dags folder.
    """
    from ..export import ExportTarget
    from ..export import export as export_job

    job = load(job_path)
    try:
        target = ExportTarget(
            job=job.pipeline.name,
            job_path=Path(job_path).resolve(),
            command=_command(to, command),
            cluster=cluster,
            image=image,
            cpu=cpu,
            memory=memory,
            claim=claim,
            job_path_in_image=job_path_in_image,
        )
        exported = export_job(to, _schedule(job.schedule, cron, tz), target)
    except DBatchError as e:
        fail(e)
    if output is None:
        click.echo(exported.text(), nl=False)
        return
    for path in exported.write(Path(output)):
        click.echo(f"wrote {path}", err=True)


def show_backfill(
    job_path: str, start: str, end: str, force: bool, workers: int | None, as_json: bool
) -> None:
    """Print what a backfill would run (``--dry-run``): no cluster is started."""
    import dask.config
    import pandas as pd

    from ..backfill import preview_backfill

    job = load(job_path)
    try:
        with job.inputs_checked(), dask.config.set(local_workers(job, workers)):
            preview = preview_backfill(job.pipeline, start, end, force=force)
    except DBatchError as e:
        fail(e)
    if as_json:
        echo_json(preview.to_dict())
        return
    s = preview.summary()
    frame = pd.DataFrame(preview.batches)
    columns = ["batch_id", "first", "last", "units", "bytes", "action"]
    columns += [c for c in ("seconds", "memory") if c in frame.columns]
    echo_frame(frame, columns, "no batches", float_format=lambda x: f"{x:.2f}")
    click.echo(
        f"backfill {s['window']} of {s['job']!r}: {s['to_run']} of {s['batches']} batch(es) to "
        f"run ({_size(s['bytes_to_run'])}), {s['committed']} already committed, "
        f"{s['quarantined']} quarantined"
    )
    if s["batch_seconds"] is None:
        click.echo("no estimate: the ledger has no committed batch of this job yet")
    else:
        memory = s["peak_batch_memory"]
        click.echo(
            f"estimate from {s['history_batches']} earlier batch(es): {s['batch_seconds']:.1f} "
            f"batch-seconds, about {s['wall_seconds']:.1f}s on {s['threads']} thread(s)"
            + (f"; the largest batch adds about {_size(memory)} to a worker" if memory else "")
        )


def _size(n: int) -> str:
    from dask.utils import format_bytes

    return str(format_bytes(int(n)))
