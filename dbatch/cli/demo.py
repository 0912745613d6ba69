"""``dbatch demo``: write a landing area of transaction files and its job, then run it."""

from __future__ import annotations

from pathlib import Path

import click

from .common import json_option, scheduler_option, workers_option
from .running import run_job
from .settings import set_option

__all__ = ["demo"]


@click.command()
@click.option(
    "--dir", "directory", default="dbatch-demo", show_default=True, help="Where to write it."
)
@click.option("--days", default=5, show_default=True, help="Days of transaction files.")
@click.option(
    "--rows-per-file", default=20_000, show_default=True, help="Transactions per branch and day."
)
@scheduler_option
@workers_option
@json_option
@set_option
def demo(directory, days, rows_per_file, scheduler, workers, as_json, settings):
    """Write a landing area of transaction files and the reconciliation job, then run it."""
    from ..demo import write_job, write_landing_area

    root = Path(directory)
    info = write_landing_area(root, days=days, rows_per_file=rows_per_file)
    job_path = write_job(root)
    if not as_json:
        click.echo(
            f"wrote {info['files']} files, {info['rows']:,} transactions "
            f"({info['damaged_rows']} damaged on purpose) and {job_path}"
        )
    run_job(str(job_path), scheduler, workers, as_json, False, progress=True, settings=settings)
