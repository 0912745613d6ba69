"""Statistics per time window (daily means, hourly maxima...) of the variables along a dimension."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ...context import BatchContext
from ...errors import JobSpecError
from ...windows import frequency
from ..base import Step
from .dataset import along, as_dataset, count_dropped

__all__ = ["Resample"]

_STATS = ("mean", "min", "max", "sum", "std", "var", "median", "count", "first", "last")


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

        ds = as_dataset(data, "resample")
        if self.dim not in ds.dims:
            return ds
        moving = along(ds, self.dim)
        static = ds.drop_vars(moving + [self.dim])
        windows = ds[moving].resample({self.dim: self.freq})
        parts = []
        for stat in self.how:
            out = getattr(windows, stat)(keep_attrs=True)  # a name of _STATS, checked above
            if len(self.how) > 1:
                out = out.rename({v: f"{v}_{stat}" for v in moving})
            parts.append(out)
        result = xr.merge(
            [*parts, static], compat="override", join="exact", combine_attrs="override"
        )
        result.attrs = dict(ds.attrs)
        count_dropped(ds, result, self.dim, ctx)
        return result

    def token(self):
        return ["resample", self.freq, list(self.how), self.dim]
