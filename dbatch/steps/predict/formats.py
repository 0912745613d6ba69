"""How a model is loaded: model files by suffix, each with its install hint, and loader functions."""

from __future__ import annotations

import importlib
import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from ...errors import JobSpecError, ModelError
from . import pytorch

__all__ = ["ModelFormat", "FORMATS", "DEFAULT_FORMAT", "format_for", "load_file", "import_loader"]


@dataclass(frozen=True)
class ModelFormat:
    """A kind of model file: the library that reads it, and how to install that library."""

    #: What the file is, for messages ("a PyTorch file").
    kind: str
    #: The module imported to read it, and the library's name for people.
    module: str
    library: str
    #: The command that installs the library.
    hint: str
    #: ``load(module, data)``: the model in the file's bytes.
    load: Callable[[ModuleType, bytes], Any]

    def read(self, path: str, data: bytes) -> Any:
        """The model in ``data``; a ModelError with the install hint if the library is missing."""
        try:
            module = importlib.import_module(self.module)
        except ImportError:
            raise ModelError(
                f"model file {path!r} is {self.kind}; install {self.library} on every worker "
                f"({self.hint})"
            ) from None
        return self.load(module, data)


def _load_joblib(joblib: ModuleType, data: bytes) -> Any:
    return joblib.load(io.BytesIO(data))


JOBLIB = ModelFormat(
    kind="a joblib or pickle file",
    module="joblib",
    library="joblib (and the model's own library, such as scikit-learn)",
    hint="pip install joblib scikit-learn",
    load=_load_joblib,
)
TORCH_SAVE = ModelFormat(
    kind="a PyTorch file",
    module="torch",
    library="PyTorch",
    hint="pip install torch",
    load=pytorch.load_saved,
)
TORCH_EXPORT = ModelFormat(
    kind="a PyTorch file",
    module="torch",
    library="PyTorch",
    hint="pip install torch",
    load=pytorch.load_exported,
)

#: File suffix (lower case) -> how to read the file.
FORMATS: dict[str, ModelFormat] = {
    ".joblib": JOBLIB,
    ".pkl": JOBLIB,
    ".pt": TORCH_SAVE,
    ".pth": TORCH_SAVE,
    ".pt2": TORCH_EXPORT,
}
#: Files with any other suffix: joblib reads plain pickles too.
DEFAULT_FORMAT = JOBLIB


def format_for(path: str) -> ModelFormat:
    """How the model file at ``path`` (a path or an fsspec URL) is read, from its suffix.

    Examples
    --------
    >>> format_for("s3://models/net.PT2").kind
    'a PyTorch file'
    >>> format_for("models/churn.joblib").module
    'joblib'
    """
    return FORMATS.get(Path(path).suffix.lower(), DEFAULT_FORMAT)


def load_file(path: str, data: bytes) -> Any:
    """The model held in ``data``, the bytes of the model file at ``path``."""
    return format_for(path).read(path, data)


def import_loader(path: str) -> Callable[..., Any]:
    """``"package.module:function"`` -> the function.

    Examples
    --------
    >>> import_loader("json:loads")('{"a": 1}')
    {'a': 1}
    """
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
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise JobSpecError(
                f"module {module_name!r} has no attribute {attr!r}", key="steps.predict.model"
            ) from None
    if not callable(obj):
        raise JobSpecError(f"{path!r} is not a function", key="steps.predict.model")
    return obj
