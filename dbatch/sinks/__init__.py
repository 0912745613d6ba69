"""Sinks: stage a batch's output on a worker, commit and publish it on the driver."""

from .base import Part, PublishedDirectory, Sink, safe_join
from .files import CsvSink, ParquetSink
from .report import ReportSink
from .sql import SqlSink

__all__ = [
    "Sink",
    "Part",
    "PublishedDirectory",
    "ParquetSink",
    "CsvSink",
    "ReportSink",
    "SqlSink",
    "safe_join",
]
