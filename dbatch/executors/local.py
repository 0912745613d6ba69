"""The in-process executor: every task runs here, one at a time (preview, debug, unit tests).

No cluster, no pickling: a run, a preview or a test of the runner's decisions
works the same as on a cluster, only serially.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..compile.physical import PhysicalPlan
from ..retry import Failure
from ..tasks import BatchTask, process_batch, reduce_bucket
from .base import Executor, Handle, Outcome

__all__ = ["LocalExecutor"]


class _Ran(Handle):
    def __init__(self, task: BatchTask, outcome: Outcome):
        self.task = task
        self.outcome = outcome


class LocalExecutor(Executor):
    """Runs each task when it is submitted, in this process and thread."""

    def __init__(self) -> None:
        self._plan: PhysicalPlan | None = None
        self._shared: dict[str, Any] = {}

    @property
    def threads(self) -> int:
        return 1

    @property
    def in_flight(self) -> int:
        return 1  # a task runs when it is submitted: one at a time

    def start(self, plan: PhysicalPlan, shared: Sequence[Any]) -> None:
        self._plan = plan
        self._shared = {obj.token: obj.obj for obj in shared}

    def shared(self) -> Mapping[str, Any]:
        return self._shared

    def replan(self, plan: PhysicalPlan) -> None:
        self._plan = plan

    def submit(self, task: BatchTask) -> Handle:
        assert self._plan is not None, "start() first"
        try:
            return _Ran(task, Outcome(result=process_batch(self._plan, task, self._shared)))
        except Exception as e:  # noqa: BLE001 - reported as the task's failure, like a worker's
            tb = "".join(traceback.format_exception(e))
            return _Ran(task, Outcome(failure=Failure(error=e, traceback=tb)))

    def wait(self, handles: Sequence[Handle], timeout: float) -> list[Handle]:
        return list(handles)

    def outcome(self, handle: Handle) -> Outcome:
        assert isinstance(handle, _Ran)
        return handle.outcome

    def cancel(self, handles: Sequence[Handle]) -> None:
        pass  # they ran already

    def call(self, key: Any, fn: Callable[..., Any], *args: Any) -> Callable[[], Any]:
        value = fn(*args)
        return lambda: value

    def reduce(
        self, plan: PhysicalPlan, args: Sequence[tuple[Any, ...]], keys: Sequence[Any]
    ) -> list[Any]:
        return [reduce_bucket(plan, *a) for a in args]
