"""The command line: dbatch init | validate | run | plan | resume | replay | backfill | watch | status | history | quarantine | unlock | demo."""

from __future__ import annotations

import click

from .demo import demo
from .inspecting import history, plan, status, unlock
from .quarantine import quarantine
from .running import backfill, replay, resume, run, watch
from .scaffold import init
from .validate import validate

__all__ = ["main"]


@click.group(name="dbatch")
@click.version_option(package_name="dbatch")
def main() -> None:
    """Batch jobs on Dask: planned batches, exactly-once output, resume, quarantine."""


for _command in (
    init,
    validate,
    run,
    resume,
    replay,
    backfill,
    watch,
    plan,
    status,
    history,
    quarantine,
    unlock,
    demo,
):
    main.add_command(_command)
