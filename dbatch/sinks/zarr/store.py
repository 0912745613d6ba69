"""The Zarr store itself: its template, its arrays along the axis, region writes and chunk files."""

from __future__ import annotations

import itertools
import math
import os
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from ...errors import JobSpecError
from ...layout import Layout
from .axis import TimeAxis

if TYPE_CHECKING:
    import xarray as xr

__all__ = ["ZarrStore"]


@dataclass(frozen=True)
class ZarrStore:
    """The store at ``path`` whose arrays run along ``dim``; dbatch's settings sit in its root.

    Examples
    --------
    >>> store = ZarrStore("daily.zarr", "time")
    >>> store.root.name
    'daily.zarr'
    """

    path: str
    dim: str

    @property
    def root(self) -> Path:
        """The store's folder."""
        return Path(self.path)

    def group(self, mode: Literal["r", "r+"] = "r") -> Any:
        """The store's root group."""
        import zarr

        return zarr.open_group(str(self.root), mode=mode)

    def meta(self) -> dict[str, Any] | None:
        """What dbatch wrote into the root attributes; None when there is no store yet."""
        if not (self.root / "zarr.json").exists():
            return None
        meta = self.group().attrs.asdict().get("dbatch")
        if not isinstance(meta, dict):
            raise JobSpecError(
                f"{self.path} exists and was not written by dbatch's zarr sink; choose another "
                "path (dbatch never overwrites it)",
                key="sink.path",
            )
        return meta

    def meta_or_none(self) -> dict[str, Any] | None:
        """``meta()``, or None when the store is missing, foreign or unreadable."""
        try:
            return self.meta()
        except (JobSpecError, OSError, ValueError, KeyError):
            return None

    def arrays_along(self, group: Any = None) -> list[tuple[str, Any, int]]:
        """``(name, array, axis of dim)`` of every array of the store (or of ``group``) along dim."""
        out = []
        for name, arr in (group if group is not None else self.group()).arrays():
            dims = list(arr.metadata.dimension_names or ())
            if self.dim in dims:
                out.append((name, arr, dims.index(self.dim)))
        return out

    def chunks(self) -> dict[str, int]:
        """The chunk length along dim of each variable, keyed ``"variable '<name>'"``."""
        return {
            f"variable '{name}'": int(arr.metadata.chunk_grid.chunk_shape[ax])
            for name, arr, ax in self.arrays_along()
            if name != self.dim
        }

    def length(self) -> int:
        """The length of the longest array along dim (0 without arrays)."""
        return max((arr.shape[ax] for _, arr, ax in self.arrays_along()), default=0)

    def axis_values(self) -> Any:
        """The stored (encoded) values of the dim coordinate."""
        return self.group()[self.dim][:]

    # -- writing ---------------------------------------------------------------------

    def create(
        self, ds: xr.Dataset, axis: TimeAxis, length: int, chunk: int, chunks: Mapping[str, int]
    ) -> dict[str, Any]:
        """Write the template into a hidden folder, then rename it into place; return its meta."""
        length = axis.declared_length() or length
        template, encoding = _template(ds, axis, length, chunk, chunks)
        meta = {
            "store_id": uuid.uuid4().hex,
            "dim": self.dim,
            "start": axis.start,
            "freq": axis.freq,
            "end": axis.end,
            "chunks": {self.dim: chunk, **{d: c for d, c in chunks.items() if d != self.dim}},
            "layout": Layout.of(ds, self.dim).to_dict(),
        }
        template.attrs = {**ds.attrs, "dbatch": meta}
        building = self.root.parent / f".{self.root.name}.creating-{uuid.uuid4().hex[:8]}"
        self.root.parent.mkdir(parents=True, exist_ok=True)
        template.to_zarr(
            str(building),
            mode="w-",
            compute=False,
            consolidated=False,
            zarr_format=3,
            encoding=encoding,
            write_empty_chunks=True,
        )
        os.rename(building, self.root)
        return meta

    def ensure_length(self, n: int, step: int) -> None:
        """Grow every array along dim to at least ``n`` and write the axis (repairs a torn grow).

        ``step`` is the axis step in its encoded units (``TimeAxis.encoding``).
        """
        import numpy as np

        group = self.group("r+")
        arrays = [(arr, ax) for _, arr, ax in self.arrays_along(group)]
        target = max([n] + [arr.shape[ax] for arr, ax in arrays])
        for arr, ax in arrays:
            if arr.shape[ax] < target:
                arr.resize(tuple(target if i == ax else s for i, s in enumerate(arr.shape)))
        axis = group[self.dim]
        expected = np.arange(target, dtype="int64") * step
        if not np.array_equal(axis[:], expected):
            axis[:] = expected

    def write_region(self, ds: xr.Dataset, i0: int, i1: int) -> None:
        """Write the variables of ``ds`` along dim into ``[i0, i1)``."""
        region = ds.drop_vars([v for v in ds.variables if self.dim not in ds[v].dims])
        region.drop_encoding().to_zarr(
            str(self.root),
            region={self.dim: slice(i0, i1)},
            mode="r+",
            consolidated=False,
            write_empty_chunks=True,
        )

    # -- chunk files -------------------------------------------------------------------

    def chunk_paths(self, arr: Any, ax: int, i0: int, i1: int) -> Iterator[tuple[str, Path]]:
        """``(chunk key, file)`` of every chunk of ``arr`` that holds ``[i0, i1)`` along dim."""
        shape = arr.shape
        chunk_shape = arr.metadata.chunk_grid.chunk_shape
        ranges = [
            range(i0 // c, math.ceil(min(i1, s) / c)) if a == ax else range(math.ceil(s / c))
            for a, (s, c) in enumerate(zip(shape, chunk_shape, strict=True))
        ]
        for coords in itertools.product(*ranges):
            key = arr.metadata.encode_chunk_key(coords)
            yield key, self.root / arr.path / key

    def missing(self, batch_id: str, region: Sequence[int]) -> list[tuple[str, str, str]]:
        """``(batch id, variable, chunk key)`` of the region's chunk files that are gone."""
        i0, i1 = region
        out = []
        for name, arr, ax in self.arrays_along():
            for key, path in self.chunk_paths(arr, ax, i0, i1):
                if not path.exists():
                    out.append((batch_id, name, key))
        return out

    def delete_region(self, i0: int, i1: int, kept: Sequence[tuple[int, int]]) -> None:
        """Delete the chunk files of ``[i0, i1)`` that no region in ``kept`` shares."""
        for _, arr, ax in self.arrays_along():
            if arr.path == self.dim:
                continue
            c = arr.metadata.chunk_grid.chunk_shape[ax]
            for j in range(i0 // c, math.ceil(i1 / c)):
                lo, hi = j * c, (j + 1) * c
                if any(a < hi and lo < b for a, b in kept):
                    continue
                for _key, path in self.chunk_paths(arr, ax, lo, min(hi, arr.shape[ax])):
                    path.unlink(missing_ok=True)


def _template(
    ds: xr.Dataset, axis: TimeAxis, length: int, chunk: int, chunks: Mapping[str, int]
) -> tuple[xr.Dataset, dict[str, dict[str, Any]]]:
    """The store's template (coordinates, static variables, empty arrays) and its encoding."""
    import dask.array as da
    import xarray as xr

    dim = axis.dim
    template = xr.Dataset(coords={dim: axis.labels(0, length)})
    encoding: dict[str, dict[str, Any]] = {}
    for name, var in ds.variables.items():
        if name == dim:
            continue
        sizes = [length if d == dim else var.sizes[d] for d in var.dims]
        var_chunks = tuple(
            chunk if d == dim else min(chunks.get(str(d), n), n)
            for d, n in zip(var.dims, sizes, strict=True)
        )
        if dim in var.dims:
            data = da.empty(tuple(sizes), chunks=var_chunks, dtype=var.dtype)
            new = xr.Variable(var.dims, data, attrs=var.attrs)
        else:
            new = var.copy(deep=False)
        encoding[str(name)] = {"chunks": var_chunks}
        if name in ds.coords:
            template = template.assign_coords({name: new})
        else:
            template[name] = new
    units, _ = axis.encoding()
    encoding[dim] = {
        "units": units,
        "calendar": "proleptic_gregorian",
        "dtype": "int64",
        "chunks": (chunk * math.ceil(4096 / chunk),),
    }
    return template, encoding
