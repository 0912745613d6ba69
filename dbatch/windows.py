"""Time windows: pandas frequencies, and the start of the window that holds a moment."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .errors import JobSpecError

if TYPE_CHECKING:  # pandas is imported where windows are computed, not with the package
    import pandas as pd
    from pandas.tseries.offsets import BaseOffset

__all__ = ["frequency", "window_start", "window_label"]


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


def window_label(seconds: float, freq: str) -> str:
    """The window of ``freq`` holding a moment, as people write it (UTC).

    Examples
    --------
    >>> window_label(1793491200.0, "1D"), window_label(1793516400.0, "6h")
    ('2026-11-01', '2026-11-01 06:00')
    >>> window_label(1793491200.0, "MS")
    '2026-11'
    """
    from datetime import UTC, datetime

    import pandas as pd

    offset = frequency(freq, key="batching.window")
    ts = pd.Timestamp(datetime.fromtimestamp(seconds, tz=UTC)).tz_localize(None)
    start = window_start(ts, offset)
    try:
        step = pd.Timedelta(offset)
    except ValueError:  # a calendar frequency: weeks, months, quarters, years
        return f"{start:%Y-%m}" if offset.name[:1] in ("M", "Q") else f"{start:%Y-%m-%d}"
    return f"{start:%Y-%m-%d}" if step >= pd.Timedelta("1D") else f"{start:%Y-%m-%d %H:%M}"
