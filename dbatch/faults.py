"""Named crash points where fault-injection tests kill the driver (``DBATCH_CRASH_AT=name:count``)."""

from __future__ import annotations

import os
import signal

__all__ = ["crash_point", "CRASH_POINTS"]

#: Where the driver can be made to die, in the order a run reaches them.
CRASH_POINTS = (
    "spooled",  # an MQTT message was stored in the spool; not yet acknowledged to the broker
    "planned",  # a stream's batches were cut and kept in the ledger; none ran yet
    "promoted",  # a batch's staging folder was renamed into place; not yet recorded
    "recorded",  # a batch was committed and recorded in the ledger
    "acknowledged",  # a stream's committed batch was acknowledged on the broker
    "before_publish",  # every batch committed; the output not yet switched
    "publishing",  # in the middle of writing the new output version
)

_counts: dict[str, int] = {}


def crash_point(name: str) -> None:
    """Kill this process with ``SIGKILL`` the ``count``-th time ``name`` is reached.

    Does nothing unless the environment variable ``DBATCH_CRASH_AT`` is
    ``name:count``; the driver-kill tests set it on a ``dbatch run`` subprocess.

    Examples
    --------
    >>> crash_point("promoted")  # a no-op without DBATCH_CRASH_AT
    """
    spec = os.environ.get("DBATCH_CRASH_AT")
    if not spec or not spec.startswith(name + ":"):
        return
    _counts[name] = _counts.get(name, 0) + 1
    if _counts[name] >= int(spec.split(":", 1)[1]):
        os.kill(os.getpid(), signal.SIGKILL)
