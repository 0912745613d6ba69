"""What the contract suites compare data with, and the trip an object makes to a worker."""

from __future__ import annotations

import pickle
from typing import Any

__all__ = ["assert_same_frames", "same_data", "shipped"]


def assert_same_frames(got: Any, want: Any) -> None:
    """Same columns and the same rows, each exactly once (order does not matter).

    Examples
    --------
    >>> import pandas as pd
    >>> assert_same_frames(pd.DataFrame({"a": [2, 1]}), pd.DataFrame({"a": [1, 2]}))
    """
    import pandas as pd

    assert list(got.columns) == list(want.columns), (list(got.columns), list(want.columns))
    assert len(got) == len(want), f"{len(got)} rows, expected {len(want)}"

    def norm(frame: pd.DataFrame) -> pd.DataFrame:
        return frame.sort_values(list(frame.columns)).reset_index(drop=True)

    pd.testing.assert_frame_equal(norm(got), norm(want))


def same_data(got: Any, want: Any) -> None:
    """Raise ``AssertionError`` unless ``got`` holds exactly ``want`` (tables or Datasets).

    Examples
    --------
    >>> import pyarrow as pa
    >>> same_data(pa.table({"a": [1]}), pa.table({"a": [1]}))
    """
    if hasattr(want, "data_vars"):
        import xarray as xr

        xr.testing.assert_identical(got, want)
        return
    from ...arrow import as_arrow

    a, b = as_arrow(got), as_arrow(want)
    assert a.schema == b.schema, f"{a.schema} != {b.schema}"
    assert a.equals(b), "other rows than the first time"


def shipped(obj: Any) -> Any:
    """``obj`` after the trip a task makes to a worker (cloudpickle there, pickle back).

    Examples
    --------
    >>> shipped({"a": 1})
    {'a': 1}
    """
    import cloudpickle

    return pickle.loads(cloudpickle.dumps(obj))
