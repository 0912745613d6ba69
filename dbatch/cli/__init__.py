"""The command line: dbatch run | plan | resume | replay | backfill | watch | export | status | history | unlock | demo."""

from __future__ import annotations

import click

from .demo import demo
from .inspecting import history, plan, status, unlock
from .running import backfill, replay, resume, run, watch
from .scheduling import export

__all__ = ["main"]


@click.group(name="dbatch")
@click.version_option(package_name="dbatch")
def main() -> None:
    """Batch jobs on Dask: planned batches, exactly-once output, resume, quarantine."""


for _command in (run, resume, replay, backfill, watch, export, plan, status, history, unlock, demo):
    main.add_command(_command)
