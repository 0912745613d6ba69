"""Zarr stores read slice by slice: one unit per chunk along the dimension, or per window."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ...context import BatchContext
from ...core import Batch, Unit, digest
from ...layout import Layout
from .gridded import GriddedSource, Member, combine, expand

if TYPE_CHECKING:
    import xarray as xr

__all__ = ["ZarrSource"]


@dataclass(frozen=True)
class ZarrSource(GriddedSource):
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

    def _members(self) -> list[Member]:
        members = []
        for path in expand(self.path, "zarr"):
            try:
                ds = self._open(path)
            except (OSError, ValueError, KeyError):
                members.append(Member(path, 0, None, None, None))  # loading quarantines it
                continue
            with ds:
                members.append(self._member(path, ds))
        return members

    def _member(self, path: str, ds: xr.Dataset) -> Member:
        if self.variables is not None and all(v in ds for v in self.variables):
            ds = ds[list(self.variables)]
        if self.dim not in ds.dims:
            return Member(path, 0, None, None, None)
        along = [v for v in sorted(ds.data_vars, key=str) if self.dim in ds[v].dims]
        first = ds[along[0]].encoding.get("chunks") if along else None
        chunk = int(first[ds[along[0]].dims.index(self.dim)]) if first else None
        n = ds.sizes[self.dim]
        row_bytes = sum(ds[v].nbytes for v in along) // max(n, 1)
        return Member(
            path,
            sum(ds[v].nbytes for v in along),
            None,
            ds[self.dim].values,
            Layout.of(ds, self.dim),
            chunk=chunk or n,
            chunk_layout=_chunk_layout(ds, self.dim),
            row_bytes=row_bytes,
        )

    def load(self, batch: Batch, ctx: BatchContext) -> xr.Dataset:
        """The batch's slices of its stores as one Dataset; bad stores are quarantined."""
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
        return combine(pieces, self.dim)

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
