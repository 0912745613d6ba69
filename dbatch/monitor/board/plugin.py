"""The scheduler plugin: receives run events, keeps the board, serves the dbatch page.

``DashboardPlugin`` is registered on a scheduler by the preload module
``dbatch.dashboard`` (``dask scheduler --preload dbatch.dashboard``) or by dbatch
itself when a run connects (``register``). On the scheduler it

* answers the ``dbatch_events`` handler the driver's relay calls, feeding a
  bounded ``Board``;
* adds Bokeh applications to the dashboard Dask already serves (``/dbatch``,
  ``/individual-dbatch-batches``, ``/individual-dbatch-rows``), lists them in its
  menu and in ``/individual-plots.json``;
* exports the board's counters on the scheduler's ``/metrics``.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from typing import Any

import dask.config
from distributed import SchedulerPlugin

from .state import Board, Limits

__all__ = ["DashboardPlugin", "PLUGIN_NAME", "HANDLER", "PAGES", "register"]

log = logging.getLogger("dbatch.dashboard")

PLUGIN_NAME = "dbatch-dashboard"
HANDLER = "dbatch_events"
#: The Bokeh applications the plugin adds: route -> (name in the menu, page function name).
PAGES = {
    "/dbatch": ("dbatch", "run_doc"),
    "/individual-dbatch-batches": ("dbatch Batches", "batches_doc"),
    "/individual-dbatch-rows": ("dbatch Rows Per Second", "rows_doc"),
}


def _limits() -> Limits:
    get = functools.partial(dask.config.get, default=None)
    values = {
        "max_runs": get("dbatch.dashboard.max-runs"),
        "max_batches": get("dbatch.dashboard.max-batches"),
        "max_errors": get("dbatch.dashboard.max-errors"),
        "timeline": get("dbatch.dashboard.timeline"),
    }
    return Limits(**{k: int(v) for k, v in values.items() if v is not None})


class DashboardPlugin(SchedulerPlugin):
    """Keeps dbatch's runs on the scheduler and shows them on its dashboard.

    Parameters
    ----------
    ledger
        A ledger URL whose earlier runs the page lists (default: the
        ``dbatch.dashboard.ledger`` setting of the scheduler, else none).
    """

    name = PLUGIN_NAME
    idempotent = True

    def __init__(self, ledger: str | None = None):
        self.ledger = ledger
        self.board = Board()
        self.scheduler: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {"ledger": self.ledger}  # sent to the scheduler: settings, never state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state.get("ledger"))  # type: ignore[misc]

    @property
    def ledger_url(self) -> str | None:
        return self.ledger or dask.config.get("dbatch.dashboard.ledger", default=None) or None

    async def start(self, scheduler: Any) -> None:
        self.scheduler = scheduler
        self.board = Board(_limits())
        scheduler.handlers[HANDLER] = self.receive
        from . import metrics

        metrics.serve(self)
        add_pages(scheduler)

    async def close(self) -> None:
        from . import metrics

        metrics.unserve(self)
        if self.scheduler is not None and self.scheduler.handlers.get(HANDLER) == self.receive:
            del self.scheduler.handlers[HANDLER]

    def receive(self, events: Sequence[dict[str, Any]] = ()) -> int:
        """Feed ``events`` (messages of ``state.to_message``); returns how many were taken."""
        taken = 0
        for message in events:
            try:
                self.board.feed(message)
                taken += 1
            except (KeyError, TypeError, ValueError) as e:
                log.warning("dbatch dashboard: ignored a malformed event (%s): %.200r", e, message)
        return taken


def register(client: Any, ledger: str | None = None) -> bool:
    """Make sure the scheduler of ``client`` runs the plugin; False (and a warning) if it cannot.

    A scheduler that already has it (its preload, an earlier run) keeps the one it has.
    """
    try:
        client.register_plugin(DashboardPlugin(ledger), name=PLUGIN_NAME)  # idempotent: kept
        return True
    except Exception as e:  # noqa: BLE001 - a scheduler that cannot import dbatch, an old one
        log.warning(
            "dbatch: the scheduler at %s did not take the dbatch dashboard plugin (%s: %s); "
            "runs go on without the dbatch page. Install dbatch where the scheduler runs, or "
            "start it with `dask scheduler --preload dbatch.dashboard`.",
            getattr(client, "scheduler", None) and client.scheduler.address,
            type(e).__name__,
            e,
        )
        return False


def plugin_of(scheduler: Any) -> DashboardPlugin | None:
    found = scheduler.plugins.get(PLUGIN_NAME)
    return found if isinstance(found, DashboardPlugin) else None


# -- the pages: Bokeh applications added to the dashboard's BokehTornado ------------


def add_pages(scheduler: Any) -> None:
    """Add the dbatch pages to ``scheduler``'s dashboard, once (none without a dashboard)."""
    bokeh_app = _bokeh_tornado(scheduler)
    if bokeh_app is None:
        log.info("dbatch dashboard: this scheduler serves no Bokeh dashboard; no dbatch page")
        return
    from distributed.dashboard.scheduler import template_variables

    from . import page

    variables = template_variables(scheduler)  # memoized: the dict every page's menu reads
    if "dbatch" not in variables["pages"]:
        variables["pages"].append("dbatch")
    for url, (name, fn_name) in PAGES.items():
        if url.startswith("/individual") and not any(
            p["url"] == url.strip("/") for p in variables["plots"]
        ):
            variables["plots"].append({"url": url.strip("/"), "name": name})
        prefix = "/" + (getattr(scheduler, "http_prefix", None) or "").strip("/") + "/"
        extra = {"prefix": prefix.replace("//", "/"), **variables}
        doc_fn = functools.partial(getattr(page, fn_name), scheduler, extra)
        _add_application(bokeh_app, url, doc_fn)
    variables["plots"].sort(key=lambda d: d["name"])


def _bokeh_tornado(scheduler: Any) -> Any:
    try:
        from bokeh.server.tornado import BokehTornado
    except ImportError:
        return None
    http = getattr(scheduler, "http_application", None)
    for app in getattr(http, "applications", ()):
        if isinstance(app, BokehTornado):
            return app
    return None


def _add_application(bokeh_app: Any, url: str, doc_fn: Callable[..., None]) -> None:
    """What ``BokehTornado.__init__`` does for each application, for one more after the start."""
    from bokeh.application import Application
    from bokeh.application.handlers.function import FunctionHandler
    from bokeh.server.contexts import ApplicationContext
    from bokeh.server.tornado import create_static_handler
    from bokeh.server.urls import per_app_patterns

    if url in bokeh_app._applications:
        return
    app = Application(FunctionHandler(doc_fn))
    context = ApplicationContext(app, url=url, logout_url=None)
    context._loop = bokeh_app._loop
    prefix = bokeh_app._prefix
    ws_path = prefix + url + "/ws"
    routes: list[Any] = [
        (
            prefix + url + pattern,
            handler,
            {"application_context": context, "bokeh_websocket_path": ws_path},
        )
        for pattern, handler, *_ in per_app_patterns
    ]
    routes.append(create_static_handler(prefix, url, app))
    bokeh_app._applications[url] = context
    bokeh_app.add_handlers(r".*", routes)
    context.run_load_hook()
