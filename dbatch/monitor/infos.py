"""What a run keeps of each batch it has seen: a dict while it is in flight, a tuple once plain.

A run of 10^5 batches commits most of them without anything to say (one attempt, no
rows or files set aside): such a batch's line of the run's result is kept as a
tuple of its values, a third of the memory of the dict, and made a dict again when
asked for. A batch that retried, failed, was quarantined, recovered or skipped keeps
its dict: there are few, and their lines say more.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Mapping
from typing import Any

from ..core import ROW_COUNTS

__all__ = ["BatchInfos"]

#: The keys of a plain committed batch's line, in the order its events set them.
PLAIN = (
    "batch_id",
    "fingerprint",
    "attempt",
    "units",
    "bytes",
    "state",
    "attempts",
    *ROW_COUNTS,
    "files_quarantined",
    "rows_by_kind",
    "duration",
    "checksum",
    "worker",
    "quarantine_kinds",
    "peak_memory",
)
#: What every plain batch's line has, or has from its other values: not in the tuple.
_SAME = ("batch_id", "state", "attempts", "rows_by_kind", "quarantine_kinds")
#: What the tuple holds, in this order.
_KEPT = tuple(k for k in PLAIN if k not in _SAME)


class BatchInfos(Mapping[str, dict[str, Any]]):
    """Batch id -> the batch's line (a dict), in the order the batches were first seen."""

    def __init__(self) -> None:
        self._lines: dict[str, dict[str, Any] | tuple[Any, ...]] = {}

    def open(self, batch_id: str) -> dict[str, Any]:
        """The batch's line, to change: a new one, or a plain one made a dict again."""
        line = self._lines.get(batch_id)
        if isinstance(line, dict):
            return line
        self._lines[batch_id] = full = (
            {"batch_id": batch_id} if line is None else _expand(batch_id, line)
        )
        return full

    def settle(self, batch_id: str) -> None:
        """Keep the batch's line as a tuple if it is plain (committed, nothing to say)."""
        line = self._lines.get(batch_id)
        if isinstance(line, dict) and _plain(line):
            if isinstance(line["worker"], str):
                line["worker"] = sys.intern(line["worker"])  # a few workers, many batches
            self._lines[batch_id] = tuple(line[k] for k in _KEPT)

    def __getitem__(self, batch_id: str) -> dict[str, Any]:
        line = self._lines[batch_id]
        return line if isinstance(line, dict) else _expand(batch_id, line)

    def __iter__(self) -> Iterator[str]:
        return iter(self._lines)

    def __len__(self) -> int:
        return len(self._lines)

    def __contains__(self, batch_id: object) -> bool:
        return batch_id in self._lines


def _plain(line: dict[str, Any]) -> bool:
    return (
        tuple(line) == PLAIN
        and line["state"] == "committed"
        and line["attempt"] == line["attempts"]
        and not line["rows_by_kind"]
        and not line["quarantine_kinds"]
        and not line["rows_quarantined"]
        and not line["files_quarantined"]
    )


def _expand(batch_id: str, kept: tuple[Any, ...]) -> dict[str, Any]:
    """The line as its events made it: ``PLAIN``'s keys, in order."""
    values = dict(zip(_KEPT, kept, strict=True))
    same = {
        "batch_id": batch_id,
        "state": "committed",
        "attempts": values["attempt"],
        "rows_by_kind": {},
        "quarantine_kinds": {},
    }
    return {k: same[k] if k in same else values[k] for k in PLAIN}
