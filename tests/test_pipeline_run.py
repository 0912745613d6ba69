"""End to end on a real LocalCluster: plan, preview, run, publish, resume."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

import dbatch
from dbatch import Aggregate, ByCount, Derive, Files, Filter, Map, ParquetSink, Pipeline


def write_csvs(root: Path, n_files: int = 6, rows: int = 50) -> list[Path]:
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for f in range(n_files):
        lines = ["id,account,amount,status"]
        for i in range(rows):
            lines.append(f"{f}-{i},A{i % 7},{i + f},{'ok' if i % 5 else 'void'}")
        p = root / f"part-{f:02d}.csv"
        p.write_text("\n".join(lines) + "\n")
        paths.append(p)
    return paths


def make_pipeline(tmp_path: Path, **kw) -> Pipeline:
    return Pipeline(
        source=Files(
            str(tmp_path / "in" / "*.csv"),
            schema={"id": "string", "account": "string", "amount": "int64", "status": "string"},
        ),
        sink=ParquetSink(str(tmp_path / "out" / "result")),
        steps=[Filter("status = 'ok'"), Derive({"double": "amount * 2"})],
        batching=ByCount(2),
        name="t",
        workdir=str(tmp_path / "work"),
        **kw,
    )


def test_plan_is_plain_data_without_a_cluster(tmp_path):
    write_csvs(tmp_path / "in")
    plan = make_pipeline(tmp_path).plan()
    assert len(plan) == 3
    assert all(len(b.units) == 2 for b in plan)
    assert len({b.id for b in plan}) == 3
    # Same inputs, same ids and fingerprints.
    again = make_pipeline(tmp_path).plan()
    assert [(b.id, b.fingerprint) for b in plan] == [(b.id, b.fingerprint) for b in again]
    assert "3 batches" in plan._repr_html_()
    assert list(plan.to_frame().columns)[:3] == ["batch_id", "units", "bytes"]


def test_preview_runs_one_batch_in_process(tmp_path):
    write_csvs(tmp_path / "in")
    frame = make_pipeline(tmp_path).preview()
    assert len(frame) == 80  # 2 files x 50 rows, 10 'void' filtered from each
    assert (frame["double"] == frame["amount"] * 2).all()
    assert frame.attrs["counts"]["rows_filtered"] == 20


def test_run_commits_every_batch_and_publishes_once(tmp_path, client):
    write_csvs(tmp_path / "in")
    result = make_pipeline(tmp_path).run(client=client)
    assert result.status == "succeeded", result
    assert result.committed == 3 and result.rows_in == 300 and result.rows_out == 240
    assert result.rows_in == result.rows_out + result.rows_filtered + result.rows_quarantined
    out = tmp_path / "out" / "result"
    assert out.is_symlink() and (out / "_SUCCESS").exists()
    frame = pd.read_parquet(out)
    assert len(frame) == 240 and frame["id"].is_unique
    assert len(list(out.glob("part-*.parquet"))) == 3


def test_rerun_does_nothing_and_changed_input_reruns_only_its_batch(tmp_path, client):
    files = write_csvs(tmp_path / "in")
    p = make_pipeline(tmp_path)
    first = p.run(client=client)
    assert first.committed == 3
    again = p.run(client=client)
    assert again.status == "nothing_to_do" and again.committed == 0 and again.skipped == 3
    with open(files[0], "a") as f:
        f.write("0-new,A1,5,ok\n")
    os.utime(files[0], (1e9, 1e9))
    third = p.run(client=client)
    assert third.committed == 1 and third.skipped == 2
    assert len(pd.read_parquet(tmp_path / "out" / "result")) == 241


def test_aggregate_across_batches_matches_pandas(tmp_path, client):
    write_csvs(tmp_path / "in")
    p = make_pipeline(
        tmp_path,
        aggregate=Aggregate(
            by=["account"],
            metrics={
                "total": "sum(amount)",
                "n": "count(*)",
                "avg": "mean(amount)",
                "lo": "min(amount)",
            },
        ),
    )
    result = p.run(client=client)
    assert result.ok, result
    got = pd.read_parquet(tmp_path / "out" / "result").sort_values("account").reset_index(drop=True)
    raw = pd.concat(pd.read_csv(f) for f in sorted((tmp_path / "in").glob("*.csv")))
    raw = raw[raw.status == "ok"]
    want = (
        raw.groupby("account")
        .agg(
            total=("amount", "sum"),
            n=("amount", "size"),
            avg=("amount", "mean"),
            lo=("amount", "min"),
        )
        .reset_index()
    )
    assert got["account"].tolist() == want["account"].tolist()
    assert got["total"].tolist() == pytest.approx(want["total"].tolist())
    assert got["n"].tolist() == want["n"].tolist()
    assert got["avg"].tolist() == pytest.approx(want["avg"].tolist())
    assert got["lo"].tolist() == want["lo"].tolist()


def test_ledger_frames_for_notebooks(tmp_path, client):
    write_csvs(tmp_path / "in")
    p = make_pipeline(tmp_path)
    p.run(client=client)
    ledger = dbatch.Ledger(p.ledger_url())
    runs = ledger.runs_frame("t")
    batches = ledger.batches_frame("t")
    ledger.close()
    assert runs["status"].tolist() == ["succeeded"]
    assert sorted(batches["state"].unique()) == ["committed"]
    assert batches["rows_in"].sum() == 300


def test_an_aggregate_batch_has_no_checksum_rather_than_the_digest_of_nothing(tmp_path, client):
    write_csvs(tmp_path / "in")
    agg = Aggregate(by=["account"], metrics={"n": "count(*)"}, buckets=3)
    p = make_pipeline(tmp_path, aggregate=agg)
    assert p.run(client=client).ok
    ledger = dbatch.Ledger(p.ledger_url())
    frame = ledger.batches_frame("t").set_index("batch_id")
    ledger.close()
    assert len(frame) == len(p.plan()) and frame["state"].eq("committed").all()
    # Bucket files stay in the work area: no checksum, never the SHA-256 of b"".
    assert frame["checksum"].isna().all(), frame["checksum"].tolist()


def test_a_batch_that_stages_no_file_has_no_checksum(tmp_path):
    import hashlib

    from dbatch.tasks import _checksum

    (tmp_path / "_result.json").write_text("{}")
    assert _checksum({"files": [], "rows": 0}, tmp_path) is None
    assert _checksum({"buckets": 2}, tmp_path) is None  # an aggregate's bucket files
    listed = {"files": [{"path": "a", "sha256": "ab"}, {"path": "b", "sha256": "cd"}]}
    assert _checksum(listed, tmp_path) == hashlib.sha256(b"abcd").hexdigest()[:32]


def _output_files(folder: Path) -> dict[str, bytes]:
    return {
        str(f.relative_to(folder)): f.read_bytes()
        for f in sorted(folder.rglob("*"))
        if f.is_file() and not f.name.startswith("_")
    }


@pytest.mark.parametrize(
    ("batches", "size", "expected"),
    [
        (3, 10_000, 1),  # a few small files: one reduce task
        (3, 40 * 2**20, 3),  # no more than one per 16 MiB of input
        (1, 300 * 2**20, 4),  # a large single batch still reduces in parallel
        (8, 300 * 2**20, 8),  # one per batch
        (1000, 40 * 2**20, 3),  # many tiny batches
        (1, 0, 4),  # a source that does not know its sizes is not held back
        (100, 2**30, 32),
    ],
)
def test_the_default_bucket_count_follows_the_planned_input(tmp_path, batches, size, expected):
    from dbatch.workarea import WorkArea

    work = WorkArea(tmp_path / "work")
    assert work.bucket_count(None, batches, size) == expected
    # Kept for the job, whatever the next runs plan; a fixed count wins.
    assert work.bucket_count(None, 50, 2**32) == expected
    assert work.bucket_count(6, batches, size) == 6


def test_the_aggregate_output_does_not_depend_on_the_cluster(tmp_path):
    from distributed import Client, LocalCluster

    write_csvs(tmp_path / "in", n_files=6, rows=400)
    outputs = {}
    for workers in (1, 2, 4):
        root = tmp_path / f"w{workers}"
        p = make_pipeline(
            root,
            aggregate=Aggregate(by=["id"], metrics={"total": "sum(amount)"}, sort=False),
        ).replace(source=make_pipeline(tmp_path).source)
        with (
            LocalCluster(
                n_workers=workers,
                threads_per_worker=1,
                processes=True,
                host="127.0.0.1",
                dashboard_address=None,
            ) as cluster,
            Client(cluster) as client,
        ):
            assert p.run(client=client).ok
        outputs[workers] = _output_files(root / "out" / "result")
    assert len(outputs[1]) == 1  # one file per bucket: one bucket for a small input
    assert outputs[1] == outputs[2] == outputs[4]


def test_a_sorted_aggregate_writes_the_whole_output_in_key_order(tmp_path, client):
    import pyarrow.parquet as pq

    write_csvs(tmp_path / "in", n_files=6, rows=300)
    agg = Aggregate(by=["account", "id"], metrics={"total": "sum(amount)"}, buckets=5)
    p = make_pipeline(tmp_path, aggregate=agg)
    assert "one task writes the buckets' rows in key order" in p.explain()
    assert p.run(client=client).ok
    out = tmp_path / "out" / "result"
    files = sorted(out.glob("*.parquet"))
    rows = [r for f in files for r in pq.read_table(f).select(["account", "id"]).to_pylist()]
    keys = [(r["account"], r["id"]) for r in rows]
    assert len(keys) == 6 * 240 and keys == sorted(keys)
    agg = Aggregate(by=["account", "id"], metrics={"total": "sum(amount)"}, buckets=5, sort=False)
    unsorted = make_pipeline(tmp_path / "u", aggregate=agg).replace(source=p.source)
    assert unsorted.run(client=client).ok
    parts = sorted((tmp_path / "u" / "out" / "result").glob("*.parquet"))
    assert len(parts) == 5  # one part per bucket, each in no particular order


def test_finished_batches_are_read_from_the_work_area_not_fetched(tmp_path, client, monkeypatch):
    """A finished task's result is the _result.json it staged: no round trip to its worker."""
    from dbatch.executors.dask import DaskExecutor

    write_csvs(tmp_path / "in")
    asked: list[str] = []
    fetched = DaskExecutor.outcome

    def outcome(self, handle):
        got = fetched(self, handle)
        if got.result is not None:
            asked.append(handle.task.batch.id)
        return got

    monkeypatch.setattr(DaskExecutor, "outcome", outcome)
    monkeypatch.setattr(type(client), "gather", lambda *a, **k: pytest.fail("gathered"))
    result = make_pipeline(tmp_path).run(client=client)
    assert result.status == "succeeded" and result.committed == 3, result
    assert asked == []
    assert len(pd.read_parquet(tmp_path / "out" / "result")) == 6 * 40


