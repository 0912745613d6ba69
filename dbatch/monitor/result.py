"""RunSummary builds a RunResult from run events; RunResult shows itself in a terminal and in Jupyter."""

from __future__ import annotations

import html
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core import (
    BATCH_COLUMNS,
    ROW_COUNTS,
    Batch,
    BatchState,
    Event,
    EventKind,
    Plan,
    row_balance,
)
from ..listeners import RunListener
from .infos import BatchInfos

__all__ = ["RunResult", "RunSummary"]

_BATCH_STATS = (*BATCH_COLUMNS, "files_quarantined", "duration", "quarantine_kinds")


@dataclass
class RunResult:
    """What a run did: per-batch counts and timings, totals, output location, status.

    ``status`` is ``succeeded`` (every batch committed, output published),
    ``succeeded_with_quarantine`` (published without batches that were set aside),
    ``nothing_to_do`` (every batch was already committed) or ``failed`` (nothing new
    published; run again or ``dbatch resume`` to finish).
    """

    run_id: str
    job: str
    status: str
    planned: int
    committed: int
    skipped: int
    recovered: int
    quarantined: int
    failed: int
    rows_in: int
    rows_out: int
    rows_filtered: int
    rows_quarantined: int
    files_quarantined: int
    output: str
    output_rows: int | None
    duration: float
    dashboard: str | None
    message: str
    batches: list[dict[str, Any]] = field(default_factory=list)
    work_area: str = ""
    #: When the run started (seconds since the epoch) and the parameters it recorded.
    started: float | None = None
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status != "failed"

    def to_dict(self) -> dict[str, Any]:
        """The run's summary as plain JSON-ready data (what ``dbatch run --json`` prints).

        Batch counts are ``batches_planned``, ``batches_committed``, ``batches_skipped``,
        ``batches_recovered``, ``batches_quarantined`` and ``batches_failed``.
        """
        d = {k: v for k, v in self.__dict__.items() if k not in ("batches", "started", "params")}
        for name in ("planned", "committed", "skipped", "recovered", "quarantined", "failed"):
            d[f"batches_{name}"] = d.pop(name)
        return d

    def batches_frame(self) -> Any:
        import pandas as pd

        return pd.DataFrame(self.batches)

    def quarantine(self) -> Any:
        """The rows and files this run's batches set aside, as a pandas DataFrame.

        Columns: ``source``, ``line`` (empty for a whole file), ``kind``, ``reason``,
        ``raw``, ``batch_id``, ``run_id``, and ``state`` (``committed``: kept aside from
        the published output; ``failed``: a batch refused for too many bad rows, whose
        rows are kept in the work area's ``rejected/`` folder).
        """
        import pandas as pd
        import pyarrow.parquet as pq

        mine = {b["batch_id"]: b.get("state") for b in self.batches}
        frames = []
        published = Path(self.work_area) / "quarantine.parquet"
        if self.work_area and published.exists():
            rows = pq.read_table(published).to_pandas()
            frames.append(rows[rows["batch_id"].isin(mine)].assign(state="committed"))
        for b in self.batches:
            kept = b.get("quarantine")
            if b.get("state") == "failed" and kept and Path(kept).exists():
                frames.append(pq.read_table(kept).to_pandas().assign(state="failed"))
        if not frames:
            columns = ["source", "line", "kind", "reason", "raw", "batch_id", "run_id", "state"]
            return pd.DataFrame(columns=columns)
        return pd.concat(frames, ignore_index=True)

    def errors(self) -> Any:
        """The batches that failed or were quarantined in this run, with their error."""
        import pandas as pd

        columns = ["batch_id", "state", "attempts", "error_class", "error_message"]
        rows = [
            {c: b.get(c) for c in columns}
            for b in self.batches
            if b.get("state") in ("failed", "quarantined")
        ]
        return pd.DataFrame(rows, columns=columns)

    def __repr__(self) -> str:
        lines = [
            f"dbatch run {self.run_id} of {self.job!r}: {self.status} in {self.duration:.1f} s",
            f"  batches: {self.planned} planned, {self.committed} committed, {self.skipped} already done"
            + (f" ({self.recovered} recovered)" if self.recovered else "")
            + f", {self.failed} failed"
            + (f", {self.quarantined} batches quarantined" if self.quarantined else ""),
            f"  rows:    {row_balance(vars(self))}",
        ]
        if self.rows_quarantined or self.files_quarantined:
            lines.append(f"  quarantined: {self._quarantine_text()}")
        if self.output:
            rows = f" ({self.output_rows:,} rows)" if self.output_rows is not None else ""
            lines.append(f"  output:  {self.output}{rows}")
        if self.message:
            lines.append(f"  note:    {self.message}")
        return "\n".join(lines)

    def _quarantine_text(self) -> str:
        share = (
            f" ({self.rows_quarantined / self.rows_in:.1%} of the rows in)" if self.rows_in else ""
        )
        parts = [f"{self.rows_quarantined:,} rows{share}"]
        if self.files_quarantined:
            parts.append(f"{self.files_quarantined:,} files")
        return (
            " and ".join(parts) + " set aside with their reason; `dbatch quarantine JOB` lists them"
        )

    @property
    def has_quarantine(self) -> bool:
        """Whether anything was set aside: rows, files or whole batches."""
        return bool(self.rows_quarantined or self.files_quarantined or self.quarantined)

    def _repr_html_(self) -> str:
        color = "#c0392b" if self.status == "failed" else "#1e8449"
        if self.status != "failed" and self.has_quarantine:
            color = "#d68910"  # done, but with rows or files set aside: not plain green
        rows = "".join(
            "<tr>"
            + "".join(f"<td>{html.escape(str(b.get(k, '')))}</td>" for k in BATCH_COLUMNS)
            + f"<td>{b.get('duration') or 0:.2f}</td></tr>"
            for b in self.batches[:50]
        )
        dash = (
            f' · <a href="{html.escape(self.dashboard)}" target="_blank">dashboard</a>'
            if self.dashboard
            else ""
        )
        aside = ""
        if self.rows_quarantined or self.files_quarantined:
            aside = f"<br><b>quarantined:</b> {html.escape(self._quarantine_text())}"
        return (
            f"<div><strong>dbatch run</strong> <code>{html.escape(self.run_id)}</code> of "
            f"<code>{html.escape(self.job)}</code>: <span style='color:{color}'><b>{self.status}</b></span> "
            f"in {self.duration:.1f} s{dash}<br>"
            f"{self.committed} committed, {self.skipped} already done, {self.failed} failed, "
            f"{self.quarantined} batches quarantined of {self.planned} batches"
            f" · rows {row_balance(vars(self))}{aside}"
            f"<br>output: <code>{html.escape(self.output)}</code>"
            + (f"<br><em>{html.escape(self.message)}</em>" if self.message else "")
            + "<details><summary>batches</summary><table><thead><tr><th>batch</th><th>state</th>"
            "<th>attempts</th><th>in</th><th>out</th><th>filtered</th><th>quarantined</th><th>s</th>"
            f"</tr></thead><tbody>{rows}</tbody></table></details></div>"
        )


