"""PyTorch models: reading their files, inference mode and threads, calling a module."""

from __future__ import annotations

import io
import os
import sys
import warnings
import zipfile
from collections.abc import Callable
from types import ModuleType
from typing import Any

import numpy as np

__all__ = ["is_torch", "load_exported", "load_saved", "prepare", "call"]


def load_saved(torch: ModuleType, data: bytes) -> Any:
    """A ``.pt`` / ``.pth`` file: a TorchScript archive or a whole module saved with ``torch.save``."""
    if _is_torchscript(data):
        with warnings.catch_warnings():
            # TorchScript is deprecated upstream; archives made with it still load.
            warnings.simplefilter("ignore", DeprecationWarning)
            return torch.jit.load(io.BytesIO(data), map_location="cpu")
    # A whole module saved with torch.save: unpickling runs code, as with joblib files.
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=False)


def load_exported(torch: ModuleType, data: bytes) -> Any:
    """A ``.pt2`` file written by ``torch.export.save``."""
    return torch.export.load(io.BytesIO(data)).module()


def _is_torchscript(data: bytes) -> bool:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            return any(n.split("/", 1)[-1].startswith("code/") for n in z.namelist())
    except zipfile.BadZipFile:
        return False


def is_torch(model: Any) -> bool:
    """Whether ``model`` is a PyTorch module (without importing PyTorch when it is not loaded)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(model, torch.nn.Module)


def prepare(model: Any) -> None:
    """Inference mode, and as many torch threads as the process may use (1 on a Dask worker)."""
    if not is_torch(model):
        return
    import torch

    try:
        model.eval()
    except NotImplementedError:  # a torch.export module: already traced for inference
        pass
    threads = os.environ.get("OMP_NUM_THREADS")
    if threads and threads.isdigit() and int(threads) > 0:
        torch.set_num_threads(int(threads))


def call(model: Any, x: np.ndarray, method: str | Callable[[Any, Any], Any]) -> Any:
    """``module(tensor)`` (or a callable ``method(module, tensor)``) in inference mode."""
    import torch

    with torch.inference_mode():
        tensor = torch.from_numpy(x)
        out = method(model, tensor) if callable(method) else model(tensor)
    return out.detach().cpu().numpy() if isinstance(out, torch.Tensor) else out
