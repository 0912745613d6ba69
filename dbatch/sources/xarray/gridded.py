"""What the NetCDF and Zarr sources share: members, units per member or per slice, layout checks."""

from __future__ import annotations

import glob
import os
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ...context import BatchContext
from ...core import Unit
from ...errors import JobSpecError, SourceError
from ...layout import Layout, summarize
from ...windows import frequency, window_start

if TYPE_CHECKING:
    import xarray as xr

__all__ = ["GriddedSource", "Member", "combine", "expand"]


@dataclass(frozen=True)
class Member:
    """One file or store as listed: its identity, its values along ``dim`` and its layout."""

    key: str
    size: int
    mtime: float | None
    times: Any  # numpy array of the coordinate along dim, or None when unreadable
    layout: Layout | None
    chunk: int | None = None
    chunk_layout: str = ""
    row_bytes: int = 0


def expand(path: str | Sequence[str], what: str) -> list[str]:
    """The absolute paths a path, glob pattern or list of them names, sorted.

    Parameters
    ----------
    path
        A path or glob pattern, or a list of them (local or ``file://``).
    what
        The source's kind, for the messages (``"netcdf"``, ``"zarr"``).

    Examples
    --------
    >>> expand("archive/*.nc", "netcdf")  # doctest: +SKIP
    ['/data/archive/2024-01.nc', '/data/archive/2024-02.nc']
    """
    patterns = [path] if isinstance(path, str) else list(path)
    found: set[str] = set()
    for p in patterns:
        if "://" in str(p) and not str(p).startswith("file://"):
            raise JobSpecError(f"{what} reads local or mounted paths; got {p!r}", key="source.path")
        p = os.path.expanduser(str(p).removeprefix("file://"))
        matches = glob.glob(p) if glob.has_magic(p) else ([p] if os.path.exists(p) else [])
        found.update(os.path.abspath(m) for m in matches)
    if not found:
        raise SourceError(
            f"no {what} input matches {path!r}; check the pattern (relative paths are taken "
            "from the job file's folder)"
        )
    return sorted(found)


def combine(pieces: list[xr.Dataset], dim: str) -> xr.Dataset:
    """The slices of one batch as one Dataset, sorted along ``dim`` (empty without slices).

    Examples
    --------
    >>> combine([january, february], "time")  # doctest: +SKIP
    """
    import xarray as xr

    if not pieces:
        return xr.Dataset()
    if len(pieces) == 1:
        return pieces[0]
    combined = xr.concat(
        pieces,
        dim=dim,
        data_vars="minimal",
        coords="minimal",
        compat="override",
        join="exact",
        combine_attrs="override",
    )
    return combined.sortby(dim)


def _reference(members: Sequence[Member]) -> Layout | None:
    """The layout most members share (ties: the earliest member's)."""
    layouts = [m.layout for m in members if m.layout is not None]
    if not layouts:
        return None
    counts = Counter(lay.signature for lay in layouts)
    best = max(counts.values())
    return next(lay for lay in layouts if counts[lay.signature] == best)


def _epoch_seconds(value: Any) -> float | None:
    import numpy as np

    if not np.issubdtype(np.asarray(value).dtype, np.datetime64):
        return None
    return float(np.datetime64(value, "ns").astype("int64")) / 1e9


def _label(value: Any) -> str:
    import numpy as np
    import pandas as pd

    if np.issubdtype(np.asarray(value).dtype, np.datetime64):
        return pd.Timestamp(value).isoformat()
    return str(value)


def _windows(times: Any, freq: str) -> Iterator[tuple[str, int, int]]:
    """``(window start label, first index, stop index)`` for sorted datetimes."""
    import numpy as np
    import pandas as pd

    index = pd.DatetimeIndex(times)
    offset = frequency(freq, key="source.split")
    try:
        starts = index.floor(offset)
    except ValueError:  # calendar frequencies (months, weeks)
        starts = pd.DatetimeIndex([window_start(t, offset) for t in index])
    if len(index) and not index.is_monotonic_increasing:
        raise SourceError(f"values along the dimension are not sorted ({summarize(times)})")
    values = starts.values
    edges = np.flatnonzero(np.r_[True, values[1:] != values[:-1]])
    stops = np.r_[edges[1:], len(values)]
    for i0, i1 in zip(edges, stops, strict=True):
        yield pd.Timestamp(values[i0]).isoformat(), int(i0), int(i1)


