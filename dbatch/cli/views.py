"""What ``dbatch status`` and ``dbatch history`` print: tables of the JSON shape's objects."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import click

from .tables import BLANK, count, duration, print_table, short, when

__all__ = ["print_status", "print_history"]


def _error(batch: dict[str, Any]) -> str:
    error = batch.get("error")
    if not error:
        return ""
    name, message = error.get("class"), error.get("message")
    return ": ".join(p for p in (name, message) if p)


def _run_line(run: dict[str, Any]) -> str:
    took = f", took {duration(run['duration'])}" if run["duration"] is not None else ""
    return f"last run {run['run_id']}: {run['status']}, started {when(run['started'])} UTC{took}"


def print_status(job: str, last: dict[str, Any] | None, batches: Sequence[dict[str, Any]]) -> None:
    """The last run in one line, then one row per batch."""
    if last is not None:
        click.echo(_run_line(last))
    if not batches:
        click.echo("no batches recorded yet")
        return
    states: dict[str, int] = {}
    for b in batches:
        states[b["state"]] = states.get(b["state"], 0) + 1
    summary = ", ".join(f"{n:,} {state}" for state, n in sorted(states.items()))
    print_table(
        f"{len(batches):,} batch(es) of {job!r}: {summary}",
        [
            ("batch", "left"),
            ("state", "left"),
            ("tries", "right"),
            ("in", "right"),
            ("out", "right"),
            ("filtered", "right"),
            ("quarantined", "right"),
            ("took", "right"),
            ("checksum", "left"),
            ("error", "fold"),
        ],
        [
            [
                b["batch_id"],
                b["state"],
                count(b["attempts"]),
                count(b["rows_in"]),
                count(b["rows_out"]),
                count(b["rows_filtered"]),
                count(b["rows_quarantined"]),
                duration(b["duration"]),
                short(b["checksum"]),
                _error(b),
            ]
            for b in batches
        ],
    )


def print_history(job: str, runs: Sequence[dict[str, Any]]) -> None:
    """One row per run, oldest first."""
    if not runs:
        click.echo("no runs recorded yet")
        return
    print_table(
        f"{len(runs):,} run(s) of {job!r}",
        [
            ("run", "left"),
            ("status", "left"),
            ("started (UTC)", "left"),
            ("took", "right"),
            ("batches", "fold"),
            ("rows", "fold"),
            ("message", "fold2"),
        ],
        [
            [
                r["run_id"],
                r["status"],
                when(r["started"]),
                duration(r["duration"]),
                _batches(r),
                f"{count(r['rows_in'])} in, {count(r['rows_out'])} out, "
                f"{count(r['rows_quarantined'])} quarantined",
                r["message"] or BLANK,
            ]
            for r in runs
        ],
    )


def _batches(run: dict[str, Any]) -> str:
    """``4 planned: 3 committed, 1 failed``: the counts that are not zero."""
    parts = [
        f"{run[f'batches_{k}']:,} {k}"
        for k in ("committed", "skipped", "quarantined", "failed")
        if run.get(f"batches_{k}")
    ]
    return f"{count(run['batches_planned'])} planned" + (": " + ", ".join(parts) if parts else "")
