"""A database table or query as a source: key ranges or time windows, streamed into Arrow."""

from .source import SqlSource

__all__ = ["SqlSource"]
