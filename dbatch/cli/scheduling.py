"""The command that hands a job's schedule to another scheduler: dbatch export."""

from __future__ import annotations

import shlex
import shutil
from pathlib import Path

import click

from ..errors import DBatchError
from .common import fail, load

__all__ = ["export"]


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