_STATES = {
    EventKind.BATCH_STARTED: BatchState.RUNNING,
    EventKind.BATCH_RETRY: BatchState.RETRYING,
    EventKind.BATCH_COMMITTED: BatchState.COMMITTED,
    EventKind.BATCH_SKIPPED: BatchState.COMMITTED,
    EventKind.BATCH_QUARANTINED: BatchState.QUARANTINED,
    EventKind.BATCH_FAILED: BatchState.FAILED,
}


class RunSummary(RunListener):
    """A run listener that keeps the state of every batch and the totals."""

    def __init__(
        self, plan: Plan, run_id: str, output: str, work_area: str = "", window: str | None = None
    ):
        self.work_area = work_area
        self.window = window  # the batches' time window (ByWindow's freq), to label them
        self.plan = plan
        self.run_id = run_id
        self.output = output
        self.started = time.time()
        self.state: dict[str, str] = {}
        self.info = BatchInfos()  # a plain committed batch's line is kept as a tuple
        self.recovered = 0
        self.dashboard: str | None = None
        self.output_rows: int | None = None
        self.published = False
        self.params: dict[str, Any] = {}

    def on_run_started(self, event: Event) -> None:
        self.started = event.time
        self.params = dict(event.data.get("params") or {})

    def on_published(self, event: Event) -> None:
        self.published = True

    def on_batch_started(self, event: Event) -> None:
        self._batch(event)

    on_batch_retry = on_batch_committed = on_batch_skipped = on_batch_started
    on_batch_quarantined = on_batch_failed = on_batch_started

    def _batch(self, e: Event) -> None:
        assert e.batch_id is not None
        state = _STATES[e.kind]
        self.state[e.batch_id] = state
        info = self.info.open(e.batch_id)
        info.update(
            {k: v for k, v in e.data.items() if k not in ("traceback", "quarantined_files")}
        )
        skipped = e.kind is EventKind.BATCH_SKIPPED
        info["state"] = "already done" if skipped else str(state)
        info["attempts"] = e.data.get("attempt", info.get("attempts", 1))
        if skipped:
            info["skipped"] = True
        if e.data.get("recovered"):
            self.recovered += 1
        self.info.settle(e.batch_id)

    def _count(self, state: str) -> int:
        return sum(1 for s in self.state.values() if s == state)

    @property
    def failed(self) -> int:
        return self._count("failed")

    @property
    def publishable(self) -> bool:
        return any(s == "committed" for s in self.state.values())

    def rows_out_of(self, batch_id: str) -> int:
        return int(self.info.get(batch_id, {}).get("rows_out", 0))

    def totals(self) -> dict[str, int]:
        sums = dict.fromkeys((*ROW_COUNTS, "files_quarantined"), 0)
        for b, i in self.info.items():  # once over the lines: each is a dict made from a tuple
            if self.state.get(b) == "committed":
                for k in sums:
                    sums[k] += int(i.get(k) or 0)
        return sums

    def status(self) -> str:
        if self.failed or len(self.state) < len(self.plan):
            return "failed"
        skipped = sum(1 for i in self.info.values() if i.get("skipped"))
        if skipped == len(self.plan):
            return "nothing_to_do"
        if self._count("quarantined"):
            return "succeeded_with_quarantine"
        return "succeeded"

    def message(self, status: str) -> str:
        if status == "failed":
            return (
                f"{self.failed} batch(es) failed: {self._errors()}. Nothing new was published and "
                "committed batches are kept. Fix the cause, then run the same command again "
                "(or `dbatch resume`)."
            )
        if status == "nothing_to_do":
            return "every batch was already committed with the same inputs; no work done"
        if status == "succeeded_with_quarantine":
            return f"{self._count('quarantined')} batch(es) quarantined; see `dbatch status`"
        return ""

    def _errors(self, first: int = 3) -> str:
        """The first failed batches' errors, and how many more failed."""
        failed = [i for b, i in self.info.items() if self.state.get(b) == BatchState.FAILED]
        shown = [
            f"{i['batch_id']}: {str(i.get('error_message', ''))[:300]}" for i in failed[:first]
        ]
        more = f"; and {len(failed) - first} more (`dbatch status`)" if len(failed) > first else ""
        return "; ".join(shown) + more

    def manifest_data(self) -> dict[str, Any]:
        return {
            "job": self.plan.job,
            "batches": sorted(b for b, s in self.state.items() if s == "committed"),
            **self.totals(),
            "batch_stats": [
                {k: self.info[b.id].get(k) for k in _BATCH_STATS} | self._window_of(b)
                for b in self.plan
                if b.id in self.info
            ],
        }

    def _window_of(self, batch: Batch) -> dict[str, str]:
        """``{"window": "2026-11-01"}`` for a batch of a time window, else nothing."""
        times = [u.time for u in batch.units if u.time is not None]
        if self.window is None or not times:
            return {}
        from ..windows import window_label

        return {"window": window_label(min(times), self.window)}

    def finish_data(self, status: str) -> dict[str, Any]:
        skipped = sum(1 for i in self.info.values() if i.get("skipped"))
        return {
            "status": status,
            "committed": self._count("committed") - skipped,
            "skipped": skipped,
            "quarantined": self._count("quarantined"),
            "failed": self.failed,
            "output": self.output if self.published else "",
            "message": self.message(status),
            **self.totals(),
        }

    def result(self) -> RunResult:
        status = self.status()
        d = self.finish_data(status)
        order = {b.id: i for i, b in enumerate(self.plan)}
        return RunResult(
            run_id=self.run_id,
            job=self.plan.job,
            status=status,
            planned=len(self.plan),
            committed=d["committed"],
            skipped=d["skipped"],
            recovered=self.recovered,
            quarantined=d["quarantined"],
            failed=d["failed"],
            rows_in=d["rows_in"],
            rows_out=d["rows_out"],
            rows_filtered=d["rows_filtered"],
            rows_quarantined=d["rows_quarantined"],
            files_quarantined=d["files_quarantined"],
            output=self.output,
            output_rows=self.output_rows,
            duration=time.time() - self.started,
            dashboard=self.dashboard,
            message=d["message"],
            batches=sorted(self.info.values(), key=lambda i: order.get(i["batch_id"], 0)),
            work_area=self.work_area,
            started=self.started,
            params=self.params,
        )
