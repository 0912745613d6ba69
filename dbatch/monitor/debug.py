"""Debugging one batch in this process: what each step made of it, and where it broke.

``Pipeline.debug(batch_id)`` reads the batch's inputs here and applies the steps
one at a time (no fusion, no cluster, nothing written), keeping each step's
output, counts and set-aside rows; a step that raises ends the walk with its
error and traceback, so a notebook shows exactly which step broke on which data.
"""

from __future__ import annotations

import html
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..arrow import count_rows
from ..context import BatchContext
from ..core import BadInputMode, Batch, row_balance
from ..protocols import Dimensioned, Source, Step

__all__ = ["DebugResult", "StepTrace", "debug_batch"]


@dataclass
class StepTrace:
    """One step applied to the batch: its output (or error) and what it counted."""

    name: str
    rows_in: int
    output: Any = None
    rows_out: int = 0
    filtered: int = 0
    quarantined: int = 0
    seconds: float = 0.0
    error: BaseException | None = None
    traceback: str = ""

    def head(self, n: int = 5) -> Any:
        """The first rows of the output, as a DataFrame (an xarray Dataset as it is)."""
        import pyarrow as pa

        if isinstance(self.output, pa.Table):
            return self.output.slice(0, n).to_pandas()
        return self.output


@dataclass
class DebugResult:
    """What happened to one batch, step by step.

    ``steps[0]`` is the read itself; ``failed`` is the first step that raised (or
    None); ``quarantine`` holds every row set aside on the way.
    """

    batch: Batch
    steps: list[StepTrace] = field(default_factory=list)
    quarantine: Any = None
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def failed(self) -> StepTrace | None:
        return next((s for s in self.steps if s.error is not None), None)

    @property
    def output(self) -> Any:
        return self.steps[-1].output if self.steps and self.failed is None else None

    def __repr__(self) -> str:
        lines = [f"dbatch debug of batch {self.batch.id} ({len(self.batch.units)} units)"]
        for s in self.steps:
            if s.error is not None:
                lines.append(f"  {s.name:<28} FAILED: {type(s.error).__name__}: {s.error}")
                break
            lines.append(
                f"  {s.name:<28} {s.rows_in:>10,} -> {s.rows_out:>10,} rows"
                f"  ({s.filtered:,} filtered, {s.quarantined:,} quarantined, {s.seconds:.2f} s)"
            )
        lines.append(f"  rows: {row_balance(self.counts)}")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        rows = []
        for s in self.steps:
            if s.error is not None:
                rows.append(
                    f"<tr style='color:#c0392b'><td>{html.escape(s.name)}</td><td colspan=5>"
                    f"<b>{html.escape(type(s.error).__name__)}</b>: {html.escape(str(s.error))}"
                    f"<details><summary>traceback</summary><pre>{html.escape(s.traceback)}</pre>"
                    "</details></td></tr>"
                )
                break
            rows.append(
                f"<tr><td>{html.escape(s.name)}</td><td>{s.rows_in:,}</td><td>{s.rows_out:,}</td>"
                f"<td>{s.filtered:,}</td><td>{s.quarantined:,}</td><td>{s.seconds:.2f}</td></tr>"
            )
        return (
            f"<div><strong>dbatch debug</strong> of batch <code>{html.escape(self.batch.id)}</code>"
            "<table><thead><tr><th>step</th><th>rows in</th><th>rows out</th><th>filtered</th>"
            f"<th>quarantined</th><th>s</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
            f"rows: {html.escape(row_balance(self.counts))}</div>"
        )


def debug_batch(
    source: Source, steps: Sequence[Step], batch: Batch, mode: BadInputMode
) -> DebugResult:
    """Read ``batch`` and apply ``steps`` one at a time in this process; keep every stage."""
    ctx = BatchContext(batch=batch, run_id="debug", mode=mode)
    dim = source.dim if isinstance(source, Dimensioned) else None
    result = DebugResult(batch)
    data = _trace(result, f"read ({type(source).__name__})", 0, ctx, dim, source.load, batch, ctx)
    for step in steps:
        if data is None:
            break
        rows = count_rows(data, dim)
        data = _trace(result, _name(step), rows, ctx, dim, step.apply, data, ctx)
    result.quarantine = ctx.quarantined_rows().to_pandas()
    result.counts = {
        "rows_in": ctx.rows_in,
        "rows_out": result.steps[-1].rows_out if result.failed is None else 0,
        "rows_filtered": ctx.rows_filtered,
        "rows_quarantined": ctx.rows_quarantined,
    }
    return result


def _trace(
    result: DebugResult, name: str, rows_in: int, ctx: BatchContext, dim: str | None, fn, *args
) -> Any:
    before = (ctx.rows_filtered, ctx.rows_quarantined)
    started = time.perf_counter()
    trace = StepTrace(name, rows_in)
    result.steps.append(trace)
    try:
        out = fn(*args)
    except Exception as e:  # noqa: BLE001 - the point of debugging: show the step that raised
        trace.error, trace.traceback = e, "".join(traceback.format_exception(e))
        return None
    trace.seconds = time.perf_counter() - started
    trace.output, trace.rows_out = out, count_rows(out, dim)
    if not rows_in:
        trace.rows_in = ctx.rows_in
    trace.filtered = ctx.rows_filtered - before[0]
    trace.quarantined = ctx.rows_quarantined - before[1]
    return out


def _name(step: Step) -> str:
    text = repr(step)
    return text if len(text) <= 28 else text[:25] + "..."
