"""The models each worker process keeps loaded, and how a model reference is loaded."""

from __future__ import annotations

import hashlib
import threading
from collections import Counter, OrderedDict
from typing import TYPE_CHECKING, Any

from ...errors import ModelError, is_transient
from . import pytorch
from .formats import import_loader, load_file

if TYPE_CHECKING:
    from .reference import ModelRef

__all__ = ["KEEP_MODELS", "model_cache", "load_once"]

#: Models each worker process keeps loaded (least recently used ones are dropped).
KEEP_MODELS = 4

_MODELS: OrderedDict[str, Any] = OrderedDict()
_LOADS: Counter[str] = Counter()
_LOCK = threading.Lock()


def model_cache() -> dict[str, int]:
    """Models loaded in this process since it started: cache key -> number of loads.

    On a cluster, ``client.run(model_cache)`` shows what each worker loaded; a key
    loaded more than once was dropped from the cache (more than ``KEEP_MODELS``
    models in turn) and loaded again.

    Examples
    --------
    >>> isinstance(model_cache(), dict)
    True
    """
    with _LOCK:
        return dict(_LOADS)


def load_once(ref: ModelRef) -> Any:
    """The model ``ref`` names, loaded at most once in this process while it stays cached."""
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


def _load(ref: ModelRef) -> Any:
    model = _call_loader(ref) if ref.kind == "loader" else _load_model_file(ref)
    pytorch.prepare(model)
    return model


def _call_loader(ref: ModelRef) -> Any:
    func = import_loader(ref.name)
    try:
        return func() if ref.arg is None else func(ref.arg)
    except Exception as e:
        if is_transient(e):  # a model store that did not answer: the runner retries
            raise
        raise ModelError(f"model loader {ref.name!r} failed: {type(e).__name__}: {e}") from e


def _load_model_file(ref: ModelRef) -> Any:
    data = _read_bytes(ref.name)
    found = hashlib.sha256(data).hexdigest()[:32]
    if found != ref.identity:
        raise ModelError(
            f"model file {ref.name!r} changed after the run was planned (checksum {found}, "
            f"planned {ref.identity}); run the job again so every batch uses one model"
        )
    try:
        return load_file(ref.name, data)
    except ModelError:
        raise
    except Exception as e:
        raise ModelError(
            f"cannot load model file {ref.name!r}: {type(e).__name__}: {e}. Save scikit-learn "
            "models with joblib.dump (or pickle), PyTorch models with torch.save or "
            "torch.export.save"
        ) from e


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
