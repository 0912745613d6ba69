"""What a run asks of a cluster's workers before its first batch, at as little cost as it can.

- **Warm-up**: each worker imports what batches use, opens a DuckDB connection in
  the thread the batches run in, and starts loading the plan's models. The call
  returns as soon as every worker has the request: the warm-up runs in the
  worker's own thread pool, ahead of the first task there, while the driver goes
  on (a fresh worker spends tens of milliseconds on it, which the driver used to
  wait for). Workers this process warmed already are not asked again, unless the
  plan has a model to load.
- **Quiet failures**: a worker plugin that keeps workers from logging "Compute
  Failed" tracebacks for dbatch's tasks, registered once per client: the
  scheduler hands it to workers that join later by itself.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Collection
from typing import TYPE_CHECKING, Any

from distributed import WorkerPlugin

from ..compile.physical import PhysicalPlan
from ..protocols import Prepares
from ..tasks import warm_worker

if TYPE_CHECKING:
    from distributed import Client

__all__ = ["QuietHandledFailures", "prepare_workers", "warm_in_task_thread"]

#: Clients whose scheduler has the plugin already.
_QUIETED: weakref.WeakSet[Any] = weakref.WeakSet()
#: The workers each client has warmed up (addresses: a restarted worker has a new one).
_WARMED: weakref.WeakKeyDictionary[Any, set[str]] = weakref.WeakKeyDictionary()


class QuietHandledFailures(WorkerPlugin):
    """Keeps a worker from logging "Compute Failed" with a traceback for dbatch's tasks.

    dbatch handles those failures itself: a retry is logged once as a warning with
    its reason, a failure for good names its error in the run's summary and ledger.
    """

    def setup(self, worker: Any) -> None:
        logging.getLogger("distributed.worker").addFilter(_not_dbatch_failure)


def _not_dbatch_failure(record: logging.LogRecord) -> bool:
    if not str(record.msg).startswith("Compute Failed"):
        return True
    key = record.args[0] if isinstance(record.args, tuple) and record.args else ""
    return not str(key).startswith(("dbatch-", "('dbatch-"))


async def warm_in_task_thread(
    plan: PhysicalPlan | None = None, block: bool = False, dask_worker: Any = None
) -> None:
    """``tasks.warm_worker`` in the worker's task thread pool; with ``block``, awaited.

    Run by ``Client.run``: a coroutine is the only kind it can leave running
    (``wait=False``). A worker with several threads warms the one that is free first.
    """
    try:
        pending = dask_worker.executors["default"].submit(warm_worker, plan)
    except RuntimeError:  # the worker is closing: nothing to warm
        return
    if block:
        await asyncio.wrap_future(pending)


def prepare_workers(
    client: Client, plan: PhysicalPlan | None, workers: Collection[str] = ()
) -> None:
    """Start the warm-up on the workers, and quiet their handled failures once per client.

    ``workers``: the addresses the cluster has now; when this client warmed all of them
    already and the plan prepares nothing, no message is sent (a re-run saves 2 ms).
    """
    warmed = _WARMED.setdefault(client, set())
    prepares = plan is not None and any(isinstance(s, Prepares) for s in plan.steps)
    if prepares or not workers or not warmed.issuperset(workers):
        # The plan goes along only for what it prepares (a large one is not sent twice).
        sent = plan if prepares else None
        client.run(warm_in_task_thread, sent, wait=False, on_error="ignore")
        warmed.update(workers)
    if client not in _QUIETED:
        client.register_plugin(QuietHandledFailures(), name="dbatch-quiet-failures")
        _QUIETED.add(client)