class GriddedSource:
    """What NetCDF and Zarr sources share: options, units per member or per slice, layout checks."""

    path: str | Sequence[str]
    dim: str
    variables: Sequence[str] | None
    split: str | None
    kind = ""

    def __post_init__(self):
        if not self.path:
            raise JobSpecError(f"the {self.kind.lower()} source needs a path", key="source.path")
        if not isinstance(self.path, str):
            object.__setattr__(self, "path", tuple(self.path))
        if self.variables is not None:
            object.__setattr__(self, "variables", tuple(self.variables))
        if self.split is not None:
            frequency(self.split, key="source.split")

    def _members(self) -> list[Member]:  # pragma: no cover
        raise NotImplementedError

    def list_units(self) -> list[Unit]:
        """One unit per member, or per slice of a member (its chunks, or ``split`` windows)."""
        members = self._members()
        reference = _reference(members)
        units = [u for m in members for u in self._units_of(m, reference)]
        return sorted(units, key=lambda u: u.key)

    def _units_of(self, m: Member, reference: Layout | None) -> list[Unit]:
        base: tuple[tuple[str, Any], ...] = (
            ("size", m.size),
            ("mtime", m.mtime),
            ("layout", m.layout.signature if m.layout else "unreadable"),
            ("expected_layout", reference),
        )
        if m.chunk_layout:
            base += (("chunks", m.chunk_layout),)
        n = 0 if m.times is None else len(m.times)
        if m.times is None or n == 0:
            return [Unit(key=m.key, size=m.size, time=m.mtime, identity=base)]
        units = []
        for label, i0, i1 in self._slices(m):
            key = m.key if label is None else f"{m.key}#{self.dim}={label}"
            when = _epoch_seconds(m.times[i0])
            units.append(
                Unit(
                    key=key,
                    size=max(1, m.row_bytes * (i1 - i0))
                    if m.row_bytes
                    else m.size * (i1 - i0) // n,
                    time=when if when is not None else m.mtime,
                    identity=(
                        *base,
                        ("start", i0),
                        ("stop", i1),
                        ("last", _label(m.times[i1 - 1])),
                    ),
                )
            )
        return units

    def _slices(self, m: Member) -> Iterator[tuple[str | None, int, int]]:
        n = len(m.times)
        if self.split is not None:
            yield from _windows(m.times, self.split)
        elif m.chunk:
            for i0 in range(0, n, m.chunk):
                yield _label(m.times[i0]), i0, min(n, i0 + m.chunk)
        else:
            yield None, 0, n

    # -- loading, on a worker --------------------------------------------------------

    def _check(
        self, ds: xr.Dataset, unit: Unit, where: str, ctx: BatchContext
    ) -> xr.Dataset | None:
        """Select the variables and check the layout; quarantine ``where`` when it does not fit."""
        if self.dim not in ds.dims:
            ctx.quarantine_file(
                where,
                "no_dimension",
                f"has no dimension '{self.dim}' (its dimensions: {list(map(str, ds.dims))}); "
                f"set dim: to the dimension the {self.kind} inputs are combined along, or move "
                "this input out of the source's path",
            )
            return None
        if self.variables is not None:
            missing = [v for v in self.variables if v not in ds.data_vars]
            if missing:
                ctx.quarantine_file(
                    where,
                    "missing_variables",
                    f"lacks variable(s) {missing}; it has {sorted(map(str, ds.data_vars))}. "
                    "Fix the input or the source's variables:, then run `dbatch replay`",
                )
                return None
            ds = ds[list(self.variables)]
        expected = dict(unit.identity).get("expected_layout")
        layout = Layout.of(ds, self.dim)
        if isinstance(expected, Layout) and layout.signature != expected.signature:
            ctx.quarantine_file(
                where,
                "layout",
                f"its grid or variables differ from the other {self.kind} inputs of this source: "
                + "; ".join(layout.differences(expected))
                + ". It was set aside and the other inputs go on; regrid or fix it (or move it "
                "out of the source's path), then run `dbatch replay`",
            )
            return None
        return ds

    def _take(
        self, ds: xr.Dataset, unit: Unit, where: str, ctx: BatchContext, seen: list
    ) -> xr.Dataset | None:
        """Cut the unit's slice, refuse overlaps with the batch's other slices, load it."""
        import numpy as np

        ident = dict(unit.identity)
        if "start" in ident:
            i0, i1 = int(ident["start"]), int(ident["stop"])
            values = ds[self.dim].values
            if i1 > len(values) or _label(values[i1 - 1]) != ident.get("last"):
                ctx.quarantine_file(
                    where,
                    "changed",
                    f"its '{self.dim}' values changed after planning; run the job again so it "
                    "is planned from its current content",
                )
                return None
            ds = ds.isel({self.dim: slice(i0, i1)})
        values = ds[self.dim].values
        overlap = values[np.isin(values, np.concatenate(seen))] if seen else values[:0]
        if len(overlap):
            ctx.quarantine_file(
                where,
                "overlap",
                f"{len(overlap)} of its '{self.dim}' values ({_label(overlap[0])} …) are also in "
                "another input of the same batch; remove the duplicate input, then run "
                "`dbatch replay`",
            )
            return None
        seen.append(values)
        ds = ds.load()
        ctx.read_rows(ds.sizes[self.dim])
        return ds
