"""The four exports: a crontab line, systemd units, a Kubernetes CronJob, an Airflow DAG."""

from __future__ import annotations

from typing import Any

import yaml

from ..triggers import Arrival, Interval
from .model import Exported, ExportTarget, cron_of, cron_to_calendar, no_clock, shell_line

__all__ = ["crontab", "systemd", "k8s_cronjob", "airflow"]


def _header(target: ExportTarget, schedule: Any, comment: str = "#") -> str:
    return (
        f"{comment} dbatch job {target.job!r} ({target.job_path.name}), "
        f"{schedule.describe()}: written by `dbatch export`\n"
    )


def crontab(schedule: Any, target: ExportTarget) -> Exported:
    """One crontab line; its output goes to ``<job folder>/<job>.cron.log``.

    A time zone other than UTC is set with ``CRON_TZ`` (cronie, and most crons of today).
    """
    expression, tz = cron_of(schedule, "cron")
    folder = target.job_path.parent
    log = folder / f"{target.slug}.cron.log"
    lines = [_header(target, schedule).rstrip()]
    if tz != "UTC":
        lines.append(f"CRON_TZ={tz}")
    command = f"cd {shell_line([str(folder)])} && {shell_line(target.argv())}"
    lines.append(f"{expression} {command} >> {shell_line([str(log)])} 2>&1")
    return Exported({f"dbatch-{target.slug}.cron": "\n".join(lines) + "\n"})


def systemd(schedule: Any, target: ExportTarget) -> Exported:
    """A oneshot service and its timer; an arrival schedule: a service running the watch."""
    name = f"dbatch-{target.slug}"
    folder = target.job_path.parent
    if isinstance(schedule, Arrival):
        watch = [*target.argv()]
        watch[len(target.command)] = "watch"
        service = _unit(
            target,
            schedule,
            f"Watch of the dbatch job {target.job} ({schedule.describe()})",
            [
                "Type=simple",
                f"WorkingDirectory={folder}",
                f"ExecStart={shell_line(watch)}",
                "Restart=on-failure",
                "RestartSec=30",
            ],
            install="[Install]\nWantedBy=multi-user.target\n",
        )
        return Exported({f"{name}.service": service})
    service = _unit(
        target,
        schedule,
        f"dbatch job {target.job}",
        ["Type=oneshot", f"WorkingDirectory={folder}", f"ExecStart={shell_line(target.argv())}"],
    )
    if isinstance(schedule, Interval):
        when = ["OnActiveSec=0", f"OnUnitActiveSec={int(schedule.seconds)}s"]
    else:
        expression, tz = cron_of(schedule, "systemd")
        when = [f"OnCalendar={c}" for c in cron_to_calendar(expression, tz)] + ["Persistent=true"]
    timer = (
        _header(target, schedule)
        + f"[Unit]\nDescription=Schedule of the dbatch job {target.job}\n\n"
        + "[Timer]\n"
        + "".join(f"{line}\n" for line in [*when, f"Unit={name}.service"])
        + "\n[Install]\nWantedBy=timers.target\n"
    )
    return Exported({f"{name}.service": service, f"{name}.timer": timer})


def _unit(
    target: ExportTarget, schedule: Any, description: str, lines: list[str], install: str = ""
) -> str:
    return (
        _header(target, schedule)
        + f"[Unit]\nDescription={description}\n"
        + "Wants=network-online.target\nAfter=network-online.target\n\n"
        + "[Service]\n"
        + "".join(f"{line}\n" for line in lines)
        + ("\n" + install if install else "")
    )


