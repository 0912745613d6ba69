"""The one JSON shape of ``--json``: ``{"version": 1, "kind": ..., ...}`` (see docs/cli.md).

``run`` (``dbatch run``, ``resume``, ``replay``, ``backfill``, one per run of ``watch``),
``status``, ``history`` and ``quarantine`` share it: a run is the same object in
``run``, ``status.last_run`` and ``history.runs``, a batch the same object in
``run.batches`` and ``status.batches``. Times are ISO 8601 in UTC, absent values
``null``, nested data (``params``, ``error``) objects, never JSON text.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "VERSION",
    "document",
    "iso_time",
    "run_object",
    "batch_object",
    "run_document",
    "quarantine_object",
]

#: The version of the shape; it changes only when a field is removed or changes meaning.
VERSION = 1

_RUN_COUNTS = (
    "batches_planned",
    "batches_committed",
    "batches_skipped",
    "batches_recovered",
    "batches_quarantined",
    "batches_failed",
    "rows_in",
    "rows_out",
    "rows_filtered",
    "rows_quarantined",
    "files_quarantined",
)
_BATCH_COUNTS = ("attempts", "units", "rows_in", "rows_out", "rows_filtered", "rows_quarantined")


def document(kind: str, job: str, **content: Any) -> dict[str, Any]:
    """``{"version": 1, "kind": kind, "job": job, ...content}``."""
    return {"version": VERSION, "kind": kind, "job": job, **content}


def _missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return type(value).__name__ in ("NaTType", "NAType")


def iso_time(value: Any) -> str | None:
    """Seconds since the epoch, a datetime or a pandas Timestamp -> ISO 8601 UTC (ms)."""
    if _missing(value):
        return None
    seconds = _seconds(value)  # a Timestamp's nanoseconds go; milliseconds are kept
    assert seconds is not None
    when = datetime.fromtimestamp(seconds, UTC)
    return when.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _seconds(value: Any) -> float | None:
    if _missing(value):
        return None
    if hasattr(value, "timestamp"):
        return float(value.timestamp())
    return float(value)


def _count(value: Any) -> int | None:
    return None if _missing(value) else int(value)


def _params(value: Any) -> dict[str, Any]:
    if _missing(value) or value == "":
        return {}
    if isinstance(value, str):
        loaded = json.loads(value)
        return loaded if isinstance(loaded, dict) else {"value": loaded}
    return dict(value)


def _text(value: Any) -> str | None:
    return None if _missing(value) or value == "" else str(value)


def run_object(row: Mapping[str, Any]) -> dict[str, Any]:
    """A run, from a ledger row (``runs_frame`` record or ``last_run``)."""
    started, ended = _seconds(row.get("started")), _seconds(row.get("ended"))
    duration = row.get("duration")
    if _missing(duration):
        duration = ended - started if started is not None and ended is not None else None
    return {
        "run_id": row["run_id"],
        "status": row["status"],
        "started": iso_time(started),
        "ended": iso_time(ended),
        "duration": None if duration is None else round(float(duration), 3),
        **{k: _count(row.get(k)) for k in _RUN_COUNTS},
        "output": _text(row.get("output")),
        "message": _text(row.get("message")),
        "params": _params(row.get("params")),
    }


def batch_object(row: Mapping[str, Any]) -> dict[str, Any]:
    """A batch, from a ledger row or a run's batch record."""
    error = None
    if not _missing(row.get("error_class")) or not _missing(row.get("error_message")):
        error = {"class": _text(row.get("error_class")), "message": _text(row.get("error_message"))}
    files = row.get("files_quarantined")
    if isinstance(files, (list, tuple)):
        files = len(files)
    took = _seconds(row.get("duration"))
    started, ended = _seconds(row.get("started")), _seconds(row.get("ended"))
    if took is None and started is not None and ended is not None:
        took = ended - started  # a failed batch: from its start to its end
    return {
        "batch_id": row["batch_id"],
        "state": row.get("state"),
        "run_id": _text(row.get("run_id")),
        **{k: _count(row.get(k)) for k in _BATCH_COUNTS},
        "files_quarantined": _count(files),
        "started": iso_time(started),
        "ended": iso_time(ended),
        "duration": None if took is None else round(took, 3),
        "checksum": _text(row.get("checksum")),
        "worker": _text(row.get("worker")),
        "error": error,
    }


def run_document(result: Any) -> dict[str, Any]:
    """What ``dbatch run --json`` prints for a ``RunResult``: kind ``run``."""
    summary = result.to_dict()
    started = getattr(result, "started", None)
    run = run_object(
        {
            **summary,
            "started": started,
            "ended": None if started is None else started + result.duration,
            "params": getattr(result, "params", None),
        }
    )
    extra = {
        "output_rows": summary.get("output_rows"),
        "dashboard": summary.get("dashboard"),
        "work_area": summary.get("work_area") or None,
    }
    batches = [batch_object({"run_id": result.run_id, **b}) for b in result.batches]
    return document("run", result.job, **run, **extra, batches=batches)


def _row_value(raw: str | None) -> tuple[str | None, dict[str, Any] | None]:
    """(raw text, row object): a row a step kept as a JSON object is given as an object."""
    if raw is None or not raw.startswith("{"):
        return raw, None
    try:
        value = json.loads(raw)
    except ValueError:
        return raw, None
    return (None, value) if isinstance(value, dict) else (raw, None)


def quarantine_object(row: Mapping[str, Any], location: str) -> dict[str, Any]:
    """One quarantined row or file: ``raw`` is the line as read, ``row`` a row's columns."""
    raw, values = _row_value(_text(row.get("raw")))
    return {
        "kind": row["kind"],
        "reason": row["reason"],
        "source": row["source"],
        "line": _count(row.get("line")),
        "location": location,
        "raw": raw,
        "row": values,
        "batch_id": row["batch_id"],
        "run_id": row["run_id"],
        "state": row.get("state"),
    }


def records(frame: Any) -> Iterable[dict[str, Any]]:
    """The rows of a pandas DataFrame as dicts (NaN, NaT and NA stay, for the helpers above)."""
    return frame.to_dict(orient="records")
