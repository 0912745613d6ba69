"""Scoring a batch in model-sized chunks; a failing chunk is bisected to find the rows at fault."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from ...errors import ModelError, TransientError
from . import pytorch
from .features import model_inputs

__all__ = [
    "TARGET_CHUNK_BYTES",
    "MIN_CHUNK_ROWS",
    "MAX_CHUNK_ROWS",
    "PROBE_ROWS",
    "Scored",
    "Scorer",
    "auto_batch_rows",
]

#: The automatic model batch aims at about this many bytes of features per call...
TARGET_CHUNK_BYTES = 16 * 2**20
#: ...within these bounds on the number of rows.
MIN_CHUNK_ROWS, MAX_CHUNK_ROWS = 1_024, 65_536
#: Rows tried one by one when a chunk fails; if all of them fail, the model is blamed.
PROBE_ROWS = 8

_OURS = (ModelError, TransientError, MemoryError)  # raised as they are, never blamed on rows


def auto_batch_rows(n_features: int, itemsize: int = 8) -> int:
    """Rows per model call: about ``TARGET_CHUNK_BYTES`` of features, 1,024 to 65,536 rows.

    Examples
    --------
    >>> auto_batch_rows(8)
    65536
    >>> auto_batch_rows(2000)
    1048
    """
    rows = TARGET_CHUNK_BYTES // max(1, n_features * itemsize)
    return int(min(MAX_CHUNK_ROWS, max(MIN_CHUNK_ROWS, rows)))


@dataclass
class Scored:
    """Bookkeeping for one batch: what was scored, which rows failed and why."""

    parts: list[tuple[int, list[np.ndarray]]] = field(default_factory=list)
    failed: dict[int, str] = field(default_factory=dict)
    model_ok: bool = False

    def predictions(self) -> list[np.ndarray]:
        """One array per output column, over the rows scored, in their order."""
        return [np.concatenate(p) for p in zip(*(cols for _, cols in self.parts), strict=True)]


@dataclass(frozen=True, eq=False)
class Scorer:
    """How a loaded model scores a batch's features (the settings of a ``Predict`` step)."""

    model: Any
    name: str  # where the model came from, for messages
    features: tuple[str, ...]
    outputs: tuple[str, ...]
    method: str | Callable[[Any, Any], Any]
    on_error: str
    batch_rows: int | None
    dtype: str | None

    def score(self, columns: list[pa.ChunkedArray], n: int) -> Scored:
        """Score ``n`` rows of feature ``columns``, ``batch_rows`` (or an automatic size) at a time."""
        state = Scored()
        if n == 0:
            return state
        x = model_inputs(self.model, self.features, columns, self.dtype)
        size = self.batch_rows or auto_batch_rows(len(self.features))
        for lo in range(0, n, size):
            self._chunk(x, lo, min(n, lo + size), state, probe=True)
        return state

    def _chunk(self, x: Any, lo: int, hi: int, state: Scored, probe: bool) -> None:
        try:
            cols = self._columns(self._call(_rows(x, lo, hi)), hi - lo)
        except _OURS:
            raise
        except Exception as e:
            if self.on_error == "fail":
                raise ModelError(
                    f"the model raised on rows {lo}..{hi - 1} of the batch: "
                    f"{type(e).__name__}: {e} (on_error='fail')"
                ) from e
            if hi - lo == 1:
                state.failed[lo] = f"the model raised {type(e).__name__}: {_short(e)}"
                return
            if probe and not state.model_ok:
                self._probe(x, lo, hi, e)
                state.model_ok = True
            mid = (lo + hi) // 2
            self._chunk(x, lo, mid, state, probe=False)
            self._chunk(x, mid, hi, state, probe=False)
            return
        state.model_ok = True
        state.parts.append((lo, cols))

    def _probe(self, x: Any, lo: int, hi: int, error: Exception) -> None:
        """Before bisecting, try a few single rows: if all fail, the model is at fault."""
        for i in np.linspace(lo, hi - 1, num=min(PROBE_ROWS, hi - lo), dtype=int):
            try:
                self._columns(self._call(_rows(x, int(i), int(i) + 1)), 1)
                return
            except _OURS:
                raise
            except Exception:  # noqa: BLE001 - any error of the model counts against it
                continue
        raise ModelError(
            f"the model ({self.name}) raised on the whole chunk and on each of "
            f"{min(PROBE_ROWS, hi - lo)} single rows tried: {type(error).__name__}: {_short(error)}. "
            "This looks like a problem with the model or the features given to it "
            f"({list(self.features)}), not with some rows; nothing of this batch was committed"
        ) from error

    def _call(self, x: Any) -> Any:
        model = self.model
        if pytorch.is_torch(model):
            return pytorch.call(model, x, self.method)
        if callable(self.method):
            return self.method(model, x)
        # The method is named by the user, so it can only be looked up by that name.
        fn = getattr(model, self.method, None)
        if fn is None:
            if self.method == "predict" and callable(model):
                return model(x)
            raise ModelError(
                f"the model ({type(model).__name__}) has no method {self.method!r}; "
                "set method: to one it has"
            )
        return fn(x)

    def _columns(self, pred: Any, n: int) -> list[np.ndarray]:
        """The model's answer for ``n`` rows as one array per output column."""
        arr = np.asarray(pred)
        if arr.ndim == 2 and arr.shape[1] == 1:
            arr = arr[:, 0]
        if arr.ndim == 0 or arr.shape[0] != n or arr.ndim > 2:
            raise ModelError(
                f"the model returned shape {arr.shape} for {n} rows; expected ({n},) or ({n}, k)"
            )
        if arr.ndim == 1:
            if len(self.outputs) != 1:
                raise ModelError(
                    f"the model returns one column but outputs names {len(self.outputs)}: "
                    f"{list(self.outputs)}"
                )
            return [arr]
        k = arr.shape[1]
        if len(self.outputs) == k:
            return [arr[:, j] for j in range(k)]
        if len(self.outputs) == 1 and k == 2:
            return [arr[:, 1]]
        raise ModelError(
            f"the model returns {k} columns; name {k} outputs (outputs: [...]) or, for a "
            "binary classifier, one"
        )


def _rows(x: Any, lo: int, hi: int) -> Any:
    """Rows ``lo`` to ``hi`` of the model's input: an array or a DataFrame."""
    return x[lo:hi] if isinstance(x, np.ndarray) else x.iloc[lo:hi]


def _short(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return (text[0] if text else "")[:300]
