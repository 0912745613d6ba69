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
from .monitor.result import RunResult
from .pipeline import Pipeline
from .sinks import CsvSink, ParquetSink
from .sources import Files
from .steps import Aggregate, Derive, Enrich, Filter, Map, Sql

__version__ = "0.1.0"

__all__ = [
    "Pipeline",
    "Plan",
    "Batch",
    "Unit",
    "Event",
    "RunResult",
    "Files",
    "ParquetSink",
    "CsvSink",
    "Map",
    "Filter",
    "Derive",
    "Sql",
    "Enrich",
    "Aggregate",
    "BySize",
    "ByCount",
    "ByWindow",
    "ByThreshold",
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
