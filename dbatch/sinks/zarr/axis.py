"""The regular time axis of a Zarr store: positions, labels and the time encoding."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ...errors import BadInputError, JobSpecError

__all__ = ["TimeAxis", "fixed_step", "timestamp"]

_TIME_UNITS = (
    ("days", 86_400 * 10**9),
    ("hours", 3_600 * 10**9),
    ("minutes", 60 * 10**9),
    ("seconds", 10**9),
    ("milliseconds", 10**6),
    ("microseconds", 10**3),
    ("nanoseconds", 1),
)


def fixed_step(freq: str) -> int:
    """The step of a fixed frequency in nanoseconds (``1D``, ``1h``); calendar ones are refused.

    Examples
    --------
    >>> fixed_step("1h")
    3600000000000
    """
    import pandas as pd

    try:
        step = int(pd.Timedelta(pd.tseries.frequencies.to_offset(freq)).value)
    except (TypeError, ValueError):
        step = 0
    if step <= 0:
        raise JobSpecError(
            f"freq must be a fixed step such as 1D, 1h or 10min, got {freq!r} "
            "(calendar months, weeks and years are not evenly spaced)",
            key="sink.freq",
        )
    return step


def timestamp(value: Any, key: str) -> Any:
    """``value`` as a timezone-naive pandas Timestamp (in UTC when it had a zone).

    Examples
    --------
    >>> timestamp("2024-01-01T01:00+01:00", "sink.start").isoformat()
    '2024-01-01T00:00:00'
    """
    import pandas as pd

    try:
        ts = pd.Timestamp(value)
    except (TypeError, ValueError):
        raise JobSpecError(f"{value!r} is not a date or timestamp", key=key) from None
    if ts.tzinfo is not None:
        ts = ts.tz_convert("UTC").tz_localize(None)
    return ts


@dataclass(frozen=True)
class TimeAxis:
    """``start`` + i x ``freq`` along ``dim`` of the store at ``path`` (up to ``end`` if given).

    Examples
    --------
    >>> axis = TimeAxis("time", "2024-01-01T00:00:00", "1D", None, "daily.zarr")
    >>> axis.label(2)
    '2024-01-03T00:00:00'
    """

    dim: str
    start: str
    freq: str
    end: str | None
    path: str

    @property
    def step_ns(self) -> int:
        """The step in nanoseconds."""
        return fixed_step(self.freq)

    @property
    def start_ns(self) -> int:
        """The first label in nanoseconds since the epoch."""
        import pandas as pd

        return int(pd.Timestamp(self.start).value)

    def declared_length(self) -> int | None:
        """The number of points up to ``end``; None when the axis grows."""
        if self.end is None:
            return None
        import pandas as pd

        return (int(pd.Timestamp(self.end).value) - self.start_ns) // self.step_ns + 1

    def encoding(self) -> tuple[str, int]:
        """The CF ``units`` of the stored axis and its step in those units."""
        step = self.step_ns
        unit, size = next((u, n) for u, n in _TIME_UNITS if step % n == 0)
        return f"{unit} since {self.start}", step // size

    def labels(self, i0: int, i1: int) -> Any:
        """The labels of positions ``i0`` to ``i1`` (excluded) as ``datetime64[ns]``."""
        import numpy as np

        ns = self.start_ns + np.arange(i0, i1, dtype="int64") * self.step_ns
        return ns.astype("datetime64[ns]")

    def label(self, i: int) -> str:
        """The label of position ``i``, in ISO format."""
        import pandas as pd

        return pd.Timestamp(self.start_ns + i * self.step_ns).isoformat()

    def index(self, values: Any) -> Any:
        """The positions of timestamps on the axis; BadInputError for values off the axis."""
        import numpy as np

        if not np.issubdtype(np.asarray(values).dtype, np.datetime64):
            raise BadInputError(
                f"'{self.dim}' holds {np.asarray(values).dtype} values; the zarr sink needs "
                "timestamps",
                kind="axis",
                where=self.path,
            )
        offsets = np.asarray(values, dtype="datetime64[ns]").astype("int64") - self.start_ns
        off_axis = np.flatnonzero((offsets % self.step_ns != 0) | (offsets < 0))
        if off_axis.size:
            import pandas as pd

            bad = pd.Timestamp(np.asarray(values)[off_axis[0]]).isoformat()
            raise BadInputError(
                f"'{self.dim}' value {bad} is not on the store's axis ({self.start} every "
                f"{self.freq}); resample to {self.freq} first (a resample step) or fix the sink's "
                "start",
                kind="axis",
                where=self.path,
            )
        return offsets // self.step_ns
