"""A preload module for Dask schedulers: the dbatch page and metrics from the start.

Run a scheduler with it, on any machine where dbatch is installed::

    dask scheduler --preload dbatch.dashboard

and the dashboard shows a *dbatch* page (``/dbatch``) for every run that
connects to it, and ``/metrics`` exports dbatch's counters. The
``dbatch.dashboard.ledger`` setting (``DASK_DBATCH__DASHBOARD__LEDGER``) names a
ledger whose earlier runs the page lists. A scheduler started without it gets
the same plugin when a dbatch run connects.
"""

from __future__ import annotations

from typing import Any

from .monitor.board.plugin import PLUGIN_NAME, DashboardPlugin

__all__ = ["dask_setup", "DashboardPlugin"]


def dask_setup(scheduler: Any) -> None:
    """Called by ``--preload``: add the plugin (the scheduler starts it with itself)."""
    scheduler.add_plugin(DashboardPlugin(), name=PLUGIN_NAME, idempotent=True)
