"""Hand a job's schedule to a scheduler that already runs: cron, systemd, Kubernetes, Airflow.

Each export runs ``dbatch run JOB --json`` at the times of the job's schedule;
the run itself stays dbatch's (the plan minus the ledger, its lock, its retries),
so a missed or overlapping start does no harm. ``Cron`` schedules carry over as
they are; an ``Interval`` becomes a cron expression where one says the same
(every 15 minutes, every 6 hours), or a systemd ``OnUnitActiveSec=`` / an Airflow
``timedelta``; an ``Arrival`` schedule needs the watch loop, which systemd keeps
running as a service.
"""

from __future__ import annotations

from typing import Any

from ..errors import JobSpecError
from .model import TARGETS, Exported, ExportTarget, cron_to_calendar, interval_cron

__all__ = ["ExportTarget", "Exported", "TARGETS", "export", "interval_cron", "cron_to_calendar"]


def export(to: str, schedule: Any, target: ExportTarget) -> Exported:
    """Export the job of ``target`` with ``schedule`` for ``to`` (one of ``TARGETS``).

    Examples
    --------
    >>> target = ExportTarget("nightly", Path("/srv/jobs/nightly.yaml"))
    >>> print(export("cron", Cron("0 2 * * *"), target).text())  # doctest: +ELLIPSIS
    # dbatch job 'nightly' ...
    0 2 * * * cd /srv/jobs && dbatch run /srv/jobs/nightly.yaml --json >> ...
    """
    from . import formats

    makers = {
        "cron": formats.crontab,
        "systemd": formats.systemd,
        "k8s-cronjob": formats.k8s_cronjob,
        "airflow": formats.airflow,
    }
    if to not in makers:
        raise JobSpecError(f"cannot export to {to!r}; choose one of {', '.join(TARGETS)}")
    return makers[to](schedule, target)
