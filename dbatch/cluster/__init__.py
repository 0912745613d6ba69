"""connect(): the active client, an address, a scheduler file, a Client, a cluster, a profile,
or a new LocalCluster; ``close()`` ends what ``connect()`` started."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import dask.config

from .. import config
from ..display import in_notebook, show_link
from ..errors import JobSpecError
from ..options import refuse_unknown
from .forking import start_method, stop_fork_server
from .profiles import PROFILE_KEYS, ClusterProfile, named_profile, parse_profile
from .remote import address_in, check_security, is_loopback_address, remote_client
from .scaling import Scaler, scaler_of

__all__ = [
    "ClusterProfile",
    "Scaler",
    "close",
    "connect",
    "LocalStart",
    "named_profile",
    "scaler_of",
    "cluster_from_config",
    "cluster_schema",
    "dashboard_link",
    "has_active_client",
    "is_loopback_address",
    "owns_cluster",
    "check_workers",
    "MAX_LOCAL_WORKERS",
]

log = logging.getLogger("dbatch")

#: The most worker processes a LocalCluster started by dbatch may have (``workers``).
MAX_LOCAL_WORKERS = 256

#: The attribute that marks a client whose LocalCluster dbatch started (and so closes).
_OWNS_CLUSTER = "_dbatch_owns_cluster"


def owns_cluster(client: Any) -> bool:
    """Whether ``client``'s cluster was started by ``connect()``, so that its user closes it."""
    return bool(getattr(client, _OWNS_CLUSTER, False))


def has_active_client() -> bool:
    """Whether this process (or this notebook) already has a ``distributed`` client."""
    import sys

    if "distributed" not in sys.modules:
        return False  # not even imported: no client (and no import for the answer)
    try:
        from distributed import get_client

        get_client()
        return True
    except (ValueError, ImportError):
        return False


def connect(
    target: Any = None,
    *,
    n_workers: int | None = None,
    threads_per_worker: int | None = None,
    security: Any = None,
    insecure: bool = False,
    show_link: bool = True,
    cluster: str | ClusterProfile | None = None,
):
    """A ``distributed.Client`` for running dbatch work.

    ``target`` may be nothing (the active client, else ``DASK_SCHEDULER_ADDRESS`` or
    the ``scheduler-address`` config, else the profile named by
    ``dbatch.cluster.profile``, else a new LocalCluster listening on 127.0.0.1
    only), an address string, the path of a scheduler file, a ``Client``, or any
    cluster object with ``scheduler_address``.

    ``cluster`` names a profile under ``dbatch.clusters`` of ``dask.config`` (or is a
    ``ClusterProfile``): a scheduler address with TLS files, a LocalCluster, or any
    cluster class with its kwargs and ``adapt`` bounds. A cluster started for it is
    closed by ``dbatch.cluster.close(client)``.

    Examples
    --------
    >>> client = dbatch.connect()  # doctest: +SKIP
    >>> client = dbatch.connect("tls://scheduler.example.org:8786", security=sec)  # doctest: +SKIP
    >>> client = dbatch.connect(cluster="hpc")  # doctest: +SKIP
    """
    if isinstance(target, LocalStart):
        client = target.client()
        if show_link:
            show_dashboard_link(client)
        return client
    from distributed import Client

    if isinstance(target, Client):
        return target
    if target is None and cluster is None:
        try:
            from distributed import get_client

            return get_client()
        except ValueError:
            pass
        target = (
            os.environ.get("DASK_SCHEDULER_ADDRESS")
            or dask.config.get("scheduler-address", default=None)
            or None  # an empty setting means: not set
        )
    if target is None and cluster is None:
        cluster = config.get("cluster.profile") or None
    if cluster is not None and target is None:
        from .starting import open_profile

        profile = named_profile(cluster) if isinstance(cluster, str) else cluster
        client = open_profile(profile, insecure=insecure)
    elif target is None:
        client = _local_client(n_workers, threads_per_worker)
    elif isinstance(target, (str, os.PathLike)):
        text = str(target)
        if text.endswith(".json") and Path(text).exists():
            address = address_in(Path(text))
            check_security(address, security, insecure)
            client = remote_client(address, security, scheduler_file=text)
        else:
            check_security(text, security, insecure)
            client = remote_client(text, security)
    elif hasattr(target, "scheduler_address"):
        check_security(target.scheduler_address, security, insecure)
        client = remote_client(target.scheduler_address, security, cluster=target)
    else:
        raise TypeError(
            f"connect() takes an address, a scheduler file, a Client or a cluster, not {type(target).__name__}"
        )
    if show_link:
        show_dashboard_link(client)
    return client


