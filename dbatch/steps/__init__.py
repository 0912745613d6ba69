"""Steps: user functions, SQL filters and derived columns, lookups, aggregation."""

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

_WHERE = {
    "Step": ".base",
    "Map": ".base",
    "RelationStep": ".base",
    "Filter": ".sql",
    "Derive": ".sql",
    "Sql": ".sql",
    "SharedObject": ".base",
    "Enrich": ".enrich",
    "Aggregate": ".aggregate",
    "Predict": ".predict",
}

__all__ = list(_WHERE)

__getattr__, __dir__ = lazy_exports(__name__, _WHERE)

if TYPE_CHECKING:
    from .aggregate import Aggregate as Aggregate
    from .base import Map as Map
    from .base import RelationStep as RelationStep
    from .base import SharedObject as SharedObject
    from .base import Step as Step
    from .enrich import Enrich as Enrich
    from .predict import Predict as Predict
    from .sql import Derive as Derive
    from .sql import Filter as Filter
    from .sql import Sql as Sql
