"""Partial aggregates per batch: decided by the optimizer from a sample, shown by explain, exact."""

from __future__ import annotations

import glob
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dbatch import Aggregate, ByCount, Derive, Files, Filter, Map, ParquetSink, Pipeline
from dbatch.compile import Partials
from dbatch.compile import partials as partials_pass
from dbatch.compile.partials import extrapolate
from dbatch.executors import LocalExecutor
from dbatch.tasks import BatchTask, process_batch, reduce_bucket, write_sorted

SCHEMA = {"g": "int64", "day": "string", "x": "float64", "status": "string"}
METRICS = {
    "total": "sum(x)",
    "n": "count(*)",
    "nx": "count(x)",
    "mean": "mean(x)",
    "lo": "min(x)",
    "hi": "max(x)",
}
BUCKETS = 3


def write_files(folder: Path, keys: int, files: int = 4, rows: int = 20_000) -> str:
    """``files`` Parquet files whose ``g`` takes ``keys`` values; some ``x`` null."""
    folder.mkdir(parents=True)
    for i in range(files):
        rng = np.random.default_rng(i)
        x = rng.normal(100, 30, rows)
        table = pa.table(
            {
                "g": rng.integers(0, keys, rows),
                "day": pa.array(rng.choice(["2026-01-01", "2026-01-02"], rows)),
                "x": pa.array(x, mask=rng.random(rows) < 0.05),
                "status": pa.array(rng.choice(["ok", "void"], rows, p=[0.8, 0.2])),
            }
        )
        pq.write_table(table, folder / f"part-{i:02d}.parquet")
    return str(folder / "*.parquet")


def pipeline(pattern: str, out: Path, steps=None) -> Pipeline:
    return Pipeline(
        Files(pattern, schema=SCHEMA),
        ParquetSink(str(out / "sink")),
        steps=steps if steps is not None else [Filter("status = 'ok'"), Derive({"y": "x * 2"})],
        aggregate=Aggregate(by=["g", "day"], metrics=METRICS, buckets=BUCKETS),
        batching=ByCount(2),
        name="partials",
        workdir=str(out / "work"),
    )


def expected(pattern: str) -> pa.Table:
    sql = f"""
        SELECT g, day, SUM(x) AS total, COUNT(*) AS n, COUNT(x) AS nx, AVG(x) AS mean,
               MIN(x) AS lo, MAX(x) AS hi
        FROM read_parquet('{pattern}') WHERE status = 'ok' GROUP BY g, day ORDER BY g, day"""
    return duckdb.sql(sql).to_arrow_table()


def assert_same(got: pa.Table, want: pa.Table) -> None:
    got = got.sort_by([("g", "ascending"), ("day", "ascending")])
    assert got.num_rows == want.num_rows
    for col in ("g", "day", "n", "nx"):
        assert got.column(col).to_pylist() == want.column(col).to_pylist(), col
    for col in ("total", "mean", "lo", "hi"):
        np.testing.assert_allclose(
            got.column(col).to_numpy(zero_copy_only=False),
            want.column(col).to_numpy(zero_copy_only=False),
            rtol=1e-9,
            atol=1e-9,
        )


def run_by_hand(p: Pipeline, partials: Partials, tmp: Path) -> tuple[pa.Table, list[bool]]:
    """Every batch and every bucket through the worker's functions, with ``partials`` imposed."""
    import dataclasses

    plan = p.plan()
    physical = dataclasses.replace(p.physical(plan=plan), partials=partials)
    staged, kinds = [], []
    (tmp / "staging").mkdir(parents=True, exist_ok=True)  # as the run makes it
    for batch in plan.batches:
        task = BatchTask(batch, "run1", str(tmp / "staging"), buckets=BUCKETS)
        result = process_batch(physical, task)
        staged.append(result.staging)
        kinds.append(result.extra["preaggregated"])
    parts = [reduce_bucket(physical, k, staged, str(tmp / "reduce")) for k in range(BUCKETS)]
    if physical.aggregate.sort:  # the buckets' rows, then one output in key order
        parts = [write_sorted(physical, [part["staging"] for part in parts], str(tmp / "sorted"))]
    files = [
        f for part in parts for f in glob.glob(f"{part['staging']}/**/*.parquet", recursive=True)
    ]
    return pa.concat_tables(pq.read_table(f) for f in files), kinds


def test_few_groups_per_batch_make_partial_aggregates_and_explain_says_so(tmp_path):
    pattern = write_files(tmp_path / "in", keys=40)
    p = pipeline(pattern, tmp_path)
    physical = p.physical(plan=p.plan())
    assert physical.partials is Partials.PRE
    text = p.explain()
    assert "partials partial aggregates per batch" in text
    assert "groups in" in text and "rows per batch" in text  # the estimate behind it


