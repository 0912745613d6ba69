"""dbatch: parallel batch jobs on Dask, with exactly-once output, resume and quarantine."""

from typing import TYPE_CHECKING

from . import config  # noqa: F401  (loads the dbatch.* defaults into dask.config)
from ._lazy import lazy_exports

__version__ = "0.1.0"

# Imported on first use, so that a worker loads only what a pipeline is made of.
_WHERE = {
    "Pipeline": ".pipeline",
    "Plan": ".core",
    "Batch": ".core",
    "Unit": ".core",
    "Event": ".core",
    "RunResult": ".monitor.result",
    "Files": ".sources.files",
    "SqlSource": ".sources.sql",
    "HttpSource": ".sources.http",
    "NetCDFSource": ".sources.xarray.netcdf",
    "ZarrSource": ".sources.xarray.zarr",
    "ParquetSink": ".sinks.files",
    "CsvSink": ".sinks.files",
    "ReportSink": ".sinks.report",
    "SqlSink": ".sinks.sql",
    "ZarrSink": ".sinks.zarr.sink",
    "NetCDFSink": ".sinks.netcdf",
    "Map": ".steps.base",
    "Filter": ".steps.sql",
    "Derive": ".steps.sql",
    "Sql": ".steps.sql",
    "Enrich": ".steps.enrich",
    "Aggregate": ".steps.aggregate",
    "Predict": ".steps.predict",
    "XarrayMap": ".steps.xarray.map",
    "Resample": ".steps.xarray.resample",
    "Anomaly": ".steps.xarray.anomaly",
    "ConvertUnits": ".steps.xarray.units",
    "BySize": ".batching",
    "ByCount": ".batching",
    "ByWindow": ".batching",
    "ByThreshold": ".batching",
    "Cron": ".triggers",
    "Interval": ".triggers",
    "Arrival": ".triggers",
    "Alert": ".monitor.alerts",
    "Ledger": ".ledger",
    "connect": ".cluster",
    "DBatchError": ".errors",
    "JobSpecError": ".errors",
    "SourceError": ".errors",
    "BadInputError": ".errors",
    "RunFailedError": ".errors",
    "RunLockedError": ".errors",
    "TransientError": ".errors",
}

__all__ = list(_WHERE)

__getattr__, __dir__ = lazy_exports(__name__, _WHERE)

if TYPE_CHECKING:  # for type checkers and editors
    from .batching import ByCount as ByCount
    from .batching import BySize as BySize
    from .batching import ByThreshold as ByThreshold
    from .batching import ByWindow as ByWindow
    from .cluster import connect as connect
    from .core import Batch as Batch
    from .core import Event as Event
    from .core import Plan as Plan
    from .core import Unit as Unit
    from .errors import BadInputError as BadInputError
    from .errors import DBatchError as DBatchError
    from .errors import JobSpecError as JobSpecError
    from .errors import RunFailedError as RunFailedError
    from .errors import RunLockedError as RunLockedError
    from .errors import SourceError as SourceError
    from .errors import TransientError as TransientError
    from .ledger import Ledger as Ledger
    from .monitor.alerts import Alert as Alert
    from .monitor.result import RunResult as RunResult
    from .pipeline import Pipeline as Pipeline
    from .sinks.files import CsvSink as CsvSink
    from .sinks.files import ParquetSink as ParquetSink
    from .sinks.netcdf import NetCDFSink as NetCDFSink
    from .sinks.report import ReportSink as ReportSink
    from .sinks.sql import SqlSink as SqlSink
    from .sinks.zarr.sink import ZarrSink as ZarrSink
    from .sources.files import Files as Files
    from .sources.http import HttpSource as HttpSource
    from .sources.sql import SqlSource as SqlSource
    from .sources.xarray.netcdf import NetCDFSource as NetCDFSource
    from .sources.xarray.zarr import ZarrSource as ZarrSource
    from .steps.aggregate import Aggregate as Aggregate
    from .steps.base import Map as Map
    from .steps.enrich import Enrich as Enrich
    from .steps.predict import Predict as Predict
    from .steps.sql import Derive as Derive
    from .steps.sql import Filter as Filter
    from .steps.sql import Sql as Sql
    from .steps.xarray.anomaly import Anomaly as Anomaly
    from .steps.xarray.map import XarrayMap as XarrayMap
    from .steps.xarray.resample import Resample as Resample
    from .steps.xarray.units import ConvertUnits as ConvertUnits
    from .triggers import Arrival as Arrival
    from .triggers import Cron as Cron
    from .triggers import Interval as Interval
