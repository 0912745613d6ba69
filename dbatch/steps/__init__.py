"""Steps: user functions, SQL filters and derived columns, lookups, aggregation."""

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

_WHERE = {
    "Step": ".base",
    "Map": ".base",
    "Filter": ".base",
    "Derive": ".base",
    "Sql": ".base",
    "SharedObject": ".base",
    "Enrich": ".enrich",
    "Aggregate": ".aggregate",
    "Predict": ".predict",
}

__all__ = list(_WHERE)

__getattr__, __dir__ = lazy_exports(__name__, _WHERE)

if TYPE_CHECKING:
    from .aggregate import Aggregate as Aggregate
    from .base import Derive as Derive
    from .base import Filter as Filter
    from .base import Map as Map
    from .base import SharedObject as SharedObject
    from .base import Sql as Sql
    from .base import Step as Step
    from .enrich import Enrich as Enrich
    from .predict import Predict as Predict
