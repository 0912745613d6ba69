"""Executors: where a run's tasks run (a Dask cluster, or this process), behind one interface."""

from .base import Executor, Handle, Outcome
from .local import LocalExecutor

__all__ = ["Executor", "Handle", "Outcome", "LocalExecutor", "DaskExecutor"]


def __getattr__(name: str) -> object:
    if name == "DaskExecutor":  # imports distributed: only when asked for
        from .dask import DaskExecutor

        return DaskExecutor
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