def check_workers(workers: Any, *, key: str, file: str | None = None) -> int:
    """Refuse a worker count that is not a whole number in 1..MAX_LOCAL_WORKERS.

    Examples
    --------
    >>> check_workers(4, key="cluster.workers")
    4
    """
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise JobSpecError(f"expected a positive whole number, got {workers!r}", key=key, file=file)
    if workers > MAX_LOCAL_WORKERS:
        raise JobSpecError(
            f"{workers:,} worker processes is more than the {MAX_LOCAL_WORKERS} a LocalCluster "
            "may start on one machine; use fewer, or run a Dask cluster and give its "
            "scheduler (cluster.scheduler or --scheduler)",
            key=key,
            file=file,
        )
    return workers


def close(client: Any) -> None:
    """Close ``client``, and the cluster ``connect()`` started for it (not someone else's)."""
    cluster = client.cluster if owns_cluster(client) else None
    client.close()
    if cluster is not None:
        cluster.close()
        stop_fork_server()


def _local_client(n_workers: int | None, threads: int | None, memory_limit: Any = None):
    from distributed import Client, LocalCluster

    n_workers = check_workers(
        int(n_workers or config.get("cluster.n-workers")), key="dbatch.cluster.n-workers"
    )
    host = config.get("cluster.host")
    # One task per worker thread at a time: when a worker dies, only the batches it was
    # really running count that death, so an innocent batch queued behind is not quarantined.
    with dask.config.set(
        {
            "distributed.scheduler.allowed-failures": int(config.get("retry.worker-deaths")),
            "distributed.scheduler.worker-saturation": 1.0,
            **start_method(),  # a fork server starts importing while the scheduler starts
        }
    ):
        cluster = LocalCluster(
            n_workers=int(config.get("cluster.n-workers") if n_workers is None else n_workers),
            threads_per_worker=int(threads or config.get("cluster.threads-per-worker")),
            processes=True,
            host=host,
            dashboard_address=config.get("cluster.dashboard-address"),
            worker_dashboard_address=None,
            scheduler_kwargs={"host": host},
            **({} if memory_limit is None else {"memory_limit": memory_limit}),
        )
    client = Client(cluster)
    setattr(client, _OWNS_CLUSTER, True)  # Client has no slot for it; owns_cluster() reads it
    return client


class LocalStart:
    """A LocalCluster being started in a background thread while this one plans the run.

    The worker processes boot (interpreter, imports) while the driver lists the
    input, reads footers and reconciles with the ledger; ``client()`` waits for
    the cluster and hands its client over (its user then owns the cluster). A
    start that is never handed over is shut down by ``close()``.

    Examples
    --------
    >>> start = LocalStart(n_workers=2)  # doctest: +SKIP
    >>> plan = pipeline.plan()  # meanwhile the workers start  # doctest: +SKIP
    >>> client = connect(start)  # doctest: +SKIP
    """

    def __init__(self, n_workers: int | None = None, threads_per_worker: int | None = None):
        import threading

        self._client: Any = None
        self._error: BaseException | None = None
        self._taken = False
        # The settings are read here, on the caller's thread (a `dask.config.set` block).
        n_workers = int(n_workers or config.get("cluster.n-workers"))
        threads = int(threads_per_worker or config.get("cluster.threads-per-worker"))
        self._thread = threading.Thread(
            target=self._start, args=(n_workers, threads), name="dbatch-cluster-start"
        )
        self._thread.daemon = True
        self._thread.start()

    def _start(self, n_workers: int | None, threads: int | None) -> None:
        try:
            self._client = _local_client(n_workers, threads)
        except BaseException as e:  # noqa: BLE001 - raised again by client()
            self._error = e

    def client(self) -> Any:
        """The started cluster's client (waits for the start; raises what it raised)."""
        self._thread.join()
        if self._error is not None:
            raise self._error
        self._taken = True
        return self._client

    def close(self) -> None:
        """Shut the cluster down unless its client was handed over."""
        self._thread.join()
        if self._taken or self._client is None:
            return
        cluster = self._client.cluster
        self._client.close()
        cluster.close()
        stop_fork_server()
        self._client = None


