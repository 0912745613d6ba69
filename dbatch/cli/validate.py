"""``dbatch validate``: every check of a job that needs no cluster, each problem on one line."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ..errors import DBatchError, SinkError

if TYPE_CHECKING:
    from ..core import Plan
    from ..spec import JobFile

__all__ = ["validate", "check_sink_target", "check_ledger"]


def _one_line(error: Exception) -> str:
    return " ".join(str(error).split())


def _can_write(path: Path) -> bool:
    """Whether ``path`` can be written: the file or folder itself, or the folder it would go in."""
    if path.exists():
        return os.access(path, os.W_OK | (os.X_OK if path.is_dir() else 0))
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder.is_dir() and os.access(folder, os.W_OK | os.X_OK)


def _check_folder(path: Path, what: str) -> None:
    if not _can_write(path):
        raise SinkError(
            f"{what} {str(path)!r} is not writable here (nor the folder it would go in); "
            "choose another path or fix the permissions"
        )


def _check_database(url: str, what: str) -> None:
    import sqlalchemy as sa

    from ..database import redact_url

    engine = sa.create_engine(url)
    try:
        with engine.connect() as con:
            con.execute(sa.text("SELECT 1"))
    except sa.exc.SQLAlchemyError as e:
        reason = " ".join(str(getattr(e, "orig", None) or e).split())
        raise SinkError(
            f"{what} {redact_url(url)} cannot be reached: {reason}; start it, or fix the URL"
        ) from None
    finally:
        engine.dispose()


def check_sink_target(sink: Any) -> str:
    """Check where ``sink`` writes without writing; a SinkError names what is wrong.

    Returns a few words on the target for the summary.
    """
    from ..sinks.base import PublishedDirectory
    from ..sinks.files import CsvSink, ParquetSink
    from ..sinks.netcdf import NetCDFSink
    from ..sinks.report.sink import ReportSink
    from ..sinks.sql import SqlSink

    if isinstance(sink, SqlSink):
        if sink.url.startswith("sqlite:///"):
            _check_folder(Path(sink.url.removeprefix("sqlite:///")), "the sink's database")
        else:
            _check_database(sink.url, "the sink's database")
        return f"{sink.location} reachable"
    if isinstance(sink, (ParquetSink, CsvSink, NetCDFSink, ReportSink)):
        root = Path(sink.path)
        PublishedDirectory(root).check_target()
        _check_folder(root, "the output folder")
        return f"{root} writable"
    if sink.location and "://" not in sink.location:
        _check_folder(Path(sink.location), "the output")
        return f"{sink.location} writable"
    return f"{sink.describe()} (not checked before a run)"


def check_ledger(url: str) -> str:
    """Check that the ledger can be opened (a SQLite file's folder is writable)."""
    from ..database import redact_url

    if url.startswith("sqlite:///"):
        _check_folder(Path(url.removeprefix("sqlite:///")), "the ledger")
    else:
        _check_database(url, "the ledger")
    return redact_url(url)


def _checks(job: JobFile) -> list[tuple[str, Callable[[], str]]]:
    """(name, check) pairs; a check returns a summary or raises a DBatchError."""
    pipeline = job.pipeline
    planned: list[Plan] = []

    def source() -> str:
        planned.append(job.plan())
        plan = planned[0]
        return f"{pipeline.source.describe()}: {plan.n_units:,} units in {len(plan):,} batches"

    def steps() -> str:
        if not planned:
            return "not checked (the source could not be listed)"
        notes = pipeline.check(planned[0])
        if not notes:
            return f"{len(pipeline.steps)} step(s); the SQL compiles over the batches' columns"
        return f"{len(pipeline.steps)} step(s); " + "; ".join(notes)

    return [
        ("source", source),
        ("steps", steps),
        ("sink", lambda: check_sink_target(pipeline.sink)),
        ("ledger", lambda: check_ledger(pipeline.ledger_url())),
    ]


def _problem(job_path: str, check: str, error: Exception) -> str:
    """One line: the job file (unless the message names it already), the check, the error."""
    text = _one_line(error)
    where = "" if text.startswith(str(job_path)) else f"{job_path}: {check}: "
    return f"error: {where}{text}"


@click.command()
@click.argument("job_path", metavar="JOB.yaml")
def validate(job_path):
    """Check a job without a cluster: the file, its options, the source's listing,
    the SQL steps (compiled in DuckDB over the batches' columns), the sink's target
    and the ledger. Exit 0 with a summary, or 2 with one line per problem.
    """
    from ..spec import load_job

    try:
        job = load_job(job_path)
    except DBatchError as e:
        click.echo(f"error: {_one_line(e)}", err=True)
        sys.exit(2)
    lines, problems = [], []
    for name, check in _checks(job):
        try:
            lines.append(f"  {name + ':':8s}{check()}")
        except (DBatchError, OSError) as e:
            problems.append(_problem(job_path, name, e))
    if problems:
        for line in problems:
            click.echo(line, err=True)
        sys.exit(2)
    click.echo(f"OK {job_path}: job {job.pipeline.name!r}")
    click.echo("\n".join(lines))
