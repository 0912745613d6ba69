"""connect(): the active client, an address, a scheduler file, a Client, a cluster, or a new LocalCluster."""

from __future__ import annotations

import ipaddress
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import dask.config

from . import config
from .display import show_link
from .errors import InsecureConnectionError, JobSpecError
from .options import refuse_unknown

__all__ = [
    "connect",
    "cluster_from_config",
    "cluster_schema",
    "dashboard_link",
    "has_active_client",
    "is_loopback_address",
    "owns_cluster",
]

log = logging.getLogger("dbatch")

#: The attribute that marks a client whose LocalCluster dbatch started (and so closes).
_OWNS_CLUSTER = "_dbatch_owns_cluster"


def owns_cluster(client: Any) -> bool:
    """Whether ``client``'s cluster was started by ``connect()``, so that its user closes it."""
    return bool(getattr(client, _OWNS_CLUSTER, False))


def has_active_client() -> bool:
    """Whether this process (or this notebook) already has a ``distributed`` client."""
    try:
        from distributed import get_client

        get_client()
        return True
    except (ValueError, ImportError):
        return False


def is_loopback_address(address: str) -> bool:
    """``tcp://127.0.0.1:8786`` and ``localhost`` are loopback; anything else is not."""
    text = address if "://" in address else f"tcp://{address}"
    host = urlparse(text).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_security(address: str, security: Any, insecure: bool) -> None:
    if address.startswith(("tls://", "inproc://")) or is_loopback_address(address):
        return  # inproc: a cluster inside this process, no network at all
    if insecure or config.get("cluster.allow-insecure"):
        log.warning(
            "dbatch: connecting to %s without TLS; anyone on the network can run code on "
            "this cluster. Use tls:// with a Security configuration.",
            address,
        )
        return
    raise InsecureConnectionError(
        f"refusing to connect to {address} without TLS: a Dask scheduler runs any code it is "
        "sent. Use a tls:// address with security=distributed.Security(...) (or the "
        "distributed.comm.tls.* config), or pass insecure=True / --insecure if this network "
        "is trusted."
    )


def connect(
    target: Any = None,
    *,
    n_workers: int | None = None,
    threads_per_worker: int | None = None,
    security: Any = None,
    insecure: bool = False,
    show_link: bool = True,
):
    """A ``distributed.Client`` for running dbatch work.

    ``target`` may be nothing (the active client, else ``DASK_SCHEDULER_ADDRESS`` or
    the ``scheduler-address`` config, else a new LocalCluster listening on
    127.0.0.1 only), an address string, the path of a scheduler file, a
    ``Client``, or any cluster object with ``scheduler_address``.

    Examples
    --------
    >>> client = dbatch.connect()  # doctest: +SKIP
    >>> client = dbatch.connect("tls://scheduler.example.org:8786", security=sec)  # doctest: +SKIP
    """
    from distributed import Client

    if isinstance(target, Client):
        return target
    if target is None:
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
    if target is None:
        client = _local_client(n_workers, threads_per_worker)
    elif isinstance(target, (str, os.PathLike)):
        text = str(target)
        if text.endswith(".json") and Path(text).exists():
            import json

            address = json.loads(Path(text).read_text())["address"]
            _check_security(address, security, insecure)
            client = Client(scheduler_file=text, security=security)
        else:
            _check_security(text, security, insecure)
            client = Client(text, security=security)
    elif hasattr(target, "scheduler_address"):
        _check_security(target.scheduler_address, security, insecure)
        client = Client(target, security=security)
    else:
        raise TypeError(
            f"connect() takes an address, a scheduler file, a Client or a cluster, not {type(target).__name__}"
        )
    if show_link:
        show_dashboard_link(client)
    return client


def _local_client(n_workers: int | None, threads: int | None):
    from distributed import Client, LocalCluster

    host = config.get("cluster.host")
    # One task per worker thread at a time: when a worker dies, only the batches it was
    # really running count that death, so an innocent batch queued behind is not quarantined.
    with dask.config.set(
        {
            "distributed.scheduler.allowed-failures": int(config.get("retry.worker-deaths")),
            "distributed.scheduler.worker-saturation": 1.0,
        }
    ):
        cluster = LocalCluster(
            n_workers=int(n_workers or config.get("cluster.n-workers")),
            threads_per_worker=int(threads or config.get("cluster.threads-per-worker")),
            processes=True,
            host=host,
            dashboard_address=config.get("cluster.dashboard-address"),
            worker_dashboard_address=None,
            scheduler_kwargs={"host": host},
        )
    client = Client(cluster)
    setattr(client, _OWNS_CLUSTER, True)  # Client has no slot for it; owns_cluster() reads it
    return client


def dashboard_link(client) -> str | None:
    """The dashboard URL, honouring ``distributed.dashboard.link``."""
    try:
        return client.dashboard_link
    except Exception:  # noqa: BLE001 - a scheduler without a dashboard
        return None


def show_dashboard_link(client) -> None:
    link = dashboard_link(client)
    if link:
        show_link("Dask dashboard", link)


CLUSTER_KEYS = {"scheduler": "an address or a scheduler file", "workers": "a whole number"}
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
    """A job file's ``cluster:`` (``scheduler``, ``workers``) -> the options ``dbatch run`` uses.

    A scheduler file (``*.json``) is taken from ``base_dir``, the job file's folder.

    Examples
    --------
    >>> cluster_from_config({"workers": 4}, file=None, base_dir=None)
    {'workers': 4}
    """
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise JobSpecError(
            "expected a mapping such as {scheduler: tls://host:8786} or {workers: 4}",
            key="cluster",
            file=file,
        )
    refuse_unknown(value, CLUSTER_KEYS, key="cluster", file=file)
    if "scheduler" in value and not isinstance(value["scheduler"], str):
        raise JobSpecError(
            f"expected {CLUSTER_KEYS['scheduler']}, got {value['scheduler']!r}",
            key="cluster.scheduler",
            file=file,
        )
    workers = value.get("workers")
    if "workers" in value and (
        not isinstance(workers, int) or isinstance(workers, bool) or workers < 1
    ):
        raise JobSpecError(
            f"expected a positive whole number, got {workers!r}", key="cluster.workers", file=file
        )
    out = dict(value)
    scheduler = out.get("scheduler")
    if scheduler and "://" not in scheduler and scheduler.endswith(".json"):
        path = Path(scheduler).expanduser()
        out["scheduler"] = str(path if base_dir is None else base_dir / path)  # a scheduler file
    return out
