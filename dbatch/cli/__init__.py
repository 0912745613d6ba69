"""The command line: dbatch run | plan | resume | replay | backfill | watch | status | history | unlock | schema | demo."""

from __future__ import annotations

import click

from .demo import demo
from .inspecting import history, plan, schema, status, unlock
from .running import backfill, replay, resume, run, watch

__all__ = ["main"]


@click.group(name="dbatch")
@click.version_option(package_name="dbatch")
def main() -> None:
    """Batch jobs on Dask: planned batches, exactly-once output, resume, quarantine."""


for _command in (run, resume, replay, backfill, watch, plan, status, history, unlock, schema, demo):
    main.add_command(_command)
