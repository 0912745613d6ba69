"""What an export is made of: the target, its files, schedules as cron lines and systemd calendars."""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import JobSpecError
from ..triggers import Arrival, Cron, Interval

__all__ = [
    "ExportTarget",
    "Exported",
    "TARGETS",
    "interval_cron",
    "cron_to_calendar",
    "cron_of",
    "no_clock",
    "shell_line",
]

TARGETS = ("cron", "systemd", "k8s-cronjob", "airflow")


@dataclass(frozen=True)
class ExportTarget:
    """What an export needs besides the schedule: the job, the command and where it runs."""

    job: str  # the job's name
    job_path: Path  # the job file, absolute
    command: Sequence[str] = ("dbatch",)  # how to call dbatch there
    cluster: str | None = None  # a profile name passed on as --cluster
    image: str = "dbatch:latest"  # Kubernetes: the container image holding dbatch and the job
    cpu: str = "2"
    memory: str = "4Gi"
    claim: str | None = None  # Kubernetes: a PersistentVolumeClaim for the work area
    job_path_in_image: str | None = None  # Kubernetes: default /job/<file name>

    def argv(self, job_path: str | None = None) -> list[str]:
        """``dbatch run JOB --json [--cluster NAME]``."""
        args = [*self.command, "run", job_path or str(self.job_path), "--json"]
        return args + (["--cluster", self.cluster] if self.cluster else [])

    @property
    def slug(self) -> str:
        """The job's name as Kubernetes and systemd names allow (lower case, digits, ``-``)."""
        text = re.sub(r"[^a-z0-9-]+", "-", self.job.lower()).strip("-") or "job"
        return text[:40].rstrip("-")


@dataclass(frozen=True)
class Exported:
    """The files of an export: name -> text (several for systemd)."""

    files: dict[str, str] = field(default_factory=dict)

    def write(self, folder: Path) -> list[Path]:
        """Write every file into ``folder``; the paths written."""
        folder.mkdir(parents=True, exist_ok=True)
        written = []
        for name, text in self.files.items():
            (folder / name).write_text(text)
            written.append(folder / name)
        return written

    def text(self) -> str:
        """Every file, each after a ``# <name>`` line (what the command prints)."""
        if len(self.files) == 1:
            return next(iter(self.files.values()))
        return "\n".join(f"# {name}\n{text}" for name, text in self.files.items())


def interval_cron(seconds: float) -> str | None:
    """The cron expression that fires every ``seconds``, when there is one.

    Examples
    --------
    >>> interval_cron(900), interval_cron(6 * 3600), interval_cron(86400), interval_cron(45 * 60)
    ('*/15 * * * *', '0 */6 * * *', '0 0 * * *', None)
    """
    if seconds % 60:
        return None
    minutes = int(seconds // 60)
    if minutes < 60 and 60 % minutes == 0:
        return "* * * * *" if minutes == 1 else f"*/{minutes} * * * *"
    if minutes % 60 == 0:
        hours = minutes // 60
        if hours < 24 and 24 % hours == 0:
            return "0 * * * *" if hours == 1 else f"0 */{hours} * * *"
        if hours == 24:
            return "0 0 * * *"
        if hours == 24 * 7:
            return "0 0 * * 0"
    return None


_DAYS = ("Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat")


def _field(values: list[Any], names: Sequence[str] | None = None, width: int = 2) -> str:
    """Cron's expanded values -> systemd's ``1,5..7`` (``*`` stays ``*``)."""
    if values == ["*"]:
        return "*"
    numbers = sorted({int(v) for v in values})
    runs: list[list[int]] = []
    for n in numbers:
        if runs and n == runs[-1][-1] + 1:
            runs[-1].append(n)
        else:
            runs.append([n])

    def show(n: int) -> str:
        return names[n % 7] if names else f"{n:0{width}d}"

    return ",".join(
        show(r[0])
        if len(r) == 1
        else f"{show(r[0])}..{show(r[-1])}"
        if len(r) > 2
        else f"{show(r[0])},{show(r[1])}"
        for r in runs
    )


def cron_to_calendar(expression: str, tz: str = "UTC") -> list[str]:
    """A cron expression -> systemd ``OnCalendar=`` values (two when cron's day fields OR).

    Examples
    --------
    >>> cron_to_calendar("30 2 * * 1-5")
    ['Mon..Fri *-*-* 02:30:00 UTC']
    >>> cron_to_calendar("0 6 1 * 0", "Europe/Berlin")
    ['*-*-01 06:00:00 Europe/Berlin', 'Sun *-*-* 06:00:00 Europe/Berlin']
    """
    from croniter import croniter

    minutes, hours, days, months, weekdays = croniter(expression).expanded[:5]
    flat = [str(v) for f in (minutes, hours, days, months, weekdays) for v in f]
    if any(not v.isdigit() and v != "*" for v in flat):
        raise JobSpecError(
            f"cron {expression!r} uses a form systemd calendars lack (L, W or #); "
            "write the days out, or export --to cron",
            key="schedule.cron",
        )
    clock = f"{_field(hours)}:{_field(minutes)}:00 {tz}"
    month, day = _field(months), _field(days)
    if days != ["*"] and weekdays != ["*"]:  # cron fires on either; systemd needs both lines
        return [f"*-{month}-{day} {clock}", f"{_field(weekdays, _DAYS)} *-{month}-* {clock}"]
    prefix = "" if weekdays == ["*"] else _field(weekdays, _DAYS) + " "
    return [f"{prefix}*-{month}-{day} {clock}"]


def cron_of(schedule: Any, target: str) -> tuple[str, str]:
    """(cron expression, time zone) of a schedule, or an error naming what to use instead."""
    if isinstance(schedule, Cron):
        return schedule.expression, schedule.tz
    if isinstance(schedule, Interval):
        expression = interval_cron(schedule.seconds)
        if expression is None:
            raise JobSpecError(
                f"{schedule.describe()} is not a cron schedule and no cron expression says "
                f"the same; {target} needs one: use schedule: {{cron: ...}}, or export --to "
                "systemd or airflow, which take any interval",
                key="schedule",
            )
        return expression, "UTC"
    raise no_clock(schedule, target)


def no_clock(schedule: Any, target: str) -> JobSpecError:
    if isinstance(schedule, Arrival):
        return JobSpecError(
            f"an arrival schedule ({schedule.describe()}) needs the watch loop, not a clock; "
            f"{target} cannot run it: export --to systemd (a service running `dbatch watch`), "
            "or give the job a cron schedule",
            key="schedule",
        )
    return JobSpecError(
        'the job has no schedule; add one (schedule: {cron: "0 2 * * *"} or {every: 1h}) '
        "or pass --schedule",
        key="schedule",
    )


def shell_line(argv: Sequence[str]) -> str:
    """``argv`` quoted for a POSIX shell."""
    return shlex.join(argv)
