"""The command line: dbatch init | validate | run | plan | resume | replay | backfill | watch | export | status | history | quarantine | unlock | schema | demo."""

from __future__ import annotations

import click

from .demo import demo
from .inspecting import history, plan, schema, status, unlock
from .logs import log_options
from .quarantine import quarantine
from .running import backfill, replay, resume, run, watch
from .scaffold import init
from .scheduling import export
from .validate import validate

__all__ = ["main"]


@click.group(name="dbatch", context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="dbatch")
@log_options
def main() -> None:
    """Batch jobs on Dask: planned batches, exactly-once output, resume, quarantine.

    Exit status: 0 success, 1 a run that failed, 2 a usage or job file error
    (nothing ran). Results go to standard output; logs, progress and the
    dashboard link to standard error.
    """


for _command in (
    init,
    validate,
    run,
    resume,
    replay,
    backfill,
    watch,
    export,
    plan,
    status,
    history,
    quarantine,
    unlock,
    schema,
    demo,
):
    main.add_command(log_options(_command))  # -v, -q, --log-level after the command too
