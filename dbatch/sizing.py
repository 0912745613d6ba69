"""Batches that fit a worker's memory: ``size: auto``, and the warning before a run.

A batch's peak memory is estimated from the ledger's committed batches of the
same job (``estimate.Cost``: the largest memory per input byte seen). The budget
of one batch is ``dbatch.batching.memory-fraction`` of a worker's memory limit:
Dask pauses a worker at 80 % of it and kills it at 95 %, and a worker may run
several batches at once.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import config
from .core import Batch
from .estimate import Cost, cost_from_history
from .ledger import Ledger

__all__ = ["AUTO_FILE", "auto_target", "worker_memory", "unfit_batches", "warn_unfit"]

log = logging.getLogger("dbatch")

#: Where the size ``size: auto`` chose is kept, in the job's work area.
AUTO_FILE = "auto-batching.json"


def worker_memory() -> int:
    """A worker's memory for planning: ``dbatch.batching.worker-memory``, or ``auto``.

    ``auto`` is this machine's memory divided by the LocalCluster's workers, which
    is what a LocalCluster gives each worker.
    """
    value = config.get("batching.worker-memory")
    if str(value).strip().lower() != "auto":
        return config.parse_bytes(value)
    import psutil

    return int(psutil.virtual_memory().total // max(1, int(config.get("cluster.n-workers"))))


def _fraction() -> float:
    return float(config.get("batching.memory-fraction"))


def auto_target(work_area: Path, ledger_url: str, job: str) -> int:
    """The batch size of a ``size: auto`` job, chosen once and kept in the work area.

    From the ledger's history: the largest size whose estimated peak fits the
    budget; without history: ``dbatch.batching.target-bytes``. Kept, because a
    different size regroups the units and every batch would run again.
    """
    kept = work_area / AUTO_FILE
    if kept.exists():
        return int(json.loads(kept.read_text())["target_bytes"])
    ledger = Ledger(ledger_url)
    try:
        cost = cost_from_history(ledger.history(job))
    finally:
        ledger.close()
    budget = int(worker_memory() * _fraction())
    target, source = config.parse_bytes(config.get("batching.target-bytes")), "default"
    if cost is not None and cost.memory_per_byte:
        target, source = max(2**20, int(budget / cost.memory_per_byte)), "history"
    work_area.mkdir(parents=True, exist_ok=True)
    kept.write_text(
        json.dumps({"target_bytes": target, "from": source, "budget": budget}, indent=2)
    )
    log.info("dbatch: %s: size: auto chose %d bytes per batch (%s)", job, target, source)
    return target


def unfit_batches(
    batches: Sequence[Batch], cost: Cost | None, limit: int | None
) -> list[tuple[Batch, int]]:
    """(batch, estimated peak) of each batch whose estimate exceeds the budget of ``limit``."""
    if cost is None or not limit:
        return []
    budget = limit * _fraction()
    out = []
    for batch in batches:
        need = cost.memory(batch.size)
        if need is not None and need > budget:
            out.append((batch, need))
    return out


def warn_unfit(
    job: str, batches: Sequence[Batch], history: Sequence[Any], limit: int | None
) -> list[str]:
    """Log a warning naming each batch that will not fit a worker, with the fix; the messages."""
    from dask.utils import format_bytes

    unfit = unfit_batches(batches, cost_from_history(history), limit)
    if not unfit or limit is None:
        return []
    cost = cost_from_history(history)
    assert cost is not None and cost.memory_per_byte
    fits = max(2**20, math.floor(limit * _fraction() / cost.memory_per_byte))
    messages = []
    for batch, need in unfit[:5]:
        messages.append(
            f"dbatch: {job}: batch {batch.id} ({len(batch.units)} units, "
            f"{format_bytes(batch.size)}) is estimated to need {format_bytes(need)} of worker "
            f"memory, more than {_fraction():.0%} of the workers' {format_bytes(limit)} limit: "
            f"it may be paused or killed. Use smaller batches (batching: {{size: "
            f"{format_bytes(fits).replace(' ', '')}}} fits, or size: auto) or workers with more memory"
        )
    if len(unfit) > 5:
        messages.append(f"dbatch: {job}: {len(unfit) - 5} more batch(es) will not fit either")
    for message in messages:
        log.warning(message)
    return messages
