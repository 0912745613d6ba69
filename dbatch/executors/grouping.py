"""Short batches share a Dask task: what a task costs is paid once for several of them.

A task costs the scheduler, the worker and the driver about 2 ms of CPU together
(messages, state transitions, the driver's bookkeeping of a future), as much as a
batch of ten small files takes to run. Once the last batches of a run show that
its batches take less than ``GROUP_BELOW`` each, the Dask executor sends them
``GROUP`` to a task. Each batch of a group is still staged, committed and recorded
on its own, and a batch that fails fails alone: ``run_group`` keeps going and
returns each batch's result or error. A worker that dies takes its group with it
and Dask runs the group again elsewhere; a group that kills its workers on every
attempt is not taken for its batches' own doing: each is retried, alone (retries
are always sent alone), and only the batch that kills is quarantined.
"""

from __future__ import annotations

import pickle
import statistics
import traceback
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..compile.physical import PhysicalPlan
from ..core import BatchResult
from ..tasks import BatchTask, process_batch

__all__ = ["GROUP", "GROUP_BELOW", "Grouping", "BatchError", "run_group"]

#: Batches a task runs at most, and the typical batch duration below which they share one.
GROUP = 8
GROUP_BELOW = 0.05


@dataclass(frozen=True)
class BatchError:
    """A batch of a group that raised: its error (picklable) and traceback."""

    error: BaseException
    traceback: str


def run_group(
    plan: PhysicalPlan, tasks: Sequence[BatchTask], shared: Mapping[str, Any] | None = None
) -> list[BatchResult | BatchError]:
    """Run ``tasks`` one after the other on this worker; each one's result or error, in order."""
    out: list[BatchResult | BatchError] = []
    for task in tasks:
        try:
            out.append(process_batch(plan, task, shared))
        except Exception as e:  # noqa: BLE001 - reported for this batch alone, as Dask would
            out.append(BatchError(_picklable(e), "".join(traceback.format_exception(e))))
    return out


def _picklable(error: Exception) -> BaseException:
    """``error`` itself if it travels back to the driver, else a RuntimeError saying what it was."""
    try:
        pickle.loads(pickle.dumps(error))
    except Exception:  # noqa: BLE001 - anything unpicklable
        return RuntimeError(f"{type(error).__name__}: {error}")
    return error


class Grouping:
    """How many batches the next tasks carry, from how long the last batches took."""

    def __init__(self, seen: int = 16):
        self.durations: deque[float] = deque(maxlen=seen)

    def saw(self, result: BatchResult) -> None:
        self.durations.append(result.duration)

    def size(self) -> int:
        """``GROUP`` once at least four batches ended, in less than ``GROUP_BELOW`` typically."""
        if len(self.durations) < 4 or statistics.median(self.durations) >= GROUP_BELOW:
            return 1
        return GROUP
