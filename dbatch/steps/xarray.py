"""Steps on xarray Datasets: a user function, resampling, anomalies, unit conversion."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from ..batching import frequency
from ..context import BatchContext
from ..core import digest
from ..errors import BadInputError, JobSpecError
from .base import SharedObject, Step, function_token

if TYPE_CHECKING:
    import xarray as xr

__all__ = ["XarrayMap", "Resample", "Anomaly", "ConvertUnits"]

_STATS = ("mean", "min", "max", "sum", "std", "var", "median", "count", "first", "last")


def _dataset(data: Any, step: str) -> xr.Dataset:
    import xarray as xr

    if isinstance(data, xr.Dataset):
        return data
    raise JobSpecError(
        f"the {step} step works on an xarray Dataset, got {type(data).__name__}; "
        "use a netcdf or zarr source, or a table step such as map or filter",
        key="steps",
    )


def _along(ds: xr.Dataset, dim: str) -> list:
    return [v for v in ds.data_vars if dim in ds[v].dims]


@dataclass(frozen=True)
class XarrayMap(Step):
    """Apply a function ``Dataset -> Dataset`` to each batch.

    Points it removes along ``dim`` are counted as filtered, so rows in = rows
    out + filtered + quarantined still holds. In a job file, ``function`` is an
    import path.

    Examples
    --------
    >>> XarrayMap(lambda ds: ds.where(ds.temperature > 0))  # doctest: +SKIP

    .. code-block:: yaml

        steps:
          - xarray: {function: mysteps:clean}
    """

    function: Callable[[Any], Any] | str
    dim: str = "time"

    def __post_init__(self):
        if isinstance(self.function, str):
            from ..registry import import_object

            object.__setattr__(
                self, "function", import_object(self.function, key="steps.xarray.function")
            )
        if not callable(self.function):
            raise JobSpecError(f"{self.function!r} is not callable", key="steps.xarray.function")

    def apply(self, data, ctx: BatchContext):
        import xarray as xr

        ds = _dataset(data, "xarray")
        if self.dim not in ds.dims:
            return ds  # an empty batch (every input quarantined)
        func = cast(Callable[[Any], Any], self.function)
        out = func(ds)
        if not isinstance(out, xr.Dataset):
            raise JobSpecError(
                f"{function_token(func)[0]} returned {type(out).__name__}; "
                "return an xarray Dataset (DataArray.to_dataset() makes one)",
                key="steps.xarray.function",
            )
        _count_dropped(ds, out, self.dim, ctx)
        return out

    def token(self):
        return ["xarray", self.dim, *function_token(cast(Callable[[Any], Any], self.function))]


def _count_dropped(before: xr.Dataset, after: xr.Dataset, dim: str, ctx: BatchContext) -> None:
    n_in, n_out = before.sizes.get(dim, 0), after.sizes.get(dim, 0)
    if n_out < n_in:
        ctx.filtered(n_in - n_out)


@dataclass(frozen=True)
class Resample(Step):
    """Statistics per time window (daily means, hourly maxima...) of every variable along ``dim``.

    With one statistic, variables keep their names; with several, each becomes
    ``<name>_<stat>``. Variables without ``dim`` pass through. Points folded into
    a window are counted as filtered (rows in = rows out + filtered). Each batch
    must hold whole windows: batch daily files by day (``ByWindow("1D")``) for
    daily statistics, or the last window of one batch and the first of the next
    would each hold part of a day.

    Examples
    --------
    >>> Resample("1D", how=["mean", "max"])  # doctest: +SKIP

    .. code-block:: yaml

        steps:
          - resample: {freq: 1D, how: [mean, min, max]}
    """

    freq: str = "1D"
    how: str | Sequence[str] = "mean"
    dim: str = "time"

    def __post_init__(self):
        how = (self.how,) if isinstance(self.how, str) else tuple(self.how)
        unknown = [h for h in how if h not in _STATS]
        if not how or unknown:
            raise JobSpecError(
                f"unknown statistic(s) {unknown or how}; choose from {list(_STATS)}",
                key="steps.resample.how",
            )
        object.__setattr__(self, "how", how)
        frequency(self.freq, key="steps.resample.freq")

    def apply(self, data, ctx: BatchContext):
        import xarray as xr

        ds = _dataset(data, "resample")
        if self.dim not in ds.dims:
            return ds
        moving = _along(ds, self.dim)
        static = ds.drop_vars(moving + [self.dim])
        windows = ds[moving].resample({self.dim: self.freq})
        parts = []
        for stat in self.how:
            out = getattr(windows, stat)(keep_attrs=True)
            if len(self.how) > 1:
                out = out.rename({v: f"{v}_{stat}" for v in moving})
            parts.append(out)
        result = xr.merge(
            [*parts, static], compat="override", join="exact", combine_attrs="override"
        )
        result.attrs = dict(ds.attrs)
        _count_dropped(ds, result, self.dim, ctx)
        return result

    def token(self):
        return ["resample", self.freq, list(self.how), self.dim]


_CLIMATOLOGY_CACHE: dict[tuple, Any] = {}


@dataclass(frozen=True)
class Anomaly(Step):
    """Subtract a climatology: ``value - climatology[by]`` (``by``: month, dayofyear, hour...).

    ``climatology`` is a Dataset (sent once per worker) or the path of a NetCDF
    file or Zarr store whose variables have a dimension named ``by``. Variables
    it does not hold pass through unchanged.

    Examples
    --------
    >>> clim = archive.groupby("time.month").mean()  # doctest: +SKIP
    >>> Anomaly(clim, by="month")  # doctest: +SKIP

    .. code-block:: yaml

        steps:
          - anomaly: {climatology: climatology.nc, by: month}
    """

    climatology: Any
    by: str = "month"
    dim: str = "time"
    _shared: Any = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self):
        import xarray as xr

        if isinstance(self.climatology, xr.Dataset):
            if self.by not in self.climatology.dims:
                raise JobSpecError(
                    f"the climatology has no dimension '{self.by}' (it has "
                    f"{list(map(str, self.climatology.dims))}); build it with "
                    f"ds.groupby('{self.dim}.{self.by}').mean()",
                    key="steps.anomaly.climatology",
                )
            from dask.base import tokenize

            token = f"climatology-{tokenize(self.climatology)}"
            object.__setattr__(self, "_shared", SharedObject(self.climatology, token))
        elif not isinstance(self.climatology, (str, os.PathLike)):
            raise JobSpecError(
                "climatology must be an xarray Dataset or the path of a NetCDF file or Zarr store",
                key="steps.anomaly.climatology",
            )

    def __getstate__(self):
        state = dict(self.__dict__)
        if state.get("_shared") is not None:
            state["climatology"] = None  # the object travels once per worker, as a SharedObject
        return state

    def __setstate__(self, state):
        for k, v in state.items():
            object.__setattr__(self, k, v)

    def shared_objects(self) -> list[SharedObject]:
        return [self._shared] if self._shared is not None else []

    def _load(self, ctx: BatchContext) -> xr.Dataset:
        if self._shared is not None:
            return self._shared.get(ctx)
        import xarray as xr

        path = str(self.climatology)
        st = os.stat(path)
        key = (path, st.st_size, st.st_mtime)
        if key not in _CLIMATOLOGY_CACHE:
            if os.path.isdir(path):
                clim = xr.open_zarr(path, chunks=None, consolidated=False)
            else:
                clim = xr.open_dataset(path, chunks=None, cache=False)
            with clim:
                _CLIMATOLOGY_CACHE.clear()
                _CLIMATOLOGY_CACHE[key] = clim.load()
        return _CLIMATOLOGY_CACHE[key]

    def apply(self, data, ctx: BatchContext):
        ds = _dataset(data, "anomaly")
        if self.dim not in ds.dims:
            return ds
        clim = self._load(ctx)
        if self.by not in clim.dims:
            raise JobSpecError(
                f"the climatology {self.climatology!r} has no dimension '{self.by}'",
                key="steps.anomaly.by",
            )
        names = [v for v in _along(ds, self.dim) if v in clim.data_vars]
        if not names:
            raise BadInputError(
                f"none of the batch's variables {sorted(map(str, ds.data_vars))} is in the "
                f"climatology ({sorted(map(str, clim.data_vars))})",
                kind="climatology",
                where="step anomaly",
            )
        grouped = ds[names].groupby(f"{self.dim}.{self.by}")
        anomalies = (grouped - clim[names]).drop_vars(self.by, errors="ignore")
        out = ds.copy()
        for name in names:
            out[name] = anomalies[name].assign_attrs(ds[name].attrs)
        return out

    def token(self):
        if self._shared is not None:
            return ["anomaly", self.by, self.dim, self._shared.token]
        path = str(self.climatology)
        try:
            st = os.stat(path)
            ident = [st.st_size, st.st_mtime]
        except OSError:
            ident = []
        return ["anomaly", self.by, self.dim, path, *ident]


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
        import numpy as np

        ds = _dataset(data, "convert_units")
        if not ds.data_vars:
            return ds
        out = ds.copy()
        for name, target in self.to.items():
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
            out[name] = values.astype(dtype).assign_attrs({**var.attrs, "units": target})
        return out

    def token(self):
        return ["convert_units", sorted(self.to.items()), digest(sorted(_UNITS.items()))]
