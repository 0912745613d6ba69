"""Unit conversion of variables (temperatures, pressures, speeds...), read from their attributes."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ...context import BatchContext
from ...core import digest
from ...errors import BadInputError, JobSpecError
from ..base import Step
from .dataset import as_dataset

if TYPE_CHECKING:
    import xarray as xr

__all__ = ["ConvertUnits"]

# unit -> (quantity, scale, offset): value in the quantity's base unit = value * scale + offset
_UNITS: dict[str, tuple[str, float, float]] = {
    "K": ("temperature", 1.0, 0.0),
    "degC": ("temperature", 1.0, 273.15),
    "degF": ("temperature", 5 / 9, 273.15 - 32 * 5 / 9),
    "Pa": ("pressure", 1.0, 0.0),
    "hPa": ("pressure", 100.0, 0.0),
    "kPa": ("pressure", 1000.0, 0.0),
    "bar": ("pressure", 1e5, 0.0),
    "m/s": ("speed", 1.0, 0.0),
    "km/h": ("speed", 1 / 3.6, 0.0),
    "knot": ("speed", 1852 / 3600, 0.0),
    "mph": ("speed", 0.44704, 0.0),
    "m": ("length", 1.0, 0.0),
    "cm": ("length", 0.01, 0.0),
    "mm": ("length", 0.001, 0.0),
    "km": ("length", 1000.0, 0.0),
    "mm/s": ("precipitation rate", 1.0, 0.0),
    "mm/h": ("precipitation rate", 1 / 3600, 0.0),
    "mm/day": ("precipitation rate", 1 / 86400, 0.0),
    "1": ("fraction", 1.0, 0.0),
    "%": ("fraction", 0.01, 0.0),
}
_ALIASES = {
    "kelvin": "K",
    "degK": "K",
    "celsius": "degC",
    "degrees_C": "degC",
    "degree_Celsius": "degC",
    "°C": "degC",
    "C": "degC",
    "fahrenheit": "degF",
    "°F": "degF",
    "F": "degF",
    "mbar": "hPa",
    "millibar": "hPa",
    "m s-1": "m/s",
    "m s**-1": "m/s",
    "km h-1": "km/h",
    "kt": "knot",
    "knots": "knot",
    "mm h-1": "mm/h",
    "mm d-1": "mm/day",
    "mm/d": "mm/day",
    "kg m-2 s-1": "mm/s",
    "percent": "%",
}


def _unit(name: str) -> str | None:
    name = str(name).strip()
    name = _ALIASES.get(name, name)
    return name if name in _UNITS else None


@dataclass(frozen=True)
class ConvertUnits(Step):
    """Convert variables to other units, reading each variable's ``units`` attribute.

    Temperatures (K, degC, degF), pressures (Pa, hPa, kPa, bar), speeds (m/s,
    km/h, knot, mph), lengths (m, cm, mm, km), precipitation rates (mm/s =
    kg m-2 s-1, mm/h, mm/day) and fractions (1, %). The ``units`` attribute is
    updated; a variable without one, or in a unit of another quantity, fails the
    batch with a message naming it.

    Examples
    --------
    >>> ConvertUnits({"temperature": "degC", "pressure": "hPa"})  # doctest: +SKIP

    .. code-block:: yaml

        steps:
          - convert_units: {to: {temperature: degC}}
    """

    to: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self):
        if not self.to:
            raise JobSpecError(
                "name at least one variable and its unit", key="steps.convert_units.to"
            )
        bad = {v: u for v, u in self.to.items() if _unit(u) is None}
        if bad:
            raise JobSpecError(
                f"unknown unit(s) {bad}; known: {sorted(_UNITS)}", key="steps.convert_units.to"
            )
        object.__setattr__(self, "to", dict(self.to))

    def apply(self, data, ctx: BatchContext):
        ds = as_dataset(data, "convert_units")
        if not ds.data_vars:
            return ds
        out = ds.copy()
        for name, target in self.to.items():
            out[name] = _converted(ds, name, target)
        return out

    def token(self):
        return ["convert_units", sorted(self.to.items()), digest(sorted(_UNITS.items()))]


def _converted(ds: xr.Dataset, name: str, target: str) -> xr.DataArray:
    """Variable ``name`` of ``ds`` in unit ``target``, its ``units`` attribute updated."""
    import numpy as np

    if name not in ds.variables:
        raise BadInputError(
            f"variable '{name}' is not in the batch (it has {sorted(map(str, ds.data_vars))}); "
            "fix the step's `to:` mapping",
            kind="missing_variable",
            where="step convert_units",
        )
    var = ds[name]
    have = var.attrs.get("units")
    source = _unit(have) if have is not None else None
    if source is None:
        raise BadInputError(
            f"variable '{name}' has units {have!r}, which this step cannot read; "
            f"known: {sorted(_UNITS)}",
            kind="units",
            where="step convert_units",
        )
    q_from, s_from, o_from = _UNITS[source]
    q_to, s_to, o_to = _UNITS[_unit(target) or target]
    if q_from != q_to:
        raise BadInputError(
            f"variable '{name}' is a {q_from} ({have}); it cannot become {target} ({q_to})",
            kind="units",
            where="step convert_units",
        )
    dtype = var.dtype if np.issubdtype(var.dtype, np.floating) else np.float64
    values = ((var * s_from + o_from) - o_to) / s_to
    return values.astype(dtype).assign_attrs({**var.attrs, "units": target})
