"""Open a cluster profile: connect to its scheduler, or start its cluster and own it."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import dask.config

from .. import config
from ..errors import JobSpecError
from .profiles import ClusterProfile, import_cluster_class
from .scaling import Scaler, attach_scaler

__all__ = ["open_profile", "security_of"]

log = logging.getLogger("dbatch")


def security_of(profile: ClusterProfile) -> Any:
    """A ``distributed.Security`` from the profile's ``ca``/``cert``/``key`` files, or None."""
    if not profile.security:
        return None
    from distributed import Security

    for name, path in profile.security.items():
        if not Path(path).is_file():
            raise JobSpecError(
                f"cluster profile {profile.name!r}: security.{name} {path!r} is not a file; "
                "give the path of a PEM file (relative paths are taken from the job file's folder)"
            )
    return Security(
        tls_ca_file=profile.security["ca"],
        tls_client_cert=profile.security.get("cert"),
        tls_client_key=profile.security.get("key"),
        require_encryption=True,
    )


def open_profile(profile: ClusterProfile, *, insecure: bool = False) -> Any:
    """A ``distributed.Client`` for ``profile``.

    An ``address`` profile connects (TLS unless loopback or ``insecure``); a
    ``local`` or ``class`` profile starts its cluster, marked as dbatch's so that
    ``dbatch.cluster.close`` (and a run that made it) closes it again; with
    ``adapt`` a ``Scaler`` is attached that runs scale to their batches left.
    """
    from distributed import Client

    from . import _OWNS_CLUSTER, _local_client
    from .remote import check_security, remote_client

    if profile.kind == "address":
        assert profile.address is not None
        check_security(profile.address, None, insecure)
        return remote_client(profile.address, security_of(profile))
    if profile.kind == "local":
        local = dict(profile.local or {})
        workers = profile.minimum if profile.adaptive else local.get("workers")
        client = _local_client(
            workers if workers is not None else None,
            local.get("threads"),
            memory_limit=local.get("memory_limit"),
        )
    else:
        cluster = _start(profile)
        try:
            client = Client(cluster)
        except BaseException:
            cluster.close()
            raise
        setattr(client, _OWNS_CLUSTER, True)
    log.info("dbatch: started %s", profile.describe())
    if profile.adaptive:
        assert profile.minimum is not None and profile.maximum is not None
        scaler = Scaler(
            client.cluster,
            minimum=profile.minimum,
            maximum=profile.maximum,
            threads_per_worker=profile.threads_per_worker or _local_threads(profile),
            client=client,
        )
        scaler.demand(0)  # the minimum until a run says how many batches it has
        attach_scaler(client, scaler)
    return client


def _local_threads(profile: ClusterProfile) -> int | None:
    if profile.local is None:
        return None
    return int(profile.local.get("threads") or config.get("cluster.threads-per-worker"))


def _start(profile: ClusterProfile) -> Any:
    """Make the profile's cluster object with its kwargs, under dbatch's scheduler settings."""
    cls = import_cluster_class(profile)
    with dask.config.set(
        {
            "distributed.scheduler.allowed-failures": int(config.get("retry.worker-deaths")),
            "distributed.scheduler.worker-saturation": 1.0,
        }
    ):
        try:
            return cls(**dict(profile.kwargs))
        except TypeError as e:
            raise JobSpecError(
                f"cluster profile {profile.name!r}: {profile.cls}(**kwargs) failed: {e}; "
                f"check the names under kwargs (given: {sorted(profile.kwargs)})"
            ) from None
