"""Predict: score each batch with a trained model that each worker loads once and reuses."""

from ...errors import ModelError
from .cache import model_cache
from .scoring import auto_batch_rows
from .step import Predict

__all__ = ["Predict", "ModelError", "auto_batch_rows", "model_cache"]
