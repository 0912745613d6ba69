"""``dbatch init``: a commented job file and a small sample input that runs as it is."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import JobSpecError
from .common import fail
from .templates import TEMPLATES

__all__ = ["init"]


@click.command()
@click.argument("directory", default=".", metavar="[DIR]")
@click.option(
    "--template",
    type=click.Choice(sorted(TEMPLATES)),
    default="etl",
    show_default=True,
    help="; ".join(f"{t.name}: {t.summary}" for t in TEMPLATES.values()),
)
@click.option("--force", is_flag=True, help="Overwrite a job.yaml that is already there.")
def init(directory, template, force):
    """Write DIR/job.yaml (commented) and a sample input it runs on.

    Then: dbatch validate DIR/job.yaml, dbatch run DIR/job.yaml.
    """
    root = Path(directory)
    job_path = root / "job.yaml"
    if job_path.exists() and not force:
        fail(
            JobSpecError(
                f"{job_path} already exists; choose another DIR, or pass --force to overwrite it"
            )
        )
    chosen = TEMPLATES[template]
    root.mkdir(parents=True, exist_ok=True)
    written = chosen.write_sample(root)
    job_path.write_text(chosen.job_text(root))
    click.echo(f"wrote {job_path} ({chosen.summary}) and {len(written)} sample file(s):")
    for path in written:
        click.echo(f"  {path}")
    click.echo(f"next: dbatch validate {job_path} && dbatch run {job_path}")
