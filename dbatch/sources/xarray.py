"""Gridded sources: NetCDF files combined along a dimension, and Zarr stores, sliced into units."""

from __future__ import annotations

import glob
import hashlib
import os
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..batching import frequency, window_start
from ..context import BatchContext
from ..core import Batch, Unit, digest
from ..errors import JobSpecError, SourceError

if TYPE_CHECKING:
    import xarray as xr

__all__ = ["NetCDFSource", "ZarrSource", "Layout"]

_ENGINES = (None, "netcdf4", "h5netcdf", "scipy")


@dataclass(frozen=True)
class Layout:
    """What slices must share to be combined: everything but the batch dimension.

    ``sizes`` holds the other dimensions, ``coords`` the coordinates that do not
    run along ``dim`` (name, dims, dtype, a digest of the values and a short
    summary), ``variables`` the data variables (name, dims, dtype). ``str()``
    gives the signature, so a ``Layout`` can sit in a unit's identity.

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> ds = xr.Dataset({"t": (("time", "lat"), np.zeros((2, 3)))}, coords={"lat": [0.0, 1.0, 2.0]})
    >>> Layout.of(ds, "time").sizes
    (('lat', 3),)
    """

    dim: str
    sizes: tuple[tuple[str, int], ...]
    coords: tuple[tuple[str, tuple[str, ...], str, str, str], ...]
    variables: tuple[tuple[str, tuple[str, ...], str], ...]

    @classmethod
    def of(cls, ds: xr.Dataset, dim: str) -> Layout:
        coords = []
        for name in sorted(ds.coords, key=str):
            var = ds.coords[name]
            if dim in var.dims:
                continue
            coords.append(
                (
                    str(name),
                    tuple(map(str, var.dims)),
                    str(var.dtype),
                    _values_digest(var.values),
                    _summary(var.values),
                )
            )
        return cls(
            dim=dim,
            sizes=tuple(sorted((str(d), int(n)) for d, n in ds.sizes.items() if d != dim)),
            coords=tuple(coords),
            variables=tuple(
                (str(n), tuple(map(str, ds[n].dims)), str(ds[n].dtype))
                for n in sorted(ds.data_vars, key=str)
            ),
        )

    @property
    def signature(self) -> str:
        return digest(self.dim, self.sizes, self.coords, self.variables)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able data (``Layout.from_dict`` reads it back)."""
        return {
            "dim": self.dim,
            "sizes": [list(s) for s in self.sizes],
            "coords": [[c[0], list(c[1]), *c[2:]] for c in self.coords],
            "variables": [[v[0], list(v[1]), v[2]] for v in self.variables],
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Layout:
        return cls(
            dim=raw["dim"],
            sizes=tuple((str(d), int(n)) for d, n in raw["sizes"]),
            coords=tuple((c[0], tuple(c[1]), *c[2:]) for c in raw["coords"]),
            variables=tuple((v[0], tuple(v[1]), v[2]) for v in raw["variables"]),
        )

    def __str__(self) -> str:
        return self.signature

    def differences(self, reference: Layout) -> list[str]:
        """What differs from ``reference``, in words."""
        out = []
        mine, theirs = dict(self.sizes), dict(reference.sizes)
        for d in sorted(set(mine) | set(theirs)):
            if mine.get(d) != theirs.get(d):
                out.append(
                    f"dimension '{d}' has {_count(mine.get(d))} here, {_count(theirs.get(d))} in the reference"
                )
        mc = {c[0]: c for c in self.coords}
        tc = {c[0]: c for c in reference.coords}
        for name in sorted(set(mc) | set(tc)):
            a, b = mc.get(name), tc.get(name)
            if a is None or b is None:
                out.append(f"coordinate '{name}' is {'missing' if a is None else 'extra'} here")
            elif a[1:4] != b[1:4]:
                out.append(f"coordinate '{name}' is {a[4]} here, {b[4]} in the reference")
        mv = {v[0]: v for v in self.variables}
        tv = {v[0]: v for v in reference.variables}
        for name in sorted(set(mv) | set(tv)):
            va, vb = mv.get(name), tv.get(name)
            if va is None or vb is None:
                out.append(f"variable '{name}' is {'missing' if va is None else 'extra'} here")
            elif va != vb:
                out.append(
                    f"variable '{name}' is {va[2]}{va[1]} here, {vb[2]}{vb[1]} in the reference"
                )
        return out or ["the layouts differ"]


def _count(n: int | None) -> str:
    return "no such dimension" if n is None else f"{n} points"


def _values_digest(values: Any) -> str:
    import numpy as np

    arr = np.asarray(values)
    if arr.dtype.kind == "O":
        payload = repr(arr.tolist()).encode()
    else:
        payload = np.ascontiguousarray(arr).tobytes()
    return hashlib.sha256(payload + str(arr.shape).encode()).hexdigest()[:16]


def _summary(values: Any) -> str:
    import numpy as np

    arr = np.asarray(values).ravel()

    def show(v: Any) -> str:
        return f"{v:.6g}" if isinstance(v, (float, np.floating)) else str(v)

    if arr.size == 0:
        return "empty"
    if arr.size == 1:
        return f"[{show(arr[0])}]"
    return f"{arr.size} values [{show(arr[0])} … {show(arr[-1])}]"


@dataclass(frozen=True)
class _Member:
    """One file or store as listed: its identity, its values along ``dim`` and its layout."""

    key: str
    size: int
    mtime: float | None
    times: Any  # numpy array of the coordinate along dim, or None when unreadable
    layout: Layout | None
    chunk: int | None = None
    chunk_layout: str = ""
    row_bytes: int = 0


def _reference(members: Sequence[_Member]) -> Layout | None:
    """The layout most members share (ties: the earliest member's)."""
    layouts = [m.layout for m in members if m.layout is not None]
    if not layouts:
        return None
    counts = Counter(lay.signature for lay in layouts)
    best = max(counts.values())
    return next(lay for lay in layouts if counts[lay.signature] == best)


def _expand(path: str | Sequence[str], what: str) -> list[str]:
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
        raise SourceError(f"values along the dimension are not sorted ({_summary(times)})")
    values = starts.values
    edges = np.flatnonzero(np.r_[True, values[1:] != values[:-1]])
    stops = np.r_[edges[1:], len(values)]
    for i0, i1 in zip(edges, stops, strict=True):
        yield pd.Timestamp(values[i0]).isoformat(), int(i0), int(i1)


def _combine(pieces: list[xr.Dataset], dim: str) -> xr.Dataset:
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


class _GriddedSource:
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

    def _members(self) -> list[_Member]:  # pragma: no cover
        raise NotImplementedError

    def list_units(self) -> list[Unit]:
        members = self._members()
        reference = _reference(members)
        units = [u for m in members for u in self._units_of(m, reference)]
        return sorted(units, key=lambda u: u.key)

    def _units_of(self, m: _Member, reference: Layout | None) -> list[Unit]:
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

    def _slices(self, m: _Member) -> Iterator[tuple[str | None, int, int]]:
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


@dataclass(frozen=True)
class NetCDFSource(_GriddedSource):
    """NetCDF files combined along a dimension; one unit per file (or per window of a file).

    Listing opens each file's header to read its values along ``dim`` and its
    layout, so a unit's ``time`` is the file's first timestamp (``ByWindow``
    groups files by it) and its identity holds the file's size, modification time
    and layout. A batch loads its files (only its slices, read chunk by chunk from
    disk) into one ``xarray.Dataset`` in the worker's memory. A file whose grid or
    variables differ from the layout most files share is quarantined with what
    differs; the other files, and the other batches, go on.

    Parameters
    ----------
    path
        A path or glob pattern (``"archive/*.nc"``), or a list of them.
    dim
        The dimension files are combined along.
    variables
        Data variables to keep (default: all).
    split
        A pandas frequency (``"1D"``, ``"MS"``): one unit per window of each file
        instead of one per file, so monthly files can make daily batches.
    engine
        The xarray backend: ``netcdf4``, ``h5netcdf`` or ``scipy`` (default: xarray's choice).

    Examples
    --------
    >>> src = NetCDFSource("archive/*.nc", dim="time", variables=["temperature"])  # doctest: +SKIP
    """

    path: str | Sequence[str]
    dim: str = "time"
    variables: Sequence[str] | None = None
    split: str | None = None
    engine: str | None = None

    kind = "NetCDF"

    def __post_init__(self):
        super().__post_init__()
        if self.engine not in _ENGINES:
            raise JobSpecError(
                f"engine must be one of {[e for e in _ENGINES if e]}", key="source.engine"
            )

    def describe(self) -> str:
        return f"netcdf {self.path!r} along {self.dim}"

    def token(self) -> list[Any]:
        return ["netcdf", self.dim, self.variables, self.split, self.engine]

    def _open(self, path: str) -> xr.Dataset:
        import xarray as xr

        return xr.open_dataset(path, engine=self.engine, chunks=None, cache=False)

    def _members(self) -> list[_Member]:
        members = []
        for path in _expand(self.path, "netcdf"):
            if os.path.isdir(path):
                continue
            st = os.stat(path)
            times, layout = None, None
            try:
                with self._open(path) as ds:
                    if self.dim in ds.dims:
                        times = ds[self.dim].values
                        if self.variables is not None and all(v in ds for v in self.variables):
                            ds = ds[list(self.variables)]
                        layout = Layout.of(ds, self.dim)
            except (OSError, ValueError):
                pass  # unreadable: loading quarantines it with the reason
            members.append(_Member(path, st.st_size, st.st_mtime, times, layout))
        return members

    def load(self, batch: Batch, ctx: BatchContext) -> xr.Dataset:
        pieces: list[xr.Dataset] = []
        seen: list = []
        for unit in batch.units:
            path = unit.key.split("#", 1)[0]
            try:
                ds = self._open(path)
            except FileNotFoundError:
                ctx.quarantine_file(unit.key, "missing", "the file disappeared after planning")
                continue
            except (TimeoutError, ConnectionError, PermissionError):
                raise
            except (OSError, ValueError) as e:
                ctx.quarantine_file(
                    unit.key, "corrupt", f"cannot be read as NetCDF ({type(e).__name__}: {e})"
                )
                continue
            with ds:
                checked = self._check(ds, unit, unit.key, ctx)
                piece = None if checked is None else self._take(checked, unit, unit.key, ctx, seen)
            if piece is not None:
                pieces.append(piece)
        return _combine(pieces, self.dim)


@dataclass(frozen=True)
class ZarrSource(_GriddedSource):
    """Zarr stores read slice by slice: one unit per chunk along ``dim`` (or per window).

    A unit's identity holds the store's chunk layout and the slice's bounds, so
    rechunking or rewriting the store re-plans it. Several stores (a glob) are
    checked against the layout most of them share; a store that differs is
    quarantined with what differs, and the others go on.

    Parameters
    ----------
    path
        A store path or a glob of stores (``"stations/*.zarr"``), or a list of them.
    dim
        The dimension slices are cut along.
    variables
        Data variables to keep (default: all).
    split
        A pandas frequency (``"1D"``, ``"MS"``): one unit per window instead of per chunk.
    consolidated
        Read consolidated metadata (stores written with it).

    Examples
    --------
    >>> src = ZarrSource("obs.zarr", dim="time", split="1D")  # doctest: +SKIP
    """

    path: str | Sequence[str]
    dim: str = "time"
    variables: Sequence[str] | None = None
    split: str | None = None
    consolidated: bool = False

    kind = "Zarr"

    def describe(self) -> str:
        return f"zarr {self.path!r} along {self.dim}"

    def token(self) -> list[Any]:
        return ["zarr", self.dim, self.variables, self.split, self.consolidated]

    def _open(self, path: str) -> xr.Dataset:
        import xarray as xr

        return xr.open_zarr(path, chunks=None, consolidated=self.consolidated)

    def _members(self) -> list[_Member]:
        members = []
        for path in _expand(self.path, "zarr"):
            try:
                ds = self._open(path)
            except (OSError, ValueError, KeyError):
                members.append(_Member(path, 0, None, None, None))  # loading quarantines it
                continue
            with ds:
                if self.variables is not None and all(v in ds for v in self.variables):
                    ds = ds[list(self.variables)]
                if self.dim not in ds.dims:
                    members.append(_Member(path, 0, None, None, None))
                    continue
                along = [v for v in sorted(ds.data_vars, key=str) if self.dim in ds[v].dims]
                first = ds[along[0]].encoding.get("chunks") if along else None
                chunk = int(first[ds[along[0]].dims.index(self.dim)]) if first else None
                n = ds.sizes[self.dim]
                row_bytes = sum(ds[v].nbytes for v in along) // max(n, 1)
                members.append(
                    _Member(
                        path,
                        sum(ds[v].nbytes for v in along),
                        None,
                        ds[self.dim].values,
                        Layout.of(ds, self.dim),
                        chunk=chunk or n,
                        chunk_layout=_chunk_layout(ds, self.dim),
                        row_bytes=row_bytes,
                    )
                )
        return members

    def load(self, batch: Batch, ctx: BatchContext) -> xr.Dataset:
        pieces: list[xr.Dataset] = []
        seen: list = []
        opened: dict[str, Any] = {}
        try:
            for unit in batch.units:
                path = unit.key.split("#", 1)[0]
                if path not in opened:
                    opened[path] = self._open_for_load(path, unit, ctx)
                ds = opened[path]
                if ds is None:
                    continue
                checked = self._check(ds, unit, unit.key, ctx)
                if checked is None:
                    continue
                expected = dict(unit.identity).get("chunks")
                if expected and expected != _chunk_layout(checked, self.dim):
                    ctx.quarantine_file(
                        unit.key,
                        "layout_changed",
                        "the store was rechunked or rewritten after planning; run the job again "
                        "so it is planned from the store's current layout",
                    )
                    continue
                piece = self._take(checked, unit, unit.key, ctx, seen)
                if piece is not None:
                    pieces.append(piece)
        finally:
            for ds in opened.values():
                if ds is not None:
                    ds.close()
        return _combine(pieces, self.dim)

    def _open_for_load(self, path: str, unit: Unit, ctx: BatchContext) -> xr.Dataset | None:
        if not os.path.exists(path):
            ctx.quarantine_file(unit.key, "missing", "the store disappeared after planning")
            return None
        try:
            return self._open(path)
        except (TimeoutError, ConnectionError, PermissionError):
            raise
        except (OSError, ValueError, KeyError) as e:
            ctx.quarantine_file(
                unit.key, "corrupt", f"cannot be read as a Zarr store ({type(e).__name__}: {e})"
            )
            return None


def _chunk_layout(ds: xr.Dataset, dim: str) -> str:
    chunks = {str(v): ds[v].encoding.get("chunks") for v in ds.variables if dim in ds[v].dims}
    return digest(sorted(chunks.items()))
