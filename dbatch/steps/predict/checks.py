"""What can be checked of a model: on the client for an object, on a worker once loaded.

Models are third-party objects (scikit-learn estimators, PyTorch modules, plain
callables), so what they offer is read from the names those libraries use.
"""

from __future__ import annotations

from typing import Any

from ...errors import JobSpecError, ModelError
from .pytorch import is_torch

__all__ = ["can_score", "check_object", "check_loaded", "check_feature_names", "wants_frame"]


def can_score(model: Any) -> bool:
    """Whether ``model`` is callable or has ``predict`` / ``predict_proba``."""
    return callable(model) or hasattr(model, "predict") or hasattr(model, "predict_proba")


def check_object(model: Any, method: Any, features: tuple[str, ...]) -> None:
    """Checks that can be made on the client when the model is an object."""
    if isinstance(method, str) and not hasattr(model, method):
        if not (method == "predict" and callable(model)):
            raise JobSpecError(
                f"the model ({type(model).__name__}) has no method {method!r}",
                key="steps.predict.method",
            )
    check_feature_names(model, features, JobSpecError, key="steps.predict.features")


def check_loaded(model: Any, method: Any, features: tuple[str, ...], name: str) -> None:
    """The same checks for a model loaded on a worker; a mismatch is a ModelError."""
    if isinstance(method, str) and not hasattr(model, method) and not is_torch(model):
        if not (method == "predict" and callable(model)):
            raise ModelError(f"the model loaded from {name!r} has no method {method!r}")
    check_feature_names(model, features, ModelError)


def check_feature_names(model: Any, features: tuple[str, ...], error: type, **kw: Any) -> None:
    """The features match what the model was trained on (scikit-learn's ``*_in_`` attributes)."""
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


def wants_frame(model: Any) -> bool:
    """DataFrames for models trained on named columns and for plain callables."""
    if getattr(model, "feature_names_in_", None) is not None:
        return True
    return not (hasattr(model, "predict") or hasattr(model, "predict_proba"))
