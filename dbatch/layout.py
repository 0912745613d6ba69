"""Layouts: Hive partition folders of table outputs; an xarray dataset along its batch dimension."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .core import digest

if TYPE_CHECKING:
    import xarray as xr

__all__ = ["Layout", "summarize", "HIVE_NULL", "hive_name", "hive_folder"]

#: The folder value of a null (or empty) partition value, as Hive, Spark, pyarrow and DuckDB read it.
HIVE_NULL = "__HIVE_DEFAULT_PARTITION__"
# The characters Hive percent-encodes in partition folder names (its FileUtils), and NUL.
_HIVE_ESCAPED = frozenset("\"#%'*/:=?\\\x7f{[]^") | {chr(c) for c in range(0x20)}


def hive_name(text: str) -> str:
    """``text`` with the characters Hive escapes in folder names percent-encoded.

    Examples
    --------
    >>> hive_name("a/b=100%")
    'a%2Fb%3D100%25'
    """
    return "".join(f"%{ord(c):02X}" if c in _HIVE_ESCAPED else c for c in text)


def hive_folder(column: str, value: Any) -> str:
    """The partition folder ``column=value`` of a value, as Hive names it.

    None and ``""`` become ``__HIVE_DEFAULT_PARTITION__`` (readers give null back);
    other values their text, percent-encoded so that no value holds a separator,
    a newline or an ``=``, and no two values share a folder.

    Examples
    --------
    >>> hive_folder("region", "../x"), hive_folder("region", None)
    ('region=..%2Fx', 'region=__HIVE_DEFAULT_PARTITION__')
    """
    text = "" if value is None else str(value)
    return f"{hive_name(column)}={hive_name(text) if text else HIVE_NULL}"


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
        """The layout of ``ds`` along ``dim``."""
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
                    summarize(var.values),
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
        """A short digest of the whole layout: equal signatures, combinable slices."""
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
        """The layout ``to_dict`` wrote."""
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
        out = self._size_differences(reference)
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

    def _size_differences(self, reference: Layout) -> list[str]:
        out = []
        mine, theirs = dict(self.sizes), dict(reference.sizes)
        for d in sorted(set(mine) | set(theirs)):
            if mine.get(d) != theirs.get(d):
                out.append(
                    f"dimension '{d}' has {_count(mine.get(d))} here, "
                    f"{_count(theirs.get(d))} in the reference"
                )
        return out


def summarize(values: Any) -> str:
    """A short description of an array's values: its size, first and last value.

    Parameters
    ----------
    values
        Anything ``numpy.asarray`` takes.

    Returns
    -------
    str
        ``"empty"``, ``"[v]"`` for one value, else ``"<n> values [first … last]"``.

    Examples
    --------
    >>> summarize([1.0, 2.5, 3.0])
    '3 values [1 … 3]'
    """
    import numpy as np

    arr = np.asarray(values).ravel()

    def show(v: Any) -> str:
        return f"{v:.6g}" if isinstance(v, (float, np.floating)) else str(v)

    if arr.size == 0:
        return "empty"
    if arr.size == 1:
        return f"[{show(arr[0])}]"
    return f"{arr.size} values [{show(arr[0])} … {show(arr[-1])}]"


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
