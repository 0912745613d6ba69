"""What a batch must satisfy before its region is written: on the axis, on chunk edges, same layout."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from ...errors import BadInputError, JobSpecError
from ...layout import Layout
from ..base import as_dataset
from .axis import TimeAxis

if TYPE_CHECKING:
    import xarray as xr

__all__ = ["prepare", "check_alignment", "differences", "refuse_layout", "refusal"]


def refusal(message: str) -> JobSpecError:
    """The error a worker raises for a batch the store cannot take (naming ``sink``).

    Examples
    --------
    >>> refusal("batch 3 does not fit").key
    'sink'
    """
    return JobSpecError(message, key="sink")


def prepare(axis: TimeAxis, data: Any, name: str) -> tuple[xr.Dataset, int, int] | None:
    """Batch ``name`` sorted along the axis, its gaps filled, and its region ``[i0, i1)``.

    None for a batch without points along the axis. Duplicate timestamps, gaps in
    variables that cannot hold missing values and points after the axis's end
    are refused.

    Examples
    --------
    >>> ds, i0, i1 = prepare(axis, batch_data, "batch-3")  # doctest: +SKIP
    """
    import numpy as np

    ds = as_dataset(data, "zarr")
    dim = axis.dim
    if dim not in ds.dims or ds.sizes[dim] == 0:
        return None
    ds = ds.sortby(dim)
    index = axis.index(ds[dim].values)
    if np.unique(index).size != index.size:
        raise BadInputError(
            f"batch {name} holds the same '{dim}' value twice; remove duplicate inputs",
            kind="duplicates",
            where=axis.path,
        )
    i0, i1 = int(index[0]), int(index[-1]) + 1
    if i1 - i0 != index.size:
        holes = [v for v in ds.data_vars if dim in ds[v].dims and ds[v].dtype.kind != "f"]
        if holes:
            raise BadInputError(
                f"batch {name} has gaps along '{dim}' and variable(s) {holes} cannot hold "
                "missing values; fill the gaps or make the variables floating point",
                kind="gaps",
                where=axis.path,
            )
        ds = ds.reindex({dim: axis.labels(i0, i1)})  # missing steps become NaN
    declared = axis.declared_length()
    if declared is not None and i1 > declared:
        raise JobSpecError(
            f"batch {name} reaches {axis.label(i1 - 1)}, after the store's end {axis.end}; "
            "raise end (a new store) or leave it out so the axis grows",
            key="sink.end",
        )
    return ds, i0, i1


def check_alignment(
    axis: TimeAxis,
    name: str,
    region: tuple[int, int],
    chunks: Mapping[str, int],
    end: int | None,
    error: Callable[[str], Exception],
) -> None:
    """Refuse (raise ``error``) a region that does not start and end on chunk boundaries.

    ``chunks`` maps what is chunked (``"variable 't'"``, ``"the store"``) to its
    chunk length along the axis; a region may end off a boundary only at ``end``.

    Examples
    --------
    >>> check_alignment(axis, "batch-3", (7, 14), {"the store": 7}, None, refusal)  # doctest: +SKIP
    """
    i0, i1 = region
    for var, c in sorted(chunks.items()):
        start_ok = i0 % c == 0
        stop_ok = i1 % c == 0 or (end is not None and i1 >= end)
        if start_ok and stop_ok:
            continue
        edge = i0 if not start_ok else i1
        lo, hi = edge // c * c, (edge // c + 1) * c
        raise error(
            f"batch {name} would write {axis.dim}[{i0}:{i1}] ({axis.label(i0)} … "
            f"{axis.label(i1 - 1)}) of {axis.path}, which does not line up with the chunks: "
            f"along '{axis.dim}' {var} has chunks of {c} points, so a region must "
            f"{'start' if not start_ok else 'end'} on a multiple of {c} ({axis.label(lo)} or "
            f"{axis.label(hi)}), not at {axis.label(edge)}. Nothing was written. Make each "
            f"batch cover whole chunks (a batching window of {c} x {axis.freq}), or write to a "
            f"new store with chunks: {{{axis.dim}: n}} where n divides every batch"
        )


def differences(
    axis: TimeAxis, chunks: Mapping[str, int], meta: Mapping[str, Any], ds: xr.Dataset
) -> list[str]:
    """How the existing store differs from the sink's definition and the batch's layout.

    Reads only the store's root attributes (``meta``, written once, when the store
    was created), so a worker can check while the driver grows the arrays.

    Examples
    --------
    >>> differences(axis, {"time": 7}, store.meta(), ds)  # doctest: +SKIP
    []
    """
    out = []
    definition = {"dim": axis.dim, "start": axis.start, "freq": axis.freq, "end": axis.end}
    for key, mine in definition.items():
        if meta.get(key) != mine:
            out.append(f"the store has {key}={meta.get(key)!r}, the sink says {mine!r}")
    for d, size in chunks.items():
        have = meta.get("chunks", {}).get(d)
        if have is not None and have != size:
            out.append(f"the store has chunks of {have} along '{d}', the sink says {size}")
    theirs = Layout.from_dict(meta["layout"])
    layout = Layout.of(ds, axis.dim)
    if layout.signature != theirs.signature:
        out += layout.differences(theirs)
    return out


def refuse_layout(
    axis: TimeAxis, state: Any, name: str, diffs: list[str], error: Callable[[str], Exception]
) -> None:
    """Raise ``error`` for batch ``name``, which does not fit the store, with what differs.

    Examples
    --------
    >>> refuse_layout(axis, state_folder, "batch-3", diffs, refusal)  # doctest: +SKIP
    """
    raise error(
        f"batch {name} does not fit the existing store {axis.path}: {'; '.join(diffs)}. "
        f"Write to a new path, or delete the store and {state} to rebuild it from "
        "every batch"
    )
