"""Scale a cluster dbatch started to the batches a run has left, within a profile's bounds."""

from __future__ import annotations

import logging
import math
from typing import Any

__all__ = ["Scaler", "scaler_of", "attach_scaler"]

log = logging.getLogger("dbatch")

_SCALER = "_dbatch_scaler"


class Scaler:
    """Keeps ``cluster`` at ``ceil(batches left / threads per worker)`` workers, clamped.

    Growing asks the cluster for more workers (``cluster.scale``). Shrinking retires
    only idle workers (those the scheduler's ``workers_to_close`` picks), so a batch
    that runs is never cut short by the tail of a run getting smaller.

    Examples
    --------
    >>> scaler = Scaler(cluster, minimum=0, maximum=8)  # doctest: +SKIP
    >>> scaler.demand(100)  # doctest: +SKIP
    8
    """

    def __init__(
        self,
        cluster: Any,
        *,
        minimum: int,
        maximum: int,
        threads_per_worker: int | None = None,
        client: Any = None,
    ):
        self.cluster = cluster
        self.client = client
        self.minimum, self.maximum = minimum, maximum
        self.per_worker = threads_per_worker or _threads_per_worker(cluster)
        self.target: int | None = None
        #: Each target the cluster was scaled to, in order.
        self.history: list[int] = []

    def wanted(self, batches_left: int) -> int:
        """The workers ``batches_left`` batches can keep busy, within the bounds."""
        busy = math.ceil(max(0, batches_left) / self.per_worker)
        return max(self.minimum, min(self.maximum, busy))

    def demand(self, batches_left: int) -> int:
        """Scale to what ``batches_left`` needs (a no-op when that has not changed)."""
        want = self.wanted(batches_left)
        if want == self.target:
            return want
        if self.target is not None and want < self.target:
            self._shrink(want)
        else:
            log.info("dbatch: scaling the cluster to %d worker(s)", want)
            self.cluster.scale(want)
        self.target = want
        self.history.append(want)
        return want

    def _shrink(self, want: int) -> None:
        scale_down = getattr(self.cluster, "scale_down", None)
        if scale_down is None or self.client is None:
            self.cluster.scale(want)  # the cluster's own scale picks whom to stop
            return
        idle = self.client.sync(
            self.client.scheduler.workers_to_close, target=want, attribute="name"
        )
        if idle:
            log.info("dbatch: retiring %d idle worker(s)", len(idle))
            self.cluster.sync(scale_down, idle)


def _threads_per_worker(cluster: Any) -> int:
    """Threads of one worker of ``cluster``'s kind (a SpecCluster's new worker), else 1."""
    spec = getattr(cluster, "new_spec", None)
    options = spec.get("options", {}) if isinstance(spec, dict) else {}
    if options.get("nthreads"):
        return int(options["nthreads"])
    if options.get("cores"):  # dask-jobqueue: cores of a job, split among its processes
        return max(1, int(options["cores"]) // max(1, int(options.get("processes") or 1)))
    return 1


def attach_scaler(client: Any, scaler: Scaler) -> None:
    """Remember ``scaler`` on ``client`` (a Client has no slot for it; ``scaler_of`` reads it)."""
    setattr(client, _SCALER, scaler)


def scaler_of(client: Any) -> Scaler | None:
    """The scaler of a client dbatch made from an adaptive profile, else None."""
    found = getattr(client, _SCALER, None)
    return found if isinstance(found, Scaler) else None
