"""How a LocalCluster started by dbatch makes its worker processes: forked from a server
that imported the workers' stack once, rather than each spawned and importing it anew."""

from __future__ import annotations

import multiprocessing
from typing import Any

from .. import config

__all__ = ["WORKER_STACK", "start_method", "stop_fork_server"]

#: What a worker imports before its first batch; the fork server imports it once.
WORKER_STACK = (
    "distributed",
    "dbatch.tasks",
    "duckdb",
    "pandas",
    "pyarrow.compute",
    "pyarrow.dataset",
    "pyarrow.ipc",
    "pyarrow.parquet",
)


def start_method() -> dict[str, Any]:
    """The ``dask.config`` setting that makes the workers of a LocalCluster dbatch starts.

    Called with ``distributed`` imported (its settings are read), before the cluster.

    ``dbatch.cluster.start-method: forkserver`` (the default where the platform has
    it): one server process imports ``WORKER_STACK`` and each worker forks from it,
    so a cold run imports DuckDB, pyarrow and pandas once, not once per worker, and a
    worker process exits without tearing its interpreter down. ``spawn`` is
    distributed's own default: a fresh interpreter per worker.
    """
    method = str(config.get("cluster.start-method") or "spawn")
    if method not in multiprocessing.get_all_start_methods():
        method = "spawn"  # no fork server on this platform (Windows)
    if method == "forkserver":
        _preload()
    return {"distributed.worker.multiprocessing-method": method}


def _preload() -> None:
    """Start the fork server importing the workers' stack, while the scheduler starts.

    The variables distributed sets before it makes a worker process
    (``distributed.nanny.pre-spawn-environ``: ``OMP_NUM_THREADS``, ``MALLOC_TRIM_THRESHOLD_``...)
    are set first, as the nanny would, so that the server and every worker forked
    from it start with them. distributed sets its own list of modules (those the
    driver has) the first time it makes a process, unless told it was done; it is.
    """
    import os
    from multiprocessing import forkserver

    import dask.config
    import distributed.utils

    spawn_env = dask.config.get("distributed.nanny.pre-spawn-environ", default={}) or {}
    os.environ.update({k: os.environ.get(k, str(v)) for k, v in spawn_env.items() if v is not None})
    forkserver.set_forkserver_preload(list(WORKER_STACK))
    forkserver.ensure_running()  # returns at once; the server imports meanwhile
    if hasattr(distributed.utils, "_forkserver_preload_set"):
        distributed.utils._forkserver_preload_set = True


def stop_fork_server() -> None:
    """End this process's fork server and wait for it, once no process it forked lives.

    It then does not outlive the run, and its CPU time (its workers' too) counts as
    this process's children's; the next cluster starts a new one. It holds nothing
    then, so it is terminated rather than asked to tear its interpreter down (0.3 s).
    A server still serving another cluster's workers is left alone.
    """
    import os
    import signal
    from multiprocessing import forkserver

    server = forkserver._forkserver
    stop = getattr(server, "_stop", None)
    pid = getattr(server, "_forkserver_pid", None)
    if stop is None or pid is None:
        return
    if multiprocessing.active_children():  # joins the ended ones; the rest still need it
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    stop()  # closes its pipe, waits for it, removes its socket
