"""Anomalies: each value minus its climatology (per month, day of year, hour...)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ...context import BatchContext
from ...errors import BadInputError, JobSpecError
from ..base import SharedObject, Step
from .dataset import along, as_dataset

if TYPE_CHECKING:
    import xarray as xr

__all__ = ["Anomaly"]

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
        ds = as_dataset(data, "anomaly")
        if self.dim not in ds.dims:
            return ds
        clim = self._load(ctx)
        if self.by not in clim.dims:
            raise JobSpecError(
                f"the climatology {self.climatology!r} has no dimension '{self.by}'",
                key="steps.anomaly.by",
            )
        names = [v for v in along(ds, self.dim) if v in clim.data_vars]
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
