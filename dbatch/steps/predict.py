"""Predict: score each batch with a trained model that each worker loads once and reuses."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import re
import sys
import threading
import warnings
from collections import Counter, OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..context import BatchContext
from ..errors import JobSpecError, ModelError, TransientError, is_transient
from ..arrow import as_arrow
from .base import SharedObject, Step, function_token

__all__ = ["Predict", "ModelError", "auto_batch_rows", "model_cache"]

#: The automatic model batch aims at about this many bytes of features per call...
TARGET_CHUNK_BYTES = 16 * 2**20
#: ...within these bounds on the number of rows.
MIN_CHUNK_ROWS, MAX_CHUNK_ROWS = 1_024, 65_536
#: Rows tried one by one when a chunk fails; if all of them fail, the model is blamed.
PROBE_ROWS = 8
#: Models each worker process keeps loaded (least recently used ones are dropped).
KEEP_MODELS = 4

_TORCH_SUFFIXES = (".pt", ".pth", ".pt2")
_IMPORT_PATH = re.compile(r"(?:.*/)?([A-Za-z_][\w]*(?:\.[A-Za-z_]\w*)*:[A-Za-z_][\w.]*)")
_NUMBER = r"^\s*[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?\s*$|^\s*[+-]?(?:inf|infinity|nan)\s*$"


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


# -- where the model comes from ---------------------------------------------------------


@dataclass(frozen=True)
class _ModelRef:
    """What a task carries instead of the model: a few strings (and a shared-object token)."""

    kind: str  # "file", "loader" or "object"
    name: str  # the path, the import path or the object's type (for messages)
    identity: str  # checksum or digest: part of the fingerprint and of the cache key
    arg: Any = None
    version: str | None = None
    shared: SharedObject | None = field(default=None, compare=False, repr=False)

    @property
    def key(self) -> str:
        """The per-process cache key: a new version is loaded afresh, even from the same file."""
        return f"{self.kind}:{self.name}:{self.arg!r}:{self.identity}:{self.version}"

    def get(self, ctx: BatchContext) -> Any:
        if self.shared is not None:
            return self.shared.get(ctx)
        return _load_once(self)


_MODELS: OrderedDict[str, Any] = OrderedDict()
_LOADS: Counter[str] = Counter()
_LOCK = threading.Lock()
_CHECKSUMS: dict[tuple, str] = {}


def model_cache() -> dict[str, int]:
    """Models loaded in this process since it started: cache key -> number of loads.

    On a cluster, ``client.run(model_cache)`` shows what each worker loaded; a key
    loaded more than once was dropped from the cache (more than ``KEEP_MODELS``
    models in turn) and loaded again.
    """
    with _LOCK:
        return dict(_LOADS)


def _load_once(ref: _ModelRef) -> Any:
    # One lock for all: a second thread waits for the first load rather than loading too.
    with _LOCK:
        if ref.key in _MODELS:
            _MODELS.move_to_end(ref.key)
            return _MODELS[ref.key]
        model = _load(ref)
        _MODELS[ref.key] = model
        _LOADS[ref.key] += 1
        while len(_MODELS) > KEEP_MODELS:
            _MODELS.popitem(last=False)
        return model


def _load(ref: _ModelRef) -> Any:
    if ref.kind == "loader":
        func = _import(ref.name)
        try:
            model = func() if ref.arg is None else func(ref.arg)
        except Exception as e:
            if is_transient(e):  # a model store that did not answer: the runner retries
                raise
            raise ModelError(f"model loader {ref.name!r} failed: {type(e).__name__}: {e}") from e
    else:
        data = _read_bytes(ref.name)
        found = hashlib.sha256(data).hexdigest()[:32]
        if found != ref.identity:
            raise ModelError(
                f"model file {ref.name!r} changed after the run was planned (checksum {found}, "
                f"planned {ref.identity}); run the job again so every batch uses one model"
            )
        try:
            model = _load_file(ref.name, data)
        except ModelError:
            raise
        except Exception as e:
            raise ModelError(
                f"cannot load model file {ref.name!r}: {type(e).__name__}: {e}. Save scikit-learn "
                "models with joblib.dump (or pickle), PyTorch models with torch.save or "
                "torch.export.save"
            ) from e
    _prepare_torch(model)
    return model


def _read_bytes(path: str) -> bytes:
    import fsspec

    try:
        with fsspec.open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise ModelError(
            f"model file {path!r} is not readable here; every worker needs it at the same path "
            "(a shared disk, or an fsspec URL such as s3://...)"
        ) from None


def _load_file(path: str, data: bytes) -> Any:
    suffix = Path(path).suffix.lower()
    if suffix in _TORCH_SUFFIXES:
        try:
            import torch
        except ImportError:
            raise ModelError(
                f"model file {path!r} is a PyTorch file; install PyTorch on every worker "
                "(pip install torch)"
            ) from None
        if suffix == ".pt2":
            return torch.export.load(io.BytesIO(data)).module()
        if _is_torchscript(data):
            with warnings.catch_warnings():
                # TorchScript is deprecated upstream; archives made with it still load.
                warnings.simplefilter("ignore", DeprecationWarning)
                return torch.jit.load(io.BytesIO(data), map_location="cpu")
        # A whole module saved with torch.save: unpickling runs code, as with joblib files.
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=False)
    import joblib

    return joblib.load(io.BytesIO(data))


def _is_torchscript(data: bytes) -> bool:
    import zipfile

    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            return any(n.split("/", 1)[-1].startswith("code/") for n in z.namelist())
    except zipfile.BadZipFile:
        return False


def _is_torch(model: Any) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(model, torch.nn.Module)


def _prepare_torch(model: Any) -> None:
    """Inference mode, and as many torch threads as the process may use (1 on a Dask worker)."""
    if not _is_torch(model):
        return
    import torch

    try:
        model.eval()
    except NotImplementedError:  # a torch.export module: already traced for inference
        pass
    threads = os.environ.get("OMP_NUM_THREADS")
    if threads and threads.isdigit() and int(threads) > 0:
        torch.set_num_threads(int(threads))


def _file_checksum(path: str) -> str:
    """SHA-256 of the file's bytes; cached on the client while size and mtime stay the same."""
    import fsspec

    fs, _, [resolved] = fsspec.get_fs_token_paths(path)
    try:
        if "://" in path:
            info = fs.info(resolved)
            stamp: tuple = (path, info.get("size"), str(info.get("mtime") or info.get("ETag")))
        else:
            st = os.stat(resolved)
            stamp = (path, st.st_size, st.st_mtime_ns, st.st_ino)
    except FileNotFoundError:
        raise JobSpecError(
            f"model file {path!r} does not exist", key="steps.predict.model"
        ) from None
    if stamp not in _CHECKSUMS:
        h = hashlib.sha256()
        with fs.open(resolved, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                h.update(block)
        _CHECKSUMS[stamp] = h.hexdigest()[:32]
    return _CHECKSUMS[stamp]


def _object_digest(model: Any) -> str:
    import cloudpickle

    try:
        payload = cloudpickle.dumps(model, protocol=5)
    except Exception as e:
        raise JobSpecError(
            f"the model ({type(model).__name__}) cannot be pickled to send it to the workers: {e}. "
            "Save it to a file and pass the path, or pass a loader 'package.module:function'",
            key="steps.predict.model",
        ) from None
    return hashlib.sha256(payload).hexdigest()[:32]


def _model_ref(model: Any, arg: Any) -> _ModelRef:
    if isinstance(model, (str, Path)):
        text = str(model)
        loader = _IMPORT_PATH.fullmatch(text)
        if loader and not Path(text).exists():
            func = _import(loader.group(1))
            ident = [loader.group(1), function_token(func), arg]
            if isinstance(arg, (str, Path)) and Path(arg).is_file():
                ident.append(_file_checksum(str(arg)))
            ident_hex = hashlib.sha256(json.dumps(ident, default=str).encode()).hexdigest()[:32]
            return _ModelRef("loader", loader.group(1), ident_hex, arg=arg)
        if arg is not None:
            raise JobSpecError(
                "model_arg is for a loader function ('package.module:function'), not a file",
                key="steps.predict.model_arg",
            )
        if "://" not in text:
            text = str(Path(text).expanduser().resolve())
        return _ModelRef("file", text, _file_checksum(text))
    if arg is not None:
        raise JobSpecError(
            "model_arg is for a loader function ('package.module:function')",
            key="steps.predict.model_arg",
        )
    if (
        not callable(model)
        and not hasattr(model, "predict")
        and not hasattr(model, "predict_proba")
    ):
        raise JobSpecError(
            f"model must have predict / predict_proba, be callable, or be a file path or a "
            f"loader 'package.module:function'; got {type(model).__name__}",
            key="steps.predict.model",
        )
    ident = _object_digest(model)
    name = f"{type(model).__module__}.{type(model).__qualname__}"
    return _ModelRef("object", name, ident, shared=SharedObject(model, f"model-{ident}"))


# -- the step -------------------------------------------------------------------------


@dataclass
class _Scoring:
    """Bookkeeping for one batch: what was scored, which rows failed and why."""

    parts: list[tuple[int, list[np.ndarray]]] = field(default_factory=list)
    failed: dict[int, str] = field(default_factory=dict)
    model_ok: bool = False


@dataclass(frozen=True, init=False)
class Predict(Step):
    """Score each batch with a trained model; the rows it cannot score go to the quarantine.

    The model is loaded once per worker process and reused for every batch that
    worker runs; tasks carry only a reference to it.

    Parameters
    ----------
    model
        One of: an object with ``predict`` / ``predict_proba`` (a scikit-learn
        estimator or pipeline, a PyTorch module) or a plain callable, sent to each
        worker once; the path (or fsspec URL) of a model file every worker can
        read: ``.joblib`` / ``.pkl`` (joblib or pickle), ``.pt`` / ``.pth``
        (``torch.save`` or TorchScript) or ``.pt2`` (``torch.export.save``); or a
        loader ``"package.module:function"`` that each worker imports and calls
        (with ``model_arg`` if given). Model files are unpickled: load only files
        you trust.
    features
        The input columns, in the order the model expects.
    output, outputs
        The name of the prediction column (default ``prediction``), or one name
        per column the model returns (``predict_proba`` of a 3-class model: three).
        With ``predict_proba`` of a binary classifier, a single ``output`` holds the
        probability of the positive class.
    method
        ``"predict"``, ``"predict_proba"``, any other method name, or a callable
        ``method(model, X)``. A plain callable model is called as ``model(X)``; a
        PyTorch module as ``module(tensor)``.
    batch_rows
        Rows per model call, separate from the data batch; default: about 16 MiB
        of features (1,024 to 65,536 rows, see ``auto_batch_rows``).
    on_error
        ``"quarantine"`` (default): rows on which the model raises are found by
        bisecting the failing chunk and quarantined with the error; the rest are
        scored. ``"fail"``: the batch fails at the first error.
    dtype
        Features are converted to this numeric type (``"float64"`` default,
        ``"float32"``); values that are not numbers are quarantined. ``None``
        passes the columns as they are, for models that encode text themselves.
    nulls
        ``"quarantine"`` (default) sets rows with a null or NaN feature aside;
        ``"keep"`` passes them to the model as NaN (for models that handle them).
    version
        Your name for the model's version, added to its identity.
    model_arg
        The argument passed to a loader function.

    Model identity (the file's checksum, the loader's name, code and argument, or a
    digest of the pickled object, plus ``version``) is part of every batch's
    fingerprint: a new model re-scores every batch, an unchanged one resumes.

    Examples
    --------
    >>> Predict("models/churn.joblib", features=["age", "tenure"], output="churn")  # doctest: +SKIP
    >>> Predict(clf, features=cols, outputs=["p_no", "p_yes"], method="predict_proba")  # doctest: +SKIP
    >>> Predict("mypkg.models:load", model_arg="v3", features=cols)  # doctest: +SKIP
    """

    model: _ModelRef
    features: tuple[str, ...]
    outputs: tuple[str, ...]
    method: str | Callable[[Any, Any], Any] = "predict"
    batch_rows: int | None = None
    on_error: str = "quarantine"
    dtype: str | None = "float64"
    nulls: str = "quarantine"
    version: str | None = None

    def __init__(
        self,
        model: Any,
        features: Sequence[str],
        output: str | None = None,
        outputs: Sequence[str] | None = None,
        method: str | Callable[[Any, Any], Any] = "predict",
        batch_rows: int | None = None,
        on_error: str = "quarantine",
        dtype: str | None = "float64",
        nulls: str = "quarantine",
        version: str | None = None,
        model_arg: Any = None,
    ):
        feats = _names(features, "features")
        if output is not None and outputs is not None:
            raise JobSpecError("give output or outputs, not both", key="steps.predict.outputs")
        outs = _names([output] if output is not None else outputs or ["prediction"], "outputs")
        clash = sorted(set(feats) & set(outs))
        if clash:
            raise JobSpecError(
                f"output column(s) {clash} are also features; name the outputs differently",
                key="steps.predict.outputs",
            )
        if on_error not in ("quarantine", "fail"):
            raise JobSpecError(
                "on_error must be 'quarantine' or 'fail'", key="steps.predict.on_error"
            )
        if nulls not in ("quarantine", "keep"):
            raise JobSpecError("nulls must be 'quarantine' or 'keep'", key="steps.predict.nulls")
        if dtype is not None and dtype not in ("float64", "float32"):
            raise JobSpecError(
                "dtype must be 'float64', 'float32' or None", key="steps.predict.dtype"
            )
        if batch_rows is not None and (not isinstance(batch_rows, int) or batch_rows < 1):
            raise JobSpecError(
                f"batch_rows must be a positive whole number, got {batch_rows!r}",
                key="steps.predict.batch_rows",
            )
        if not callable(method) and not (isinstance(method, str) and method.isidentifier()):
            raise JobSpecError(
                f"method must be a method name or a callable, got {method!r}",
                key="steps.predict.method",
            )
        version = None if version is None else str(version)
        ref = dataclasses.replace(_model_ref(model, model_arg), version=version)
        if ref.shared is not None:
            _check_object(ref.shared.obj, method, feats)
        for name, value in (
            ("model", ref),
            ("features", feats),
            ("outputs", outs),
            ("method", method),
            ("batch_rows", batch_rows),
            ("on_error", on_error),
            ("dtype", dtype),
            ("nulls", nulls),
            ("version", version),
        ):
            object.__setattr__(self, name, value)

    # -- the Step contract ---------------------------------------------------------

    def token(self) -> list[Any]:
        method = function_token(self.method) if callable(self.method) else self.method
        name = None if self.model.kind == "file" else self.model.name
        return [
            "predict",
            self.model.kind,
            name,
            self.model.identity,
            self.version,
            list(self.features),
            list(self.outputs),
            method,
            self.dtype,
            self.nulls,
        ]

    def shared_objects(self) -> list[SharedObject]:
        return [self.model.shared] if self.model.shared is not None else []

    def apply(self, data: Any, ctx: BatchContext) -> pa.Table:
        table = as_arrow(data)
        missing = [f for f in self.features if f not in table.column_names]
        if missing:
            reason = f"missing feature column(s) {missing}; the batch has {table.column_names}"
            _quarantine(ctx, table, "missing_feature", [reason] * table.num_rows)
            return self._with_outputs(table.slice(0, 0), [])
        model = self.model.get(ctx)
        if self.model.kind != "object":
            _check_loaded(model, self.method, self.features, self.model.name)
        columns, bad = self._features(table)
        if bad:
            rows = sorted(bad)
            _quarantine(ctx, table.take(rows), "bad_feature", [bad[i] for i in rows])
        keep = _keep_mask(table.num_rows, bad)
        good = table if keep is None else table.filter(keep)
        matrix = [c if keep is None else c.filter(keep) for c in columns]
        scored = self._score(model, matrix, good.num_rows)
        if scored.failed:
            rows = sorted(scored.failed)
            _quarantine(ctx, good.take(rows), "model_error", [scored.failed[i] for i in rows])
            good = good.filter(_keep_mask(good.num_rows, scored.failed))
        preds = [np.concatenate(p) for p in zip(*(cols for _, cols in scored.parts), strict=True)]
        return self._with_outputs(good, preds)

    # -- features --------------------------------------------------------------------

    def _features(self, table: pa.Table) -> tuple[list[pa.ChunkedArray], dict[int, str]]:
        """The feature columns, converted; and the rows that cannot be scored, with why."""
        bad: dict[int, str] = {}
        columns = []
        target = None if self.dtype is None else pa.from_numpy_dtype(np.dtype(self.dtype))
        for name in self.features:
            col = table.column(name)
            if isinstance(col.type, pa.DictionaryType):
                col = pc.cast(col, col.type.value_type)
            if target is not None:
                col, wrong = _to_number(col, target)
                for i in np.flatnonzero(wrong):
                    bad.setdefault(
                        int(i), f"feature {name!r} is not a number: {_value(table, name, i)}"
                    )
            if self.nulls == "quarantine":
                missing = _is_missing(col)
                for i in np.flatnonzero(missing):
                    bad.setdefault(int(i), f"feature {name!r} is missing (null or NaN)")
            columns.append(col)
        return columns, bad

    def _inputs(self, model: Any, columns: list[pa.ChunkedArray]) -> Any:
        """The whole batch in the form the model takes: a tensor, an array or a DataFrame."""
        if _is_torch(model) or (self.dtype is not None and not _wants_frame(model)):
            dtype = np.float32 if _is_torch(model) else np.dtype(self.dtype)
            out = np.empty((len(columns[0]) if columns else 0, len(columns)), dtype=dtype)
            for j, c in enumerate(columns):
                out[:, j] = c.to_numpy()
            return out
        import pandas as pd

        return pd.DataFrame({n: c.to_pandas() for n, c in zip(self.features, columns, strict=True)})

    # -- scoring -----------------------------------------------------------------------

    def _score(self, model: Any, columns: list[pa.ChunkedArray], n: int) -> _Scoring:
        state = _Scoring()
        if n == 0:
            return state
        x = self._inputs(model, columns)
        size = self.batch_rows or auto_batch_rows(len(self.features))
        for lo in range(0, n, size):
            self._chunk(model, x, lo, min(n, lo + size), state, probe=True)
        return state

    def _chunk(self, model, x, lo: int, hi: int, state: _Scoring, probe: bool) -> None:
        try:
            cols = self._columns(self._call(model, _rows(x, lo, hi)), hi - lo)
        except (ModelError, TransientError, MemoryError):
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
                self._probe(model, x, lo, hi, e)
                state.model_ok = True
            mid = (lo + hi) // 2
            self._chunk(model, x, lo, mid, state, probe=False)
            self._chunk(model, x, mid, hi, state, probe=False)
            return
        state.model_ok = True
        state.parts.append((lo, cols))

    def _probe(self, model, x, lo: int, hi: int, error: Exception) -> None:
        """Before bisecting, try a few single rows: if all fail, the model is at fault."""
        for i in np.linspace(lo, hi - 1, num=min(PROBE_ROWS, hi - lo), dtype=int):
            try:
                self._columns(self._call(model, _rows(x, int(i), int(i) + 1)), 1)
                return
            except (ModelError, TransientError, MemoryError):
                raise
            except Exception:  # noqa: BLE001 - any error of the model counts against it
                continue
        raise ModelError(
            f"the model ({self.model.name}) raised on the whole chunk and on each of "
            f"{min(PROBE_ROWS, hi - lo)} single rows tried: {type(error).__name__}: {_short(error)}. "
            "This looks like a problem with the model or the features given to it "
            f"({list(self.features)}), not with some rows; nothing of this batch was committed"
        ) from error

    def _call(self, model: Any, x: Any) -> Any:
        if _is_torch(model):
            import torch

            with torch.inference_mode():
                tensor = torch.from_numpy(x)
                out = self.method(model, tensor) if callable(self.method) else model(tensor)
            return out.detach().cpu().numpy() if hasattr(out, "detach") else out
        if callable(self.method):
            return self.method(model, x)
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

    def _with_outputs(self, table: pa.Table, preds: list[np.ndarray]) -> pa.Table:
        table = table.drop_columns([c for c in self.outputs if c in table.column_names])
        for j, name in enumerate(self.outputs):
            values = preds[j] if preds else np.empty(0, dtype=np.float64)
            table = table.append_column(name, pa.array(values))
        return table


# -- small pieces ---------------------------------------------------------------------


def _import(path: str) -> Callable[..., Any]:
    """``"package.module:function"`` -> the function."""
    import importlib

    module_name, _, attr = path.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as e:
        raise JobSpecError(
            f"cannot import the model loader's module {module_name!r} ({e}); install it on the "
            "client and every worker, or put it on PYTHONPATH",
            key="steps.predict.model",
        ) from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise JobSpecError(
                f"module {module_name!r} has no attribute {attr!r}", key="steps.predict.model"
            )
        obj = getattr(obj, part)
    if not callable(obj):
        raise JobSpecError(f"{path!r} is not a function", key="steps.predict.model")
    return obj


def _names(values: Any, key: str) -> tuple[str, ...]:
    if isinstance(values, str):
        values = [values]
    names = tuple(values or ())
    if not names or not all(isinstance(v, str) and v for v in names):
        raise JobSpecError(
            f"{key} must be a non-empty list of column names", key=f"steps.predict.{key}"
        )
    if len(set(names)) != len(names):
        raise JobSpecError(f"{key} names a column twice: {list(names)}", key=f"steps.predict.{key}")
    return names


def _check_object(model: Any, method: Any, features: tuple[str, ...]) -> None:
    """Checks that can be made on the client when the model is an object."""
    if isinstance(method, str) and not hasattr(model, method):
        if not (method == "predict" and callable(model)):
            raise JobSpecError(
                f"the model ({type(model).__name__}) has no method {method!r}",
                key="steps.predict.method",
            )
    _check_feature_names(model, features, JobSpecError, key="steps.predict.features")


def _check_loaded(model: Any, method: Any, features: tuple[str, ...], name: str) -> None:
    """The same checks for a model loaded on a worker; a mismatch is a ModelError."""
    if isinstance(method, str) and not hasattr(model, method) and not _is_torch(model):
        if not (method == "predict" and callable(model)):
            raise ModelError(f"the model loaded from {name!r} has no method {method!r}")
    _check_feature_names(model, features, ModelError)


def _check_feature_names(model: Any, features: tuple[str, ...], error: type, **kw: Any) -> None:
    trained = getattr(model, "feature_names_in_", None)
    if trained is not None and list(trained) != list(features):
        raise error(
            f"the model was trained on features {list(trained)} (in that order); "
            f"features is {list(features)}",
            **kw,
        )
    n = getattr(model, "n_features_in_", None)
    if trained is None and isinstance(n, int) and n != len(features):
        raise error(f"the model takes {n} features; features names {len(features)}", **kw)


def _wants_frame(model: Any) -> bool:
    """DataFrames for models trained on named columns and for plain callables."""
    if getattr(model, "feature_names_in_", None) is not None:
        return True
    return not (hasattr(model, "predict") or hasattr(model, "predict_proba"))


def _to_number(col: pa.ChunkedArray, target: pa.DataType) -> tuple[pa.ChunkedArray, np.ndarray]:
    """Cast to ``target``; values that are not numbers become null and are flagged."""
    n = len(col)
    t = col.type
    if pa.types.is_floating(t) or pa.types.is_integer(t) or pa.types.is_boolean(t):
        return pc.cast(col, target, safe=False), np.zeros(n, dtype=bool)
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        ok = pc.fill_null(pc.match_substring_regex(col, _NUMBER, ignore_case=True), True)
        ok_np = ok.to_numpy(zero_copy_only=False)
        text = col if ok_np.all() else pc.if_else(ok, col, pa.scalar(None, t))
        return pc.cast(pc.utf8_trim_whitespace(text), target), ~ok_np
    if pa.types.is_decimal(t):
        return pc.cast(col, target, safe=False), np.zeros(n, dtype=bool)
    return pa.chunked_array([pa.nulls(n, target)]), pc.invert(pc.is_null(col)).to_numpy(
        zero_copy_only=False
    )


def _is_missing(col: pa.ChunkedArray) -> np.ndarray:
    if pa.types.is_floating(col.type):
        return pc.is_null(col, nan_is_null=True).to_numpy(zero_copy_only=False)
    return pc.is_null(col).to_numpy(zero_copy_only=False)


def _value(table: pa.Table, name: str, i: int) -> str:
    return repr(table.column(name)[int(i)].as_py())[:200]


def _keep_mask(n: int, bad: dict[int, str]) -> pa.Array | None:
    if not bad:
        return None
    keep = np.ones(n, dtype=bool)
    keep[list(bad)] = False
    return pa.array(keep)


def _rows(x: Any, lo: int, hi: int) -> Any:
    return x.iloc[lo:hi] if hasattr(x, "iloc") else x[lo:hi]


def _short(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return (text[0] if text else "")[:300]


def _quarantine(ctx: BatchContext, rows: pa.Table, kind: str, reasons: list[str]) -> None:
    if rows.num_rows == 0:
        return
    raw = [json.dumps(r, default=str) for r in rows.to_pylist()]
    ctx.quarantine_rows("predict", kind, reasons, raw)
