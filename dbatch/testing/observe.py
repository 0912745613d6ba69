"""Observing a run from a test: every event it emitted, the files it left behind."""

from __future__ import annotations

import hashlib
import os
import threading
from collections import Counter
from pathlib import Path

from ..core import Event

__all__ = ["EventLog", "data_files", "leftovers"]


class EventLog:
    """A run listener that keeps every event.

    Examples
    --------
    >>> log = EventLog()
    >>> result = pipeline.run(listeners=[log])  # doctest: +SKIP
    >>> log.started()  # doctest: +SKIP
    Counter({'b-1f2e...': 1, ...})
    """

    def __init__(self) -> None:
        self.events: list[Event] = []
        self._lock = threading.Lock()

    def __call__(self, event: Event) -> None:
        with self._lock:
            self.events.append(event)

    def of(self, kind: str) -> list[Event]:
        """The events of one kind, in order."""
        return [e for e in self.events if e.kind == kind]

    def started(self) -> Counter:
        """How many attempts each batch was started with in this run."""
        return Counter(e.batch_id for e in self.of("batch_started"))


def data_files(path: str | os.PathLike) -> dict[str, str]:
    """``relative path -> sha256`` of every data file below ``path`` (``_manifest`` etc. excluded).

    Two outputs are byte-identical when these are equal.

    Examples
    --------
    >>> data_files("out/daily_totals")  # doctest: +SKIP
    {'part-b-3f1c2a9e0d11.parquet': '9b1d...'}
    """
    root = Path(path).resolve()
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root)
        if p.is_file() and not any(part.startswith(("_", ".")) for part in rel.parts):
            out[str(rel)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def leftovers(work_area: str | os.PathLike, output: str | os.PathLike | None = None) -> list[str]:
    """Files a run should not leave behind: staging, replaced batches, half-built versions.

    Examples
    --------
    >>> leftovers(pipeline.work_area(), "out/daily_totals")  # doctest: +SKIP
    []
    """
    work = Path(work_area)
    found = [str(p) for p in (work / "staging").rglob("*")] if (work / "staging").exists() else []
    if (work / "batches").exists():
        found += [str(p) for p in (work / "batches").iterdir() if ".old-" in p.name]
    if output is not None:
        out = Path(output)
        versions = out.parent / f".{out.name}.versions"
        if versions.exists():
            found += [str(p) for p in versions.iterdir() if p.name.endswith(".building")]
        found += [str(p) for p in out.parent.glob(f".{out.name}.link-*")]
    return found
