"""Readable tables for the terminal (rich): counts with separators, durations, UTC times."""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import datetime
from typing import Any

__all__ = ["console", "count", "duration", "when", "short", "print_table"]

#: Shown for a value that is not there: never ``None`` or ``nan``.
BLANK = "-"


def console() -> Any:
    """A rich Console on standard output.

    Not a terminal (a pipe, a file, a cron mail): at least 200 columns, so that ids,
    checksums and messages are not cut short.
    """
    from rich.console import Console

    out = Console(highlight=False, soft_wrap=False)
    if not out.is_terminal:
        width = max(200, int(os.environ.get("COLUMNS") or 0))
        out = Console(highlight=False, width=width)
    return out


def count(value: Any) -> str:
    """``12345`` -> ``12,345``; nothing -> ``-``."""
    return BLANK if value is None else f"{int(value):,}"


def duration(seconds: float | None) -> str:
    """``0.42`` -> ``0.42 s``, ``83`` -> ``1 min 23 s``, ``7322`` -> ``2 h 2 min``."""
    if seconds is None:
        return BLANK
    if seconds < 10:
        return f"{seconds:.2f} s"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def when(iso: str | None) -> str:
    """An ISO 8601 time of the JSON shape -> ``2026-11-02 06:15:04`` (UTC, whole seconds)."""
    if not iso:
        return BLANK
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).strftime("%Y-%m-%d %H:%M:%S")


def short(text: str | None, width: int = 12) -> str:
    """The first ``width`` characters (a checksum, an id), or ``-``."""
    return BLANK if not text else text[:width]


def print_table(
    title: str,
    columns: Sequence[tuple[str, str]],
    rows: Sequence[Sequence[str]],
    *,
    caption: str | None = None,
) -> None:
    """Print a table; ``columns`` are (header, justify).

    ``justify`` is ``left`` or ``right`` (kept on one line), or ``fold`` or ``fold2``
    (wrapped to what is left of the width; at least 12 or 24 characters).
    """
    from rich import box
    from rich.table import Table

    table = Table(title=title, caption=caption, box=box.SIMPLE_HEAD, title_justify="left")
    for header, justify in columns:
        wraps = justify.startswith("fold")
        table.add_column(
            header,
            justify="left" if wraps else justify,  # type: ignore[arg-type]
            overflow="fold",
            no_wrap=not wraps,  # only the wrapped columns give up width
            min_width=24 if justify == "fold2" else 12 if wraps else None,
        )
    for row in rows:
        table.add_row(*row)
    console().print(table)
