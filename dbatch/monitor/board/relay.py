"""The driver's side of the dbatch page: a listener that sends a run's events to the scheduler.

Events are queued and sent in chunks by a thread of the relay, so a slow or
far scheduler never holds up the run; a scheduler that cannot take them (no
plugin, gone) turns the relay off with one warning. Events of a run that
never needs a cluster (everything already done) are not sent anywhere.
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import Any

from ... import config
from ...core import Event, EventKind, Plan
from ...listeners import RunListener
from .state import to_message

__all__ = ["Relay"]

log = logging.getLogger("dbatch.dashboard")

_STOP = object()
_CHUNK = 500
_LINGER = 0.2  # seconds an event may wait for others to go with it


class Relay(RunListener):
    """Forwards every event of a run to the dbatch plugin of the scheduler it is attached to."""

    def __init__(self, plan: Plan):
        limit = int(config.get("dashboard.max-batches", 20000))
        self.batch_ids = [b.id for b in plan][:limit]
        self.pending: list[dict[str, Any]] = []
        self.queue: queue.Queue[Any] = queue.Queue()
        self.client: Any = None
        self.thread: threading.Thread | None = None
        self.ending = threading.Event()  # the run is over: send what is left at once
        self.sent = 0
        self.broken = False

    def __call__(self, event: Event) -> None:
        if self.broken:
            return
        ids = self.batch_ids if event.kind is EventKind.RUN_STARTED else None
        message = to_message(event, ids)
        if self.client is None:
            self.pending.append(message)  # until the run has a cluster
        elif not self.broken:
            self.queue.put(message)

    def attach(self, client: Any) -> bool:
        """Start sending to ``client``'s scheduler (registering the plugin there first).

        No ``client`` (an executor without a scheduler), or one whose scheduler does not
        take the plugin: the relay drops the events, rather than keeping them all.
        """
        if self.client is not None:
            return False
        from .plugin import register  # distributed is loaded once there is a cluster

        if client is None or not register(client):
            self.nowhere()
            return False
        self.client = client
        for message in self.pending:
            self.queue.put(message)
        self.pending.clear()
        self.thread = threading.Thread(
            target=self._loop, name="dbatch-dashboard-relay", daemon=True
        )
        self.thread.start()
        return True

    def nowhere(self) -> None:
        """The run has no scheduler to send to (an in-process executor): keep nothing."""
        self.broken = True
        self.pending.clear()

    def on_end(self) -> None:
        self.pending.clear()
        if self.thread is not None:
            self.ending.set()
            self.queue.put(_STOP)
            self.thread.join(timeout=30)

    def _loop(self) -> None:
        stop = False
        while not stop:
            chunk = [self.queue.get()]
            # What comes within _LINGER goes in the same message: a run of small batches
            # sends a few messages a second, not one per event (each costs the scheduler),
            # and the run's thread does not wake this one at every event.
            if chunk[0] is not _STOP:
                self.ending.wait(_LINGER)
            while len(chunk) < _CHUNK:
                try:
                    chunk.append(self.queue.get_nowait())
                except queue.Empty:
                    break
            stop = any(m is _STOP for m in chunk)
            events = [m for m in chunk if m is not _STOP]
            if events and not self.broken:
                self._send(events)

    def _send(self, events: list[dict[str, Any]]) -> None:
        from .plugin import HANDLER

        client = self.client
        try:
            client.sync(getattr(client.scheduler, HANDLER), events=events)
            self.sent += len(events)
        except Exception as e:  # noqa: BLE001 - the page is a view: the run goes on without it
            self.broken = True
            log.warning(
                "dbatch: the scheduler did not take the run's events (%s: %s); the dbatch "
                "page stops following this run",
                type(e).__name__,
                e,
            )