def test_staged_results_take_only_the_finished_attempt(tmp_path):
    import json

    from dbatch.core import BatchResult
    from dbatch.workarea import RESULT_FILE, staged_results, staging_name

    def stage(batch_id: str, attempt: int, text: str | None = None) -> Path:
        folder = tmp_path / staging_name(batch_id, attempt)
        folder.mkdir()
        result = BatchResult(batch_id, "f", staging=f"/elsewhere/{folder.name}", rows_out=attempt)
        (folder / RESULT_FILE).write_text(
            text if text is not None else json.dumps(result.to_dict())
        )
        return folder

    stage("b-1", 1)  # an earlier attempt's folder
    second = stage("b-1", 2)
    stage("b-2", 1, text='{"batch_id": "b-2", "finge')  # still being written
    (tmp_path / "b-3.rejected-0123456789ab").mkdir()  # a refused attempt keeps its quarantine
    found = staged_results(tmp_path, [("b-1", 2), ("b-2", 1), ("b-3", 1), ("b-4", 1)])
    assert list(found) == [("b-1", 2)]
    assert found[("b-1", 2)].rows_out == 2
    assert found[("b-1", 2)].staging == str(second)  # where this process sees it
    assert staged_results(tmp_path / "missing", [("b-1", 1)]) == {}