def dashboard_link(client) -> str | None:
    """The dashboard URL, honouring ``distributed.dashboard.link``."""
    try:
        return client.dashboard_link
    except Exception:  # noqa: BLE001 - a scheduler without a dashboard
        return None


def show_dashboard_link(client) -> None:
    """Show the dashboard link, unless the ``dbatch.run`` log already says it (INFO, no notebook)."""
    link = dashboard_link(client)
    if link and (in_notebook() or not logging.getLogger("dbatch.run").isEnabledFor(logging.INFO)):
        show_link("Dask dashboard", link)


CLUSTER_KEYS = {
    "scheduler": "an address or a scheduler file",
    "workers": "a whole number",
    "profile": "the name of a profile under dbatch.clusters",
    **{k: "a key of an inline cluster profile" for k in PROFILE_KEYS},
}
_CLUSTER_TYPES: dict[str, dict[str, Any]] = {
    "scheduler": {
        "type": "string",
        "description": "A scheduler's address (tls://host:8786) or a scheduler file (*.json).",
    },
    "workers": {
        "type": "integer",
        "minimum": 1,
        "description": "Worker processes of the LocalCluster started when there is no scheduler.",
    },
}


def cluster_schema() -> dict[str, Any]:
    """The JSON Schema of a job file's ``cluster:``, as ``cluster_from_config`` reads it."""
    properties = {
        name: _CLUSTER_TYPES.get(name, {"description": what.capitalize() + "."})
        for name, what in CLUSTER_KEYS.items()
    }
    return {
        "type": "object",
        "description": "Where `dbatch run` runs the job: a scheduler, or a LocalCluster's size.",
        "properties": properties,
        "additionalProperties": False,
    }


def cluster_from_config(
    value: Any, *, file: str | None, base_dir: Path | None
) -> Mapping[str, Any]:
    """A job file's ``cluster:`` -> the options ``dbatch run`` uses.

    ``scheduler`` (an address, or a scheduler file taken from ``base_dir``, the job
    file's folder) and ``workers`` (of the LocalCluster); or ``profile: NAME`` (a
    profile of ``dask.config``); or a profile written inline (``address``,
    ``local`` or ``class``, with ``security``, ``kwargs``, ``adapt``), returned as a
    ``ClusterProfile`` under ``profile``.

    Examples
    --------
    >>> cluster_from_config({"workers": 4}, file=None, base_dir=None)
    {'workers': 4}
    >>> cluster_from_config({"profile": "hpc"}, file=None, base_dir=None)
    {'profile': 'hpc'}
    """
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise JobSpecError(
            "expected a mapping such as {scheduler: tls://host:8786}, {workers: 4} or "
            "{profile: hpc}",
            key="cluster",
            file=file,
        )
    refuse_unknown(value, CLUSTER_KEYS, key="cluster", file=file)
    inline = {k: v for k, v in value.items() if k in PROFILE_KEYS}
    chosen = [k for k in ("scheduler", "profile") if k in value] + (["inline"] if inline else [])
    if len(chosen) > 1:
        raise JobSpecError(
            f"give one of scheduler, profile or an inline profile (address/local/class), not "
            f"{' and '.join(chosen)}",
            key="cluster",
            file=file,
        )
    if inline:
        if "workers" in value:
            raise JobSpecError(
                "workers goes with a LocalCluster; in a profile write local: {workers: N}",
                key="cluster.workers",
                file=file,
            )
        return {
            "profile": parse_profile(
                inline, name="job", key="cluster", file=file, base_dir=base_dir
            )
        }
    if "profile" in value and not isinstance(value["profile"], str):
        raise JobSpecError(
            f"expected {CLUSTER_KEYS['profile']}, got {value['profile']!r}",
            key="cluster.profile",
            file=file,
        )
    if "scheduler" in value and not isinstance(value["scheduler"], str):
        raise JobSpecError(
            f"expected {CLUSTER_KEYS['scheduler']}, got {value['scheduler']!r}",
            key="cluster.scheduler",
            file=file,
        )
    if "workers" in value:
        check_workers(value["workers"], key="cluster.workers", file=file)
    out = dict(value)
    scheduler = out.get("scheduler")
    if scheduler and "://" not in scheduler and scheduler.endswith(".json"):
        path = Path(scheduler).expanduser()
        out["scheduler"] = str(path if base_dir is None else base_dir / path)  # a scheduler file
    return out
