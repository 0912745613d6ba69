"""Plain data: units, batches, plans, batch results, run events and their vocabularies (no Dask)."""

from __future__ import annotations

import enum
import hashlib
import html
import json
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "Unit",
    "Batch",
    "Plan",
    "BatchResult",
    "Event",
    "EventKind",
    "BatchState",
    "RunStatus",
    "BadInputMode",
    "QuarantinedFile",
    "Part",
    "BatchRecord",
    "ROW_COUNTS",
    "BATCH_COLUMNS",
    "digest",
    "row_balance",
    "human_bytes",
]

#: The row counts of a batch or a run: rows in = rows out + rows filtered + rows quarantined.
ROW_COUNTS = ("rows_in", "rows_out", "rows_filtered", "rows_quarantined")

#: The columns a table of batches shows first (the CLI, the notebook result, the report).
BATCH_COLUMNS = ("batch_id", "state", "attempts", *ROW_COUNTS)


class BadInputMode(enum.StrEnum):
    """What bad files and rows do: kept aside with their reason, only counted, or stop the run."""

    QUARANTINE = "quarantine"
    DROP = "drop"
    FAIL_FAST = "fail_fast"


class BatchState(enum.StrEnum):
    """Where a batch stands, in the ledger and in a run's summary."""

    PLANNED = "planned"
    RUNNING = "running"
    RETRYING = "retrying"
    COMMITTED = "committed"
    QUARANTINED = "quarantined"
    FAILED = "failed"


class RunStatus(enum.StrEnum):
    """How a run ended (``running`` while it goes on).

    ``abandoned``: its driver stopped without saying how the run ended (killed, or
    its machine went down); the next run of the job, taking over the lock, says so.
    """

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    SUCCEEDED_WITH_QUARANTINE = "succeeded_with_quarantine"
    NOTHING_TO_DO = "nothing_to_do"
    FAILED = "failed"
    ABANDONED = "abandoned"


class EventKind(enum.StrEnum):
    """The things that happen in a run, in the order a run reaches them."""

    RUN_STARTED = "run_started"
    BATCH_STARTED = "batch_started"
    BATCH_RETRY = "batch_retry"
    BATCH_COMMITTED = "batch_committed"
    BATCH_SKIPPED = "batch_skipped"
    BATCH_QUARANTINED = "batch_quarantined"
    BATCH_FAILED = "batch_failed"
    PUBLISHED = "published"
    FINISHED = "finished"


def digest(*parts: Any, length: int = 16) -> str:
    """A short, stable hex digest of JSON-serialisable parts.

    Examples
    --------
    >>> digest("a", [1, 2], length=8)
    '8f72e7aa'
    """
    payload = _ENCODER.encode(parts)
    return hashlib.sha256(payload.encode()).hexdigest()[:length]


#: One encoder for every digest (the same text as ``json.dumps`` with these options):
#: planning 10^5 files makes 2 x 10^4 digests.
_ENCODER = json.JSONEncoder(sort_keys=True, default=str, separators=(",", ":"))


def row_balance(counts: Mapping[str, Any]) -> str:
    """The row counts as one balance, with thousands separators.

    Examples
    --------
    >>> counts = {"rows_in": 1200, "rows_out": 1100, "rows_filtered": 90, "rows_quarantined": 10}
    >>> row_balance(counts)
    '1,200 in = 1,100 out + 90 filtered + 10 quarantined'
    """
    n_in, n_out, n_filtered, n_bad = (int(counts.get(k) or 0) for k in ROW_COUNTS)
    return f"{n_in:,} in = {n_out:,} out + {n_filtered:,} filtered + {n_bad:,} quarantined"


@dataclass(frozen=True)
class Unit:
    """The smallest thing a source can name: a file, a key range, a time slice, a page range.

    ``key`` names the unit (a path or a range), ``size`` is an estimate in bytes,
    ``time`` an optional timestamp (seconds since the epoch) used by time-window
    batching, and ``identity`` what changes when the unit's content changes
    (size and modification time for a file, bounds for a query).
    """

    key: str
    size: int = 0
    time: float | None = None
    identity: tuple[tuple[str, Any], ...] = ()

    def describe(self) -> dict[str, Any]:
        return {"key": self.key, "size": self.size, "time": self.time, **dict(self.identity)}


@dataclass(frozen=True)
class Batch:
    """A group of units processed and committed together.

    ``id`` is stable across runs for the same units; ``fingerprint`` changes
    whenever a unit's identity or the pipeline's definition changes.
    """

    id: str
    units: tuple[Unit, ...]
    fingerprint: str
    index: int = 0

    @property
    def size(self) -> int:
        return sum(u.size for u in self.units)

    @property
    def keys(self) -> list[str]:
        return [u.key for u in self.units]

    @classmethod
    def from_units(cls, units: Iterable[Unit], index: int, salt: str = "") -> Batch:
        units = tuple(units)
        keys = [u.key for u in units]
        batch_id = f"b-{digest(keys, length=12)}"
        fingerprint = digest(salt, [(u.key, u.size, list(u.identity)) for u in units])
        return cls(id=batch_id, units=units, fingerprint=fingerprint, index=index)


