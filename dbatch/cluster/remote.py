"""Reaching a scheduler over the network: TLS unless the address is loopback, a short
wait, and one error that says what to check."""

from __future__ import annotations

import ipaddress
import logging
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from .. import config
from ..errors import InsecureConnectionError, SchedulerError

__all__ = ["is_loopback_address", "check_security", "address_in", "remote_client"]

log = logging.getLogger("dbatch")


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


def check_security(address: str, security: Any, insecure: bool) -> None:
    """Refuse a non-loopback address without TLS, unless the user said the network is trusted."""
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


def address_in(scheduler_file: Path) -> str:
    """The scheduler address a scheduler file names; a broken file is a ``SchedulerError``."""
    import json

    try:
        return str(json.loads(scheduler_file.read_text())["address"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise SchedulerError(
            f"scheduler file {str(scheduler_file)!r} holds no scheduler address "
            f"({type(e).__name__}: {e}); point to the file the scheduler wrote "
            "(dask scheduler --scheduler-file), or give its tcp:// or tls:// address"
        ) from None


def remote_client(
    address: str, security: Any, *, scheduler_file: str | None = None, cluster: Any = None
):
    """A client of the scheduler at ``address``, or a ``SchedulerError`` that says what to check.

    The wait is ``dbatch.cluster.connect-timeout``: an address that does not answer
    fails within seconds rather than distributed's default half minute.
    """
    from dask.utils import parse_timedelta
    from distributed import Client

    timeout = parse_timedelta(config.get("cluster.connect-timeout", "5s"))
    target = cluster if cluster is not None else (None if scheduler_file else address)
    try:
        return Client(target, scheduler_file=scheduler_file, security=security, timeout=timeout)
    except Exception as e:  # noqa: BLE001 - whatever answered (or nothing did), it is not usable
        reason = f"{type(e).__name__}: {e}".splitlines()[0][:300]
        raise SchedulerError(
            f"cannot connect to the Dask scheduler at {address} ({reason}); check that the "
            "scheduler runs there, that the host and port are right (tls:// needs its "
            "certificates) and that this machine can reach it. The wait is "
            f"dbatch.cluster.connect-timeout ({timeout:g} s)."
        ) from None
