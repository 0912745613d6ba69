"""dbatch: parallel batch jobs on Dask, with exactly-once output, resume and quarantine."""

from . import config  # noqa: F401  (loads the dbatch.* defaults into dask.config)
from .batching import ByCount, BySize, ByThreshold, ByWindow
from .cluster import connect
from .core import Batch, Event, Plan, Unit
from .errors import (
    BadInputError,
    DBatchError,
    JobSpecError,
    RunFailedError,
    RunLockedError,
    SourceError,
    TransientError,
)
from .ledger import Ledger
from .monitor.alerts import Alert
from .monitor.result import RunResult
from .pipeline import Pipeline
from .sinks import CsvSink, ParquetSink, ReportSink, SqlSink
from .sinks.zarr import NetCDFSink, ZarrSink
from .sources import Files, HttpSource, SqlSource
from .sources.xarray import NetCDFSource, ZarrSource
from .steps import Aggregate, Derive, Enrich, Filter, Map, Predict, Sql
from .steps.xarray import Anomaly, ConvertUnits, Resample, XarrayMap
from .triggers import Arrival, Cron, Interval

__version__ = "0.1.0"

__all__ = [
    "Pipeline",
    "Plan",
    "Batch",
    "Unit",
    "Event",
    "RunResult",
    "Files",
    "SqlSource",
    "HttpSource",
    "SqlSink",
    "NetCDFSource",
    "ZarrSource",
    "ZarrSink",
    "NetCDFSink",
    "XarrayMap",
    "Resample",
    "Anomaly",
    "ConvertUnits",
    "ParquetSink",
    "ReportSink",
    "CsvSink",
    "Map",
    "Filter",
    "Derive",
    "Sql",
    "Enrich",
    "Aggregate",
    "Predict",
    "BySize",
    "ByCount",
    "ByWindow",
    "ByThreshold",
    "Cron",
    "Interval",
    "Arrival",
    "Alert",
    "Ledger",
    "connect",
    "DBatchError",
    "JobSpecError",
    "SourceError",
    "BadInputError",
    "RunFailedError",
    "RunLockedError",
    "TransientError",
]
