"""What a run tells about itself: task names on the dashboard, one span, log lines, the
quarantine and errors of a result, and debugging one batch step by step."""

from __future__ import annotations

import logging

import pyarrow as pa
import pytest

from dbatch import Aggregate, ByCount, Derive, Enrich, Files, Filter, Map, ParquetSink, Pipeline
from dbatch.executors import LocalExecutor
from dbatch.retry import RetryPolicy
from dbatch.testing import RaiseOn, SeededFaults


def write_inputs(folder, n=4, bad=False):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        rows = [f"{i}-{k},{k % 3},{'x' if bad and k == 0 else k * 1.5}" for k in range(10)]
        (folder / f"in-{i}.csv").write_text("id,g,x\n" + "\n".join(rows) + "\n")


def pipeline(tmp_path, **kw):
    return Pipeline(
        Files(
            str(tmp_path / "in" / "*.csv"), schema={"id": "string", "g": "int64", "x": "float64"}
        ),
        ParquetSink(str(tmp_path / "out")),
        batching=ByCount(1),
        name="observed",
        workdir=str(tmp_path / "work"),
        **kw,
    )


def test_the_dashboard_shows_batches_reduces_and_shared_objects_as_dbatch_tasks(tmp_path, client):
    write_inputs(tmp_path / "in")
    lookup = pa.table({"g": [0, 1, 2], "label": ["a", "b", "c"]})
    p = pipeline(
        tmp_path,
        steps=[Enrich(lookup, on="g")],
        aggregate=Aggregate(by="label", metrics={"n": "count(*)"}),
    )

    def groups(dask_scheduler):
        return {name: dict(g.states) for name, g in dask_scheduler.task_groups.items()}

    seen = {}

    def watch(event):
        if event.kind == "published":
            seen.update(client.run_on_scheduler(groups))

    result = p.run(client=client, listeners=[watch])
    assert result.ok
    batch = seen["dbatch-observed-batch"]
    assert batch.get("memory", 0) == 4  # done batches are counted, not released at once
    assert "dbatch-observed-reduce" in seen
    assert not {"Table", "PhysicalPlan", "Pipeline"} & set(seen)  # no groups named after types
    assert any(name.startswith("dbatch-observed-shared") for name in seen)

    def spans(dask_scheduler):
        ext = dask_scheduler.extensions["spans"]
        return [s.name for s in ext.spans.values()]

    assert ("dbatch observed " + result.run_id,) in client.run_on_scheduler(spans)


def test_a_handled_retry_is_one_warning_not_a_worker_traceback(tmp_path, client, caplog):
    write_inputs(tmp_path / "in")
    faults = SeededFaults(seed=4, rate=1.0, max_failures=1, where=("before",))
    with caplog.at_level(logging.INFO, logger="dbatch"):
        result = pipeline(tmp_path).run(
            client=client, fault=faults, retry=RetryPolicy(attempts=3, base=0.0, cap=0.0)
        )
    assert result.status == "succeeded"
    retries = [r for r in caplog.records if "retrying" in r.getMessage()]
    assert len(retries) == 4 and all(r.levelno == logging.WARNING for r in retries)
    assert "injected" in retries[0].getMessage()  # the reason
    committed = [r for r in caplog.records if "committed:" in r.getMessage()]
    assert len(committed) == 4 and "in =" in committed[0].getMessage()
    worker_logs = "\n".join(
        line for lines in client.get_worker_logs().values() for _, line in lines
    )
    assert "Compute Failed" not in worker_logs


def test_a_failed_run_names_each_error_and_returns_the_failed_batches(tmp_path, client):
    write_inputs(tmp_path / "in", bad=True)
    p = pipeline(tmp_path)
    bad = p.plan()[1].id
    result = p.run(client=client, fault=RaiseOn((bad,), message="the upstream file is broken"))
    assert result.status == "failed"
    assert bad in result.message and "the upstream file is broken" in result.message
    errors = result.errors()
    assert errors["batch_id"].tolist() == [bad] and errors["state"].tolist() == ["failed"]
    quarantine = result.quarantine()
    # Committed batches' bad rows are there even though this run published nothing.
    assert set(quarantine["kind"]) <= {"type"}


def test_the_quarantine_of_a_run_as_a_dataframe(tmp_path):
    write_inputs(tmp_path / "in", bad=True)
    result = pipeline(tmp_path).run(executor=LocalExecutor())
    rows = result.quarantine()
    assert len(rows) == 4 and set(rows["kind"]) == {"type"} and set(rows["state"]) == {"committed"}
    assert rows["line"].tolist() == [2, 2, 2, 2]
    assert "4 rows" in repr(result) and "quarantined" in repr(result)


def test_debug_shows_each_step_and_where_it_broke(tmp_path):
    write_inputs(tmp_path / "in", bad=True)

    def boom(df):
        if (df.x > 10).any():
            raise ValueError("x too large for this model")
        return df

    p = pipeline(tmp_path, steps=[Filter("g > 0"), Derive({"y": "x * 2"}), Map(boom)])
    batch = p.plan()[0]
    trace = p.debug(batch.id)
    names = [s.name for s in trace.steps]
    assert names[0].startswith("read") and len(names) == 4
    read, filt, derive, mapped = trace.steps
    assert read.rows_out == 9 and read.quarantined == 1  # one bad row of ten
    assert filt.rows_in == 9 and filt.filtered == 3
    assert "y" in derive.head().columns
    assert trace.failed is mapped and "too large" in str(mapped.error)
    assert "ValueError" in mapped.traceback
    assert "FAILED" in repr(trace) and "too large" in trace._repr_html_()
    ok = pipeline(tmp_path, steps=[Filter("g > 0")]).debug(0)
    assert ok.failed is None and ok.output.num_rows == 6
    with pytest.raises(KeyError, match="no batch 'b-nope'"):
        p.debug("b-nope")


def test_the_notebook_widget_shows_the_batch_grid_and_is_not_green_with_quarantined_rows():
    from dbatch.core import Batch, Event, Plan, Unit
    from dbatch.monitor.progress import STATE_COLOURS, NotebookProgress, batch_grid

    batches = tuple(Batch.from_units([Unit(f"u{i}")], index=i) for i in range(3))
    widget = NotebookProgress(Plan("grid", batches))

    def ev(kind, b=None, **data):
        return Event(kind, "r1", "grid", b, data)

    widget(ev("batch_started", batches[0].id))
    widget(ev("batch_committed", batches[0].id, rows_in=10, rows_quarantined=2))
    widget(ev("batch_committed", batches[1].id, rows_in=10))
    widget(ev("batch_skipped", batches[2].id))
    widget(ev("finished", status="succeeded"))
    cells = widget.grid.value.split("</div>")[0]
    assert (
        cells.count(STATE_COLOURS["committed"]) == 2 and cells.count(STATE_COLOURS["skipped"]) == 1
    )
    assert widget.bar.bar_style == "warning"  # succeeded, but rows were set aside
    assert "2 rows quarantined" in widget.label.value
    many = batch_grid({f"b{i}": "committed" for i in range(10_000)} | {"b5000": "failed"})
    assert many.count("<span title") <= 600 and STATE_COLOURS["failed"] in many.split("</div>")[0]
