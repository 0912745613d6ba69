"""Time windows: pandas frequencies, and the start of the window that holds a moment."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .errors import JobSpecError

if TYPE_CHECKING:  # pandas is imported where windows are computed, not with the package
    import pandas as pd
    from pandas.tseries.offsets import BaseOffset

__all__ = ["frequency", "window_start"]


def frequency(freq: str, *, key: str) -> BaseOffset:
    """The pandas offset of ``freq`` (``"1D"``, ``"6h"``, ``"MS"``); anything else names ``key``.

    Examples
    --------
    >>> frequency("6h", key="batching.window")
    <6 * Hours>
    """
    import pandas as pd

    try:
        return pd.tseries.frequencies.to_offset(freq)
    except (TypeError, ValueError):
        raise JobSpecError(
            f"{freq!r} is not a pandas frequency such as 1D, 6h or MS", key=key
        ) from None


def window_start(ts: pd.Timestamp, offset: BaseOffset) -> pd.Timestamp:
    """The start of the window of ``offset`` holding ``ts`` (fixed or calendar frequencies)."""
    try:
        return ts.floor(offset)  # fixed frequencies: days, hours, minutes
    except ValueError:
        return offset.rollback(ts.normalize())  # calendar ones: months, weeks