def k8s_cronjob(schedule: Any, target: ExportTarget) -> Exported:
    """A ``batch/v1`` CronJob: one pod at a time (``concurrencyPolicy: Forbid``), no retry pods.

    dbatch retries batches itself and a later run picks up what a failed one left,
    so ``backoffLimit`` is 0. With ``claim`` the work area (ledger, committed
    batches) lives on that PersistentVolumeClaim, so runs share it.
    """
    expression, tz = cron_of(schedule, "a Kubernetes CronJob")
    name = f"dbatch-{target.slug}"
    in_image = target.job_path_in_image or f"/job/{target.job_path.name}"
    labels = {"app.kubernetes.io/name": "dbatch", "app.kubernetes.io/instance": target.slug}
    container: dict[str, Any] = {
        "name": "dbatch",
        "image": target.image,
        "command": target.argv(in_image),
        "workingDir": str(_posix_parent(in_image)),
        "resources": {
            "requests": {"cpu": target.cpu, "memory": target.memory},
            "limits": {"memory": target.memory},
        },
    }
    pod: dict[str, Any] = {"restartPolicy": "Never", "containers": [container]}
    if target.claim:
        container["env"] = [{"name": "DASK_DBATCH__WORKDIR", "value": "/var/lib/dbatch"}]
        container["volumeMounts"] = [{"name": "work-area", "mountPath": "/var/lib/dbatch"}]
        pod["volumes"] = [
            {"name": "work-area", "persistentVolumeClaim": {"claimName": target.claim}}
        ]
    manifest = {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": name, "labels": dict(labels)},
        "spec": {
            "schedule": expression,
            "timeZone": tz,
            "concurrencyPolicy": "Forbid",
            "startingDeadlineSeconds": 3600,
            "successfulJobsHistoryLimit": 3,
            "failedJobsHistoryLimit": 3,
            "jobTemplate": {
                "metadata": {"labels": dict(labels)},
                "spec": {
                    "backoffLimit": 0,
                    "template": {"metadata": {"labels": dict(labels)}, "spec": pod},
                },
            },
        },
    }
    text = _header(target, schedule) + yaml.safe_dump(manifest, sort_keys=False)
    return Exported({f"{name}-cronjob.yaml": text})


def _posix_parent(path: str) -> str:
    from pathlib import PurePosixPath

    return str(PurePosixPath(path).parent)


_DAG = '''\
"""Airflow DAG of the dbatch job {job!r}: {described}.

Written by `dbatch export`. The task runs `dbatch run --json`; dbatch exits non-zero
when the run failed (1) or could not start (2), which fails the task. Runs never
overlap (max_active_runs=1) and past intervals are not caught up: a dbatch run
always does everything not yet committed.
"""

{imports}import pendulum
from airflow import DAG

try:  # Airflow 3
    from airflow.providers.standard.operators.bash import BashOperator
except ImportError:  # Airflow 2
    from airflow.operators.bash import BashOperator

with DAG(
    dag_id={dag_id!r},
    description={description!r},
    schedule={schedule},
    start_date=pendulum.datetime(2026, 1, 1, tz={tz!r}),
    catchup=False,
    max_active_runs=1,
    tags=["dbatch"],
) as dag:
    BashOperator(
        task_id="dbatch_run",
        bash_command={command!r},
        cwd={cwd!r},
        retries=0,
        execution_timeout=None,
    )
'''


def airflow(schedule: Any, target: ExportTarget) -> Exported:
    """A DAG file with one BashOperator task running ``dbatch run --json``."""
    if isinstance(schedule, Interval):
        when = f"datetime.timedelta(seconds={schedule.seconds:g})"
        tz = "UTC"
    elif isinstance(schedule, Arrival) or schedule is None:
        raise no_clock(schedule, "Airflow")
    else:
        expression, tz = cron_of(schedule, "Airflow")
        when = repr(expression)
    text = _DAG.format(
        imports="import datetime\n\n" if isinstance(schedule, Interval) else "",
        job=target.job,
        described=schedule.describe(),
        dag_id=f"dbatch_{target.slug.replace('-', '_')}",
        description=f"dbatch job {target.job} ({target.job_path.name})",
        schedule=when,
        tz=tz,
        command=shell_line(target.argv()),
        cwd=str(target.job_path.parent),
    )
    return Exported({f"dbatch_{target.slug.replace('-', '_')}.py": text})