@dataclass(frozen=True)
class Plan:
    """What a run will do: the batches of a pipeline, as plain data."""

    job: str
    batches: tuple[Batch, ...]
    source: str = ""
    sink: str = ""

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[Batch]:
        return iter(self.batches)

    def __getitem__(self, i: int) -> Batch:
        return self.batches[i]

    def only(self, batches: Iterable[Batch]) -> Plan:
        """The same plan with just ``batches`` (a backfill's range)."""
        return Plan(job=self.job, batches=tuple(batches), source=self.source, sink=self.sink)

    @property
    def n_units(self) -> int:
        return sum(len(b.units) for b in self.batches)

    @property
    def total_bytes(self) -> int:
        return sum(b.size for b in self.batches)

    def to_records(self) -> list[dict[str, Any]]:
        return [
            {
                "batch_id": b.id,
                "units": len(b.units),
                "bytes": b.size,
                "fingerprint": b.fingerprint,
                "first": _hide_credentials(b.units[0].key) if b.units else "",
                "last": _hide_credentials(b.units[-1].key) if b.units else "",
            }
            for b in self.batches
        ]

    def to_frame(self) -> Any:
        import pandas as pd

        return pd.DataFrame.from_records(
            self.to_records(),
            columns=["batch_id", "units", "bytes", "fingerprint", "first", "last"],
        )

    def __repr__(self) -> str:
        head = (
            f"Plan(job={self.job!r}, batches={len(self.batches)}, units={self.n_units}, "
            f"bytes={human_bytes(self.total_bytes)})"
        )
        lines = [head]
        for r in self.to_records()[:10]:
            lines.append(
                f"  {r['batch_id']}  {r['units']:>5} units  {human_bytes(r['bytes']):>9}  {r['first']}"
            )
        if len(self.batches) > 10:
            lines.append(f"  ... {len(self.batches) - 10} more")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        rows = "".join(
            f"<tr><td><code>{html.escape(r['batch_id'])}</code></td><td>{r['units']}</td>"
            f"<td>{human_bytes(r['bytes'])}</td><td>{html.escape(r['first'])}</td></tr>"
            for r in self.to_records()[:20]
        )
        more = (
            f"<tr><td colspan=4>… {len(self.batches) - 20} more</td></tr>"
            if len(self.batches) > 20
            else ""
        )
        return (
            f"<div><strong>dbatch plan</strong> <code>{html.escape(self.job)}</code>: "
            f"{len(self.batches)} batches, {self.n_units} units, {human_bytes(self.total_bytes)}"
            f"<br><small>{html.escape(self.source)} → {html.escape(self.sink)}</small>"
            "<table><thead><tr><th>batch</th><th>units</th><th>size</th><th>first unit</th></tr>"
            f"</thead><tbody>{rows}{more}</tbody></table></div>"
        )


@dataclass(frozen=True)
class QuarantinedFile:
    """A whole unit set aside: which one, what kind of damage, and the message."""

    key: str
    kind: str
    message: str


@dataclass(frozen=True)
class BatchRecord:
    """What the ledger holds about a batch's last attempt: enough to plan the next run."""

    batch_id: str
    fingerprint: str
    state: str
    run_id: str
    attempts: int


@dataclass(frozen=True)
class Part:
    """A committed piece of output: a batch's files, or one reduce bucket's."""

    name: str
    directory: Path
    rows: int = 0


@dataclass
class BatchResult:
    """What a worker reports back for one batch attempt (small; no data)."""

    batch_id: str
    fingerprint: str
    staging: str = ""
    rows_in: int = 0
    rows_out: int = 0
    rows_filtered: int = 0
    rows_quarantined: int = 0
    files_quarantined: list[QuarantinedFile] = field(default_factory=list)
    #: Rows quarantined per kind (``parse``, ``cast``, a rule's name...).
    rows_by_kind: dict[str, int] = field(default_factory=dict)
    checksum: str | None = None  # of the staged output's bytes; None when nothing was staged
    duration: float = 0.0
    worker: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    #: Rows and files set aside, by kind (``type``, ``allowed``, ``unreadable``...).
    quarantine_kinds: dict[str, int] = field(default_factory=dict)
    #: Bytes the worker process grew by while it ran the batch, at the peak.
    peak_memory: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> BatchResult:
        values = dict(raw)
        values["files_quarantined"] = [
            QuarantinedFile(**f) for f in values.get("files_quarantined", [])
        ]
        return cls(**values)

    @property
    def has_quarantine(self) -> bool:
        return bool(self.rows_quarantined or self.files_quarantined)


@dataclass(frozen=True)
class Event:
    """Something that happened in a run; every monitor consumes these and nothing else.

    ``kind`` is an ``EventKind``; ``data`` holds what the kind carries (counts,
    attempt, error class and message, ...).
    """

    kind: EventKind
    run_id: str
    job: str
    batch_id: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    time: float = field(default_factory=time.time)


def _hide_credentials(key: str) -> str:
    """``s3://key:secret@bucket/x`` -> ``s3://***@bucket/x``, for showing unit keys."""
    from .redact import redact

    return redact(key)


def human_bytes(n: float) -> str:
    """``1536`` -> ``'1.5 KiB'``.

    Examples
    --------
    >>> human_bytes(3 * 1024**2)
    '3.0 MiB'
    """
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"
