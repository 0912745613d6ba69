"""Where the model comes from: what a task carries instead of the model, and its identity."""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...context import BatchContext
from ...errors import JobSpecError
from ..base import SharedObject, function_token
from .cache import load_once
from .checks import can_score
from .formats import import_loader

__all__ = ["ModelRef", "model_ref"]

_IMPORT_PATH = re.compile(r"(?:.*/)?([A-Za-z_][\w]*(?:\.[A-Za-z_]\w*)*:[A-Za-z_][\w.]*)")
_CHECKSUMS: dict[tuple, str] = {}


@dataclass(frozen=True)
class ModelRef:
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
        """The model: the object sent to this worker, or the one loaded (once) in this process."""
        if self.shared is not None:
            return self.shared.get(ctx)
        return load_once(self)


def model_ref(model: Any, arg: Any) -> ModelRef:
    """The reference to ``model`` (an object, a file path or URL, or a loader's import path).

    Examples
    --------
    >>> ref = model_ref("json:loads", '{"weights": [1, 2]}')
    >>> ref.kind, ref.name
    ('loader', 'json:loads')
    """
    if isinstance(model, (str, Path)):
        return _path_ref(str(model), arg)
    if arg is not None:
        raise JobSpecError(
            "model_arg is for a loader function ('package.module:function')",
            key="steps.predict.model_arg",
        )
    if not can_score(model):
        raise JobSpecError(
            f"model must have predict / predict_proba, be callable, or be a file path or a "
            f"loader 'package.module:function'; got {type(model).__name__}",
            key="steps.predict.model",
        )
    ident = _object_digest(model)
    name = f"{type(model).__module__}.{type(model).__qualname__}"
    return ModelRef("object", name, ident, shared=SharedObject(model, f"model-{ident}"))


def _path_ref(text: str, arg: Any) -> ModelRef:
    """A loader ``package.module:function`` (unless a file has that name), or a model file."""
    loader = _IMPORT_PATH.fullmatch(text)
    if loader and not Path(text).exists():
        func = import_loader(loader.group(1))
        ident = [loader.group(1), function_token(func), arg]
        if isinstance(arg, (str, Path)) and Path(arg).is_file():
            ident.append(_file_checksum(str(arg)))
        ident_hex = hashlib.sha256(json.dumps(ident, default=str).encode()).hexdigest()[:32]
        return ModelRef("loader", loader.group(1), ident_hex, arg=arg)
    if arg is not None:
        raise JobSpecError(
            "model_arg is for a loader function ('package.module:function'), not a file",
            key="steps.predict.model_arg",
        )
    if "://" not in text:
        text = str(Path(text).expanduser().resolve())
    return ModelRef("file", text, _file_checksum(text))


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
