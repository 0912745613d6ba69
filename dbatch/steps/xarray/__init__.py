"""Steps on xarray Datasets: a user function, resampling, anomalies, unit conversion."""

from typing import TYPE_CHECKING

from ..._lazy import lazy_exports

_WHERE = {
    "XarrayMap": ".map",
    "Resample": ".resample",
    "Anomaly": ".anomaly",
    "ConvertUnits": ".units",
}

__all__ = list(_WHERE)

__getattr__, __dir__ = lazy_exports(__name__, _WHERE)

if TYPE_CHECKING:
    from .anomaly import Anomaly as Anomaly
    from .map import XarrayMap as XarrayMap
    from .resample import Resample as Resample
    from .units import ConvertUnits as ConvertUnits
