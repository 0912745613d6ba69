"""What a run is given and what it tells: the pipeline it needs, its options, its id,
and the data of a batch's events."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from .core import Batch, BatchResult, Plan
from .listeners import Listener
from .protocols import Sink
from .redact import redact, scrub
from .retry import RetryPolicy

if TYPE_CHECKING:
    from .compile.physical import PhysicalPlan

__all__ = ["Runnable", "RunOptions", "new_run_id", "batch_counts", "short_error"]


def new_run_id() -> str:
    """A new run id: the UTC time and six random hex digits."""
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + "-" + uuid.uuid4().hex[:6]


class Runnable(Protocol):
    """What the runner needs of a pipeline (``dbatch.Pipeline`` is one)."""

    @property
    def name(self) -> str: ...

    @property
    def source(self) -> Any: ...

    @property
    def sink(self) -> Sink: ...

    @property
    def aggregate(self) -> Any: ...

    @property
    def batching(self) -> Any: ...

    @property
    def definition_token(self) -> str: ...

    def plan(self) -> Plan: ...

    def physical(self, *, plan: Plan | None = None) -> PhysicalPlan: ...

    def check(self, plan: Plan | None = None) -> list[str]: ...

    def ledger_url(self) -> str: ...

    def work_area(self) -> Path: ...


@dataclass(frozen=True)
class RunOptions:
    """How to run a pipeline, beyond the pipeline itself (see ``Pipeline.run``)."""

    run_id: str | None = None
    replay: bool = False
    select: Callable[[Batch], bool] | None = None
    force: bool = False
    retry: RetryPolicy | None = None
    fault: Callable[[Batch, int], None] | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    progress: bool | str | None = None
    listeners: Sequence[Listener] = ()
    raise_on_failure: bool = False


def batch_counts(batch: Batch, r: BatchResult, attempt: int) -> dict[str, Any]:
    """The data of a batch's events: its counts, timings and where it ran."""
    return {
        "fingerprint": batch.fingerprint,
        "attempt": attempt,
        "units": len(batch.units),
        "rows_in": r.rows_in,
        "rows_out": r.rows_out,
        "rows_filtered": r.rows_filtered,
        "rows_quarantined": r.rows_quarantined,
        "files_quarantined": len(r.files_quarantined),
        "rows_by_kind": dict(r.rows_by_kind),
        "quarantined_files": [f.__dict__ for f in r.files_quarantined],
        "duration": r.duration,
        "checksum": r.checksum,
        "worker": r.worker,
        "quarantine_kinds": dict(r.quarantine_kinds),
        "peak_memory": r.peak_memory,
    }


def short_error(exc: BaseException | None) -> str:
    """An error's text as the ledger keeps it: secrets hidden, at most 2,000 characters."""
    if exc is None:
        return ""
    text = scrub(f"{exc}")  # the values of secrets, wherever they appear
    return redact(text)[:2000] if "://" in text else text[:2000]
