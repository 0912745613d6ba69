"""Sinks: stage a batch's output on a worker, commit and publish it on the driver."""

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

_WHERE = {
    "Sink": ".base",
    "Part": ".base",
    "PublishedDirectory": ".base",
    "safe_join": ".base",
    "ParquetSink": ".files",
    "CsvSink": ".files",
    "ReportSink": ".report",
    "SqlSink": ".sql",
}

__all__ = list(_WHERE)

__getattr__, __dir__ = lazy_exports(__name__, _WHERE)

if TYPE_CHECKING:
    from .base import Part as Part
    from .base import PublishedDirectory as PublishedDirectory
    from .base import Sink as Sink
    from .base import safe_join as safe_join
    from .files import CsvSink as CsvSink
    from .files import ParquetSink as ParquetSink
    from .report import ReportSink as ReportSink
    from .sql import SqlSink as SqlSink