def test_steps_are_checked_on_a_worker_only_when_there_is_something_to_check(tmp_path, client):
    from distributed import get_task_stream

    write_csvs(tmp_path / "in", n_files=4, rows=10)
    keys = {}
    python_first = [Map(lambda t: t), Filter("status = 'ok'")]  # checked when they run
    for name, steps in (("checked", None), ("plain", []), ("python first", python_first)):
        p = make_pipeline(tmp_path / name).replace(
            source=make_pipeline(tmp_path).source, **({} if steps is None else {"steps": steps})
        )
        with get_task_stream(client) as stream:
            assert p.run(client=client).ok
        keys[name] = [str(t["key"]) for t in stream.data]
    assert any("preflight" in k for k in keys["checked"])
    for name in ("plain", "python first"):
        assert not any("preflight" in k for k in keys[name]), name
        assert any("-batch" in k for k in keys[name]), name


def test_the_same_definition_over_the_same_first_batch_is_checked_once_per_process(
    tmp_path, client
):
    from distributed import get_task_stream

    from dbatch.errors import JobSpecError

    write_csvs(tmp_path / "in", n_files=4, rows=10)
    p = make_pipeline(
        tmp_path, aggregate=Aggregate(by="account", metrics={"n": "count(*)"}, sort=True)
    )

    def run(pipeline, **kw):
        with get_task_stream(client) as stream:
            result = pipeline.run(client=client, **kw)
        checks = sum("preflight" in str(t["key"]) for t in stream.data)
        return checks, result

    checks, first = run(p)
    assert checks == 1 and first.ok
    out = pd.read_parquet(tmp_path / "out" / "result")
    checks, again = run(p, force=True)  # every batch again: the verdict is remembered
    assert checks == 0 and again.ok and again.committed == first.committed == 2
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "out" / "result"), out)
    write_csvs(tmp_path / "in", n_files=4, rows=12)  # the first batch changed: checked again
    checks, changed = run(p)
    assert checks == 1 and changed.ok
    # A step that does not compile is not remembered: each run is stopped by it.
    broken = p.replace(steps=[Filter("no_such_column = 1")])
    for _ in range(2):
        with get_task_stream(client) as stream, pytest.raises(JobSpecError, match="no_such_column"):
            broken.run(client=client)
        assert sum("preflight" in str(t["key"]) for t in stream.data) == 1
