"""What the xarray steps share: the batch as a Dataset, its variables along the batch dimension."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ...context import BatchContext
from ...errors import JobSpecError

if TYPE_CHECKING:
    import xarray as xr

__all__ = ["as_dataset", "along", "count_dropped"]


def as_dataset(data: Any, step: str) -> xr.Dataset:
    """``data`` itself when it is an xarray Dataset; else a JobSpecError naming ``step``.

    Examples
    --------
    >>> as_dataset(batch_data, "resample")  # doctest: +SKIP
    """
    import xarray as xr

    if isinstance(data, xr.Dataset):
        return data
    raise JobSpecError(
        f"the {step} step works on an xarray Dataset, got {type(data).__name__}; "
        "use a netcdf or zarr source, or a table step such as map or filter",
        key="steps",
    )


def along(ds: xr.Dataset, dim: str) -> list:
    """The data variables of ``ds`` that run along ``dim``.

    Examples
    --------
    >>> along(ds, "time")  # doctest: +SKIP
    ['temperature']
    """
    return [v for v in ds.data_vars if dim in ds[v].dims]


def count_dropped(before: xr.Dataset, after: xr.Dataset, dim: str, ctx: BatchContext) -> None:
    """Count the points a step removed along ``dim`` as filtered in ``ctx``.

    Examples
    --------
    >>> count_dropped(ds, ds.isel(time=slice(0, 2)), "time", ctx)  # doctest: +SKIP
    """
    n_in, n_out = before.sizes.get(dim, 0), after.sizes.get(dim, 0)
    if n_out < n_in:
        ctx.filtered(n_in - n_out)
