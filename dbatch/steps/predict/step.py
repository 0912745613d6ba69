"""The Predict step: its options, its identity, and what it does with one batch."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from ...arrow import as_arrow
from ...context import BatchContext
from ...errors import JobSpecError
from ..base import SharedObject, Step, function_token
from .cache import load_once
from .checks import check_loaded, check_object
from .features import feature_columns, keep_mask
from .reference import ModelRef, model_ref
from .scoring import Scorer

__all__ = ["Predict"]


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

    model: ModelRef
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
        feats, outs = _columns(features, output, outputs)
        _check_options(method, batch_rows, on_error, dtype, nulls)
        version = None if version is None else str(version)
        ref = dataclasses.replace(model_ref(model, model_arg), version=version)
        if ref.shared is not None:
            check_object(ref.shared.obj, method, feats)
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

    def prepare(self) -> None:
        """Load the model file (or call the loader) in this process, ahead of the first batch."""
        if self.model.kind != "object":
            load_once(self.model)

    def apply(self, data: Any, ctx: BatchContext) -> pa.Table:
        table = as_arrow(data)
        missing = [f for f in self.features if f not in table.column_names]
        if missing:
            reason = f"missing feature column(s) {missing}; the batch has {table.column_names}"
            _quarantine(ctx, table, "missing_feature", [reason] * table.num_rows)
            return self._with_outputs(table.slice(0, 0), [])
        model = self.model.get(ctx)
        if self.model.kind != "object":
            check_loaded(model, self.method, self.features, self.model.name)
        columns, bad = feature_columns(table, self.features, self.dtype, self.nulls)
        if bad:
            rows = sorted(bad)
            _quarantine(ctx, table.take(rows), "bad_feature", [bad[i] for i in rows])
        keep = keep_mask(table.num_rows, bad)
        good = table if keep is None else table.filter(keep)
        matrix = [c if keep is None else c.filter(keep) for c in columns]
        scored = self._scorer(model).score(matrix, good.num_rows)
        if scored.failed:
            rows = sorted(scored.failed)
            _quarantine(ctx, good.take(rows), "model_error", [scored.failed[i] for i in rows])
            good = good.filter(keep_mask(good.num_rows, scored.failed))
        return self._with_outputs(good, scored.predictions())

    def _scorer(self, model: Any) -> Scorer:
        return Scorer(
            model=model,
            name=self.model.name,
            features=self.features,
            outputs=self.outputs,
            method=self.method,
            on_error=self.on_error,
            batch_rows=self.batch_rows,
            dtype=self.dtype,
        )

    def _with_outputs(self, table: pa.Table, preds: list[np.ndarray]) -> pa.Table:
        table = table.drop_columns([c for c in self.outputs if c in table.column_names])
        for j, name in enumerate(self.outputs):
            values = preds[j] if preds else np.empty(0, dtype=np.float64)
            table = table.append_column(name, pa.array(values))
        return table


# -- options --------------------------------------------------------------------------


def _columns(
    features: Sequence[str], output: str | None, outputs: Sequence[str] | None
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The feature and output column names, checked."""
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
    return feats, outs


def _check_options(
    method: Any, batch_rows: Any, on_error: str, dtype: str | None, nulls: str
) -> None:
    if on_error not in ("quarantine", "fail"):
        raise JobSpecError("on_error must be 'quarantine' or 'fail'", key="steps.predict.on_error")
    if nulls not in ("quarantine", "keep"):
        raise JobSpecError("nulls must be 'quarantine' or 'keep'", key="steps.predict.nulls")
    if dtype is not None and dtype not in ("float64", "float32"):
        raise JobSpecError("dtype must be 'float64', 'float32' or None", key="steps.predict.dtype")
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


def _quarantine(ctx: BatchContext, rows: pa.Table, kind: str, reasons: list[str]) -> None:
    if rows.num_rows == 0:
        return
    raw = [json.dumps(r, default=str) for r in rows.to_pylist()]
    ctx.quarantine_rows("predict", kind, reasons, raw)
