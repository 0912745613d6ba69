"""A database table as a sink: one transaction per batch, re-runnable, with commit markers."""

from .sink import SqlSink

__all__ = ["SqlSink"]
