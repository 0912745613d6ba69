"""``dbatch quarantine``: the rows and files a job set aside, with their reason and place."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from .common import echo_json, json_option, load
from .shapes import document, quarantine_object, records
from .tables import print_table

__all__ = ["quarantine", "location"]


def location(row: dict[str, Any], base: Path | None = None) -> str:
    """Where a quarantined row or file is: ``file:line``, ``file (whole file)``, or its step.

    A path below ``base`` (the job file's folder) is shown relative to it.
    """
    source = str(row["source"])
    if base is not None:
        try:
            source = str(Path(source).relative_to(base))
        except ValueError:
            pass
    line = row.get("line")
    if line is not None and str(line) not in ("<NA>", "nan"):
        return f"{source}:{int(line)}"
    raw = row.get("raw")
    if raw is None or raw != raw:  # None or NaN: a whole file
        return f"{source} (whole file)"
    return f"{source} (a row)"


@click.command()
@click.argument("job_path", metavar="JOB.yaml")
@click.option(
    "--kind", "kinds", multiple=True, help="Only this kind (type, allowed, ...); repeatable."
)
@click.option("--batch", "batches", multiple=True, help="Only this batch id; repeatable.")
@click.option(
    "--limit",
    type=click.IntRange(min=0),
    default=200,
    show_default=True,
    help="Rows shown in the table (0: all); --json always prints all.",
)
@json_option
def quarantine(job_path, kinds, batches, limit, as_json):
    """The rows and files set aside by a job: kind, reason, file and line, batch, run.

    From the work area's quarantine.parquet (what the published output left out)
    and from batches refused for too many bad rows (state ``rejected``).
    """
    from ..workarea import WorkArea

    job = load(job_path)
    frame = WorkArea(job.pipeline.work_area()).quarantined()
    if kinds:
        frame = frame[frame["kind"].isin(kinds)]
    if batches:
        frame = frame[frame["batch_id"].isin(batches)]
    base = Path(job_path).resolve().parent
    rows = [quarantine_object(r, location(r, base)) for r in records(frame)]
    if as_json:
        echo_json(document("quarantine", job.pipeline.name, count=len(rows), rows=rows))
        return
    if not rows:
        which = " matching the filters" if kinds or batches else ""
        click.echo(f"nothing quarantined{which} for {job.pipeline.name!r}")
        return
    _print(job.pipeline.name, rows, limit)


def _print(job: str, rows: list[dict[str, Any]], limit: int) -> None:
    from collections import Counter

    shown = rows if not limit else rows[:limit]
    by_kind = ", ".join(f"{k} {n:,}" for k, n in Counter(r["kind"] for r in rows).most_common())
    more = (
        f"; {len(rows) - len(shown):,} more (--limit 0, or --json)"
        if len(shown) < len(rows)
        else ""
    )
    columns = [("kind", "left"), ("reason", "fold2"), ("location", "fold2"), ("batch", "left")]
    columns.append(("run", "left"))
    keys = ["kind", "reason", "location", "batch_id", "run_id"]
    if any(r["state"] != "published" for r in rows):  # a refused batch's rows
        columns.append(("state", "left"))
        keys.append("state")
    print_table(
        f"{len(rows):,} quarantined row(s) and file(s) of {job!r}: {by_kind}",
        columns,
        [[str(r[k]) for k in keys] for r in shown],
        caption=f"the rows' text: dbatch quarantine JOB --json{more}",
    )