def test_many_groups_per_batch_keep_raw_rows(tmp_path):
    pattern = write_files(tmp_path / "in", keys=10_000_000)
    p = pipeline(pattern, tmp_path)
    physical = p.physical(plan=p.plan())
    assert physical.partials is Partials.RAW
    assert "raw rows per batch" in physical.explain()
    _, kinds = run_by_hand(p, physical.partials, tmp_path / "run")
    assert kinds == [False, False]  # the plan's decision, not each batch's own


@pytest.mark.parametrize("keys", [40, 5_000])
def test_partial_aggregates_and_raw_rows_give_the_same_result(tmp_path, keys):
    pattern = write_files(tmp_path / "in", keys=keys)
    p = pipeline(pattern, tmp_path)
    pre, pre_kinds = run_by_hand(p, Partials.PRE, tmp_path / "pre")
    raw, raw_kinds = run_by_hand(p, Partials.RAW, tmp_path / "raw")
    assert pre_kinds == [True, True] and raw_kinds == [False, False]
    want = expected(pattern)
    assert_same(pre, want)
    assert_same(raw, want)


def test_a_run_with_partial_aggregates_is_exact(tmp_path):
    pattern = write_files(tmp_path / "in", keys=40)
    p = pipeline(pattern, tmp_path)
    result = p.run(executor=LocalExecutor(), progress=False)
    assert result.status == "succeeded", result.message
    batches = sorted((tmp_path / "work" / "partials" / "batches").iterdir())
    import json

    kinds = [
        json.loads((d / "_result.json").read_text())["extra"]["preaggregated"] for d in batches
    ]
    assert kinds and all(kinds)
    assert_same(pq.read_table(str(tmp_path / "sink")), expected(pattern))


def test_the_threshold_is_the_decision(tmp_path, monkeypatch):
    pattern = write_files(tmp_path / "in", keys=5_000)  # about 0.4 groups per row per batch
    p = pipeline(pattern, tmp_path)
    assert p.physical(plan=p.plan()).partials is Partials.PRE
    monkeypatch.setattr(partials_pass, "SHRINK", 0.2)
    assert p.physical(plan=p.plan()).partials is Partials.RAW


def test_without_a_cheap_sample_each_batch_decides(tmp_path):
    pattern = write_files(tmp_path / "in", keys=40)
    p = pipeline(pattern, tmp_path, steps=[Map(lambda df: df)])
    physical = p.physical(plan=p.plan())
    assert physical.partials is Partials.PER_BATCH
    assert "a step that is not SQL" in physical.explain()
    assert physical.partials.preaggregate is None
    assert p.physical().partials is Partials.PER_BATCH  # no plan given: nothing sampled
    assert p.physical(aggregate=False).partials is Partials.NONE


def test_csv_is_not_loaded_on_the_client_to_decide(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.csv").write_text("g,day,x,status\n1,2026-01-01,1.5,ok\n1,2026-01-01,2.5,ok\n")
    p = pipeline(str(folder / "*.csv"), tmp_path)
    physical = p.physical(plan=p.plan())
    assert physical.partials is Partials.PER_BATCH
    assert "loaded" in physical.partials_note


def test_extrapolation_of_distinct_keys():
    assert extrapolate(1000, 10, 8000) == pytest.approx(10)
    assert extrapolate(1000, 1000, 8000) == 8000
    # 100,000 keys drawn 250,000 times: about 91,800 distinct; 2 M draws: nearly all.
    rng = np.random.default_rng(0)
    keys = rng.integers(0, 100_000, 2_000_000)
    seen = len(np.unique(keys[:250_000]))
    assert extrapolate(250_000, seen, 2_000_000) == pytest.approx(len(np.unique(keys)), rel=0.01)
    assert extrapolate(0, 0, 10) == 0.0


def test_a_run_samples_only_when_batches_run(tmp_path, monkeypatch):
    pattern = write_files(tmp_path / "in", keys=40)
    p = pipeline(pattern, tmp_path)
    calls = []
    real = partials_pass.estimate_groups

    def counted(plan, batch, *shared):
        calls.append(batch.id)
        return real(plan, batch, *shared)

    monkeypatch.setattr(partials_pass, "estimate_groups", counted)
    assert p.run(executor=LocalExecutor(), progress=False).status == "succeeded"
    assert len(calls) == 1  # the first batch, sampled once
    again = p.run(executor=LocalExecutor(), progress=False)
    assert again.status == "nothing_to_do" and len(calls) == 1  # nothing ran: nothing sampled
