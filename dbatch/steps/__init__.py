"""Steps: user functions, SQL filters and derived columns, lookups, aggregation."""

from .aggregate import Aggregate
from .base import Derive, Filter, Map, SharedObject, Sql, Step
from .enrich import Enrich
from .predict import Predict

__all__ = ["Step", "Map", "Filter", "Derive", "Sql", "Enrich", "Aggregate", "Predict", "SharedObject"]
