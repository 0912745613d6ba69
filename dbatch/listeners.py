"""Run listeners: named no-op hooks per event kind, and the bus that feeds them.

The ledger, the run summary, progress bars, alerts, logs, metrics and the
dashboard page are all listeners; each overrides the hooks it cares about.
A plain callable that takes an ``Event`` works too.

Examples
--------
>>> class Committed(RunListener):
...     def __init__(self):
...         self.ids = []
...     def on_batch_committed(self, event):
...         self.ids.append(event.batch_id)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from .core import Event, EventKind

__all__ = ["RunListener", "Bus", "Listener"]


class RunListener:
    """Base class of run listeners: one hook per ``EventKind``, each a no-op here."""

    def __call__(self, event: Event) -> None:
        getattr(self, _HOOKS[event.kind])(event)

    def handle_all(self, events: Sequence[Event]) -> None:
        """Events that happened together (the batches submitted at once), in order.

        Each goes to its hook; a listener that can take them at once (the ledger:
        one transaction) overrides this.
        """
        for event in events:
            self(event)

    def on_run_started(self, event: Event) -> None:
        """The run holds the job's lock; ``data``: batches, params, replay."""

    def on_batch_started(self, event: Event) -> None:
        """An attempt was submitted; ``data``: fingerprint, attempt, units."""

    def on_batch_retry(self, event: Event) -> None:
        """An attempt failed and will be tried again; ``data``: delay, error class and message."""

    def on_batch_committed(self, event: Event) -> None:
        """A batch was promoted and recorded; ``data``: counts, duration, checksum."""

    def on_batch_skipped(self, event: Event) -> None:
        """A batch was already committed with the same inputs."""

    def on_batch_quarantined(self, event: Event) -> None:
        """A batch was set aside (it killed its worker, or an earlier run did so)."""

    def on_batch_failed(self, event: Event) -> None:
        """A batch failed for good in this run; ``data``: error class and message."""

    def on_published(self, event: Event) -> None:
        """The run's output became visible; ``data``: what the sink published."""

    def on_finished(self, event: Event) -> None:
        """The run ended; ``data``: status, counts, message."""

    def on_dashboard(self, link: str | None) -> None:
        """The run got a cluster; ``link`` is its dashboard (None without one)."""

    def on_end(self) -> None:
        """The run is over, however it ended (a progress bar leaves the terminal clean)."""


_HOOKS = {kind: f"on_{kind.value}" for kind in EventKind}

Listener = RunListener | Callable[[Event], None]


class Bus:
    """Hands every event to every listener, in order."""

    def __init__(self, listeners: Iterable[Listener] = ()):
        self.listeners: list[Listener] = list(listeners)

    def add(self, listener: Listener) -> None:
        self.listeners.append(listener)

    def emit(self, event: Event) -> None:
        for listener in self.listeners:
            listener(event)

    def emit_all(self, events: Sequence[Event]) -> None:
        """Events that happened together: each listener gets them all, then the next one."""
        for listener in self.listeners:
            if isinstance(listener, RunListener):
                listener.handle_all(events)
            else:
                for event in events:
                    listener(event)

    def dashboard(self, link: str | None) -> None:
        for listener in self.listeners:
            if isinstance(listener, RunListener):
                listener.on_dashboard(link)

    def end(self) -> None:
        for listener in self.listeners:
            if isinstance(listener, RunListener):
                listener.on_end()
