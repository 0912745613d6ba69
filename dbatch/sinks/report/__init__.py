"""A report sink: the run's output as Parquet plus one self-contained HTML page of Bokeh charts."""

from .sink import ReportSink

__all__ = ["ReportSink"]
