"""A user function ``Dataset -> Dataset`` applied to each batch."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from ...context import BatchContext
from ...errors import JobSpecError
from ..base import Step, function_token
from .dataset import as_dataset, count_dropped

__all__ = ["XarrayMap"]


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
            from ...registry import import_object

            object.__setattr__(
                self, "function", import_object(self.function, key="steps.xarray.function")
            )
        if not callable(self.function):
            raise JobSpecError(f"{self.function!r} is not callable", key="steps.xarray.function")

    def apply(self, data, ctx: BatchContext):
        import xarray as xr

        ds = as_dataset(data, "xarray")
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
        count_dropped(ds, out, self.dim, ctx)
        return out

    def token(self):
        return ["xarray", self.dim, *function_token(cast(Callable[[Any], Any], self.function))]
