"""The predict step: scoring, quarantine of unscorable rows, one load per worker, model identity."""

from __future__ import annotations

import importlib
import json
import os
import sys
import textwrap
import time
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from conftest import unavailable
from sklearn.linear_model import LinearRegression, LogisticRegression

from dbatch import ByCount, Files, ParquetSink, Pipeline, Predict
from dbatch.context import BatchContext
from dbatch.core import Batch
from dbatch.steps.predict import ModelError, auto_batch_rows, model_cache

FEATURES = ["a", "b", "c"]

# Models and loaders the workers must import: written to a module that is uploaded to them.
TESTLIB = '''
import os

import numpy as np

from dbatch.errors import TransientError


class SumModel:
    """predict = a + 2b + 3c, with an offset."""

    def __init__(self, offset=0.0):
        self.offset = offset

    def predict(self, X):
        X = np.asarray(X, dtype=float)
        return X @ np.array([1.0, 2.0, 3.0]) + self.offset


def load_sum_model(log_path):
    with open(log_path, "a") as f:
        f.write(f"{os.getpid()}\\n")
    return SumModel(offset=100.0)


class Touchy:
    """Raises on any chunk that holds a row with a > 100, like a model with a range check."""

    def predict(self, X):
        X = np.asarray(X, dtype=float)
        if (X[:, 0] > 100).any():
            raise ValueError("a is out of the trained range")
        return X[:, 0] * 2


class Broken:
    def predict(self, X):
        raise RuntimeError("weights are corrupt")


class CountingModel:
    """Big (a payload of weights) and logs every pickle and unpickle with the process id."""

    def __init__(self, log, megabytes):
        self.log = log
        self.weights = np.ones(megabytes * 2**20 // 8)

    def predict(self, X):
        return np.asarray(X, dtype=float).sum(axis=1) + self.weights[0]

    def __reduce__(self):
        with open(self.log, "a") as f:
            f.write(f"pickle {os.getpid()}\\n")
        return (_rebuild, (self.log, self.weights))


def _rebuild(log, weights):
    with open(log, "a") as f:
        f.write(f"unpickle {os.getpid()}\\n")
    obj = CountingModel.__new__(CountingModel)
    obj.log, obj.weights = log, weights
    return obj


def blip_once(batch, attempt):
    if batch.index == 0 and attempt == 1:
        raise TransientError("connection reset while reading (injected)")
'''


@pytest.fixture(scope="module")
def testlib(tmp_path_factory, client):
    """The helper module, importable here and on every worker of the session cluster."""
    root = tmp_path_factory.mktemp("predict_lib")
    path = root / "dbatch_predict_testlib.py"
    path.write_text(textwrap.dedent(TESTLIB))
    sys.path.insert(0, str(root))
    try:
        client.upload_file(str(path))
        yield importlib.import_module("dbatch_predict_testlib")
    finally:
        sys.path.remove(str(root))


def write_inputs(root: Path, n_files: int = 6, rows: int = 200, seed: int = 0) -> pd.DataFrame:
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    frames = []
    for f in range(n_files):
        df = pd.DataFrame(
            {
                "id": [f"{f}-{i}" for i in range(rows)],
                "a": rng.normal(size=rows),
                "b": rng.normal(size=rows),
                "c": rng.normal(size=rows),
            }
        )
        df.to_parquet(root / f"part-{f:02d}.parquet", index=False)
        frames.append(df)
    return pd.concat(frames, ignore_index=True)


def fit_regression(seed: int) -> LinearRegression:
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(rng.normal(size=(500, 3)), columns=FEATURES)
    y = X.a * (1 + seed) - X.b + 0.5 * X.c
    return LinearRegression().fit(X, y)


def make_pipeline(tmp_path: Path, step: Predict, name: str = "score", **kw) -> Pipeline:
    return Pipeline(
        source=Files(str(tmp_path / "in" / "*.parquet")),
        sink=ParquetSink(str(tmp_path / "out" / name)),
        steps=[step],
        batching=ByCount(1),
        name=name,
        workdir=str(tmp_path / "work"),
        **kw,
    )


def apply(step: Predict, table: pa.Table) -> tuple[pa.Table, BatchContext]:
    ctx = BatchContext(batch=Batch("b-test", (), "f"))
    ctx.read_rows(table.num_rows)
    return step.apply(table, ctx), ctx


def read_output(path: Path) -> pd.DataFrame:
    return pd.read_parquet(path).sort_values("id").reset_index(drop=True)


# -- in this process ----------------------------------------------------------------------


def test_scores_like_the_model_itself(tmp_path):
    rng = np.random.default_rng(1)
    X = pd.DataFrame(rng.normal(size=(400, 3)), columns=FEATURES)
    y = (X.a + X.b > 0).astype(int)
    clf = LogisticRegression().fit(X, y)
    table = pa.Table.from_pandas(X.assign(id=range(400)), preserve_index=False)

    out, ctx = apply(Predict(clf, features=FEATURES, output="label"), table)
    assert out.column("label").to_numpy().tolist() == clf.predict(X).tolist()
    assert out.column_names == [*X.columns, "id", "label"]

    out, _ = apply(Predict(clf, features=FEATURES, output="p", method="predict_proba"), table)
    np.testing.assert_allclose(out.column("p").to_numpy(), clf.predict_proba(X)[:, 1])

    both = Predict(clf, features=FEATURES, outputs=["p0", "p1"], method="predict_proba")
    out, _ = apply(both, table)
    np.testing.assert_allclose(out.column("p0").to_numpy(), clf.predict_proba(X)[:, 0])
    assert ctx.rows_quarantined == 0

    # A plain callable gets a DataFrame of the features.
    out, _ = apply(Predict(lambda df: df["a"] * 10, features=FEATURES, output="s"), table)
    np.testing.assert_allclose(out.column("s").to_numpy(), X.a.to_numpy() * 10)


def test_model_batch_size_is_separate_from_the_data_batch():
    calls = []

    def model(df):
        calls.append(len(df))
        return df["a"]

    table = pa.table({"a": np.arange(1000.0)})
    out, _ = apply(Predict(model, features=["a"], batch_rows=128), table)
    assert calls == [128] * 7 + [104]
    assert out.column("prediction").to_numpy().tolist() == list(np.arange(1000.0))
    calls.clear()
    apply(Predict(model, features=["a"]), table)
    assert calls == [1000]  # the automatic size is larger than this batch
    assert auto_batch_rows(8) == 65_536 and auto_batch_rows(4_000) == 1_024
    assert 1_024 < auto_batch_rows(1_000) < 65_536


def test_rows_the_model_cannot_score_are_quarantined_with_the_reason(tmp_path, testlib):
    n = 5000
    a = np.linspace(0, 10, n)
    a[[17, 2500, 4999]] = [500.0, 101.0, 1e6]  # the model raises on chunks holding these
    table = pa.table(
        {
            "id": np.arange(n),
            "a": a,
            "b": pa.array(["1.5"] * (n - 3) + ["x", None, " 2.5 "]),
            "c": pa.array([1] * 10 + [None] + [1] * (n - 11), pa.int64()),
        }
    )
    step = Predict(
        testlib.Touchy(), features=FEATURES, output="y", batch_rows=1000, dtype="float64"
    )
    out, ctx = apply(step, table)
    q = ctx.quarantined_rows().to_pandas()
    assert ctx.rows_in == out.num_rows + ctx.rows_quarantined
    assert ctx.rows_quarantined == 6 and len(q) == 6
    by_id = {
        int(json.loads(r)["id"]): (k, why)
        for r, k, why in zip(q.raw, q.kind, q.reason, strict=True)
    }
    assert by_id[n - 3] == ("bad_feature", "feature 'b' is not a number: 'x'")
    assert by_id[n - 2][0] == "bad_feature" and "'b' is missing" in by_id[n - 2][1]
    assert by_id[10][0] == "bad_feature" and "'c' is missing" in by_id[10][1]
    for i in (17, 2500):
        assert by_id[i] == (
            "model_error",
            "the model raised ValueError: a is out of the trained range",
        )
    assert n - 1 not in by_id or by_id[n - 1][0] == "model_error"
    assert set(by_id) == {17, 2500, 4999, 10, n - 3, n - 2}
    ids = out.column("id").to_numpy()
    assert len(ids) == n - 6 and not set(by_id) & set(ids.tolist())
    np.testing.assert_allclose(out.column("y").to_numpy(), out.column("a").to_numpy() * 2)
    assert out.column("b").to_pylist()[-1] == "1.5"  # input columns are kept as they were


def test_missing_feature_column_and_broken_model(tmp_path, testlib):
    table = pa.table({"id": [1, 2, 3], "a": [1.0, 2, 3], "b": [1.0, 2, 3]})
    out, ctx = apply(Predict(testlib.SumModel(), features=FEATURES, output="y"), table)
    assert out.num_rows == 0 and out.column_names == ["id", "a", "b", "y"]
    assert ctx.rows_quarantined == 3
    assert "missing feature column(s) ['c']" in ctx.quarantined_rows().column("reason")[0].as_py()

    full = table.append_column("c", pa.array([1.0, 2, 3]))
    with pytest.raises(ModelError, match="raised on the whole chunk and on each of 3 single rows"):
        apply(Predict(testlib.Broken(), features=FEATURES), full)
    with pytest.raises(ModelError, match="on_error='fail'"):
        apply(
            Predict(testlib.Touchy(), features=FEATURES, on_error="fail"),
            full.set_column(1, "a", pa.array([1.0, 200, 3])),
        )
    with pytest.raises(ModelError, match="returns one column but outputs names 2"):
        apply(Predict(testlib.SumModel(), features=FEATURES, outputs=["x", "y"]), full)


def test_model_files_pickle_and_fsspec_and_a_changed_file(tmp_path):
    import pickle

    import fsspec

    model = fit_regression(3)
    X = pd.DataFrame(np.random.default_rng(5).normal(size=(50, 3)), columns=FEATURES)
    table = pa.Table.from_pandas(X, preserve_index=False)
    with open(tmp_path / "model.pkl", "wb") as f:
        pickle.dump(model, f)
    with fsspec.open("memory://models/model.joblib", "wb") as f:
        joblib.dump(model, f)
    for where in (str(tmp_path / "model.pkl"), "memory://models/model.joblib"):
        out, _ = apply(Predict(where, features=FEATURES, output="y"), table)
        np.testing.assert_allclose(out.column("y").to_numpy(), model.predict(X))

    path = tmp_path / "model.joblib"
    joblib.dump(model, path)
    step = Predict(str(path), features=FEATURES)  # planned with this file
    joblib.dump(fit_regression(4), path)  # replaced before a worker loads it
    with pytest.raises(ModelError, match="changed after the run was planned"):
        apply(step, table)
    fresh = Predict(str(path), features=FEATURES)
    assert fresh.token() != step.token()
    out, _ = apply(fresh, table)
    np.testing.assert_allclose(out.column("prediction").to_numpy(), fit_regression(4).predict(X))


def test_definition_errors_name_the_key(tmp_path):
    clf = fit_regression(0)
    with pytest.raises(ValueError, match="trained on features \\['a', 'b', 'c'\\]"):
        Predict(clf, features=["b", "a", "c"])
    with pytest.raises(ValueError, match="steps.predict.method.*no method 'predict_proba'"):
        Predict(clf, features=FEATURES, method="predict_proba")
    with pytest.raises(ValueError, match="does not exist"):
        Predict(str(tmp_path / "nope.joblib"), features=FEATURES)
    with pytest.raises(ValueError, match="cannot import the model loader's module"):
        Predict("no_such_module_here:load", features=FEATURES)
    with pytest.raises(ValueError, match="also features"):
        Predict(clf, features=FEATURES, output="a")


# -- on the cluster -----------------------------------------------------------------------


def test_file_model_loads_once_per_worker_resumes_and_rescores_on_change(tmp_path, client):
    frame = write_inputs(tmp_path / "in", n_files=6)
    model_path = tmp_path / "model.joblib"
    joblib.dump(fit_regression(0), model_path)
    events = []
    p = make_pipeline(tmp_path, Predict(str(model_path), features=FEATURES, output="score"))
    first = p.run(client=client, listeners=[events.append])
    assert first.status == "succeeded" and first.committed == 6, first
    got = read_output(tmp_path / "out" / "score")
    want = fit_regression(0).predict(frame[FEATURES].set_index(frame.id).sort_index())
    np.testing.assert_allclose(got.score.to_numpy(), want)

    workers = {e.data["worker"].rsplit(":", 1)[1] for e in events if e.kind == "batch_committed"}
    pids = client.run(os.getpid)
    loads = client.run(model_cache)
    mine = {addr: {k: v for k, v in c.items() if str(model_path) in k} for addr, c in loads.items()}
    assert {str(pids[a]) for a, c in mine.items() if c} >= workers  # each worker that ran has it
    assert all(v == 1 for c in mine.values() for v in c.values())  # loaded once, reused

    again = p.run(client=client)
    assert again.status == "nothing_to_do" and again.skipped == 6

    joblib.dump(fit_regression(1), model_path)  # a new model at the same path
    p2 = make_pipeline(tmp_path, Predict(str(model_path), features=FEATURES, output="score"))
    assert p2.definition_token != p.definition_token
    third = p2.run(client=client)
    assert third.committed == 6 and third.skipped == 0
    got = read_output(tmp_path / "out" / "score")
    want = fit_regression(1).predict(frame[FEATURES].set_index(frame.id).sort_index())
    np.testing.assert_allclose(got.score.to_numpy(), want)


def test_loader_runs_once_per_worker(tmp_path, client, testlib):
    write_inputs(tmp_path / "in", n_files=8, rows=50)
    log = tmp_path / "loads.txt"
    step = Predict("dbatch_predict_testlib:load_sum_model", model_arg=str(log), features=FEATURES)
    events = []
    result = make_pipeline(tmp_path, step).run(client=client, listeners=[events.append])
    assert result.committed == 8
    pids = log.read_text().split()
    workers = {e.data["worker"].rsplit(":", 1)[1] for e in events if e.kind == "batch_committed"}
    assert len(pids) == len(set(pids)) <= 2 < result.committed  # once in each worker
    assert set(pids) >= workers
    out = pd.read_parquet(tmp_path / "out" / "score")
    np.testing.assert_allclose(out.prediction, out.a + 2 * out.b + 3 * out.c + 100.0)
    # Same loader and argument: resumed. A new version: every batch again.
    assert make_pipeline(tmp_path, step).run(client=client).status == "nothing_to_do"
    bumped = Predict(
        "dbatch_predict_testlib:load_sum_model", model_arg=str(log), features=FEATURES, version="2"
    )
    assert make_pipeline(tmp_path, bumped).run(client=client).committed == 8


def test_each_worker_loads_the_model_when_the_run_starts(tmp_path, client, testlib):
    """Prepared on every worker, in the background: also on one that gets no batch."""
    write_inputs(tmp_path / "in", n_files=1, rows=20)
    log = tmp_path / "loads.txt"
    step = Predict("dbatch_predict_testlib:load_sum_model", model_arg=str(log), features=FEATURES)
    events = []
    result = make_pipeline(tmp_path, step).run(client=client, listeners=[events.append])
    assert result.committed == 1
    ran = {e.data["worker"].rsplit(":", 1)[1] for e in events if e.kind == "batch_committed"}
    every = {str(pid) for pid in client.run(os.getpid).values()}
    deadline = time.monotonic() + 30
    while set(log.read_text().split()) != every and time.monotonic() < deadline:
        time.sleep(0.05)  # the worker that ran no batch loads it in the background
    pids = log.read_text().split()
    assert len(ran) == 1 and sorted(pids) == sorted(every)  # once in each, batch or not
    keys = [k for c in client.run(model_cache).values() for k in c if str(log) in k]
    assert len(keys) == len(every)


def test_object_model_is_sent_once_per_worker_not_in_each_task(tmp_path, client, testlib):
    write_inputs(tmp_path / "in", n_files=8, rows=50)
    log = tmp_path / "pickles.txt"
    model = testlib.CountingModel(str(log), megabytes=8)
    log.write_text("")
    step = Predict(model, features=FEATURES, output="s")
    assert log.read_text().split("\n").count(f"pickle {os.getpid()}") == 1  # digest

    def stream_bytes(dask_scheduler):
        return sum(b.byte_count for b in dask_scheduler.stream_comms.values())

    before = client.run_on_scheduler(stream_bytes)
    events = []
    result = make_pipeline(tmp_path, step).run(client=client, listeners=[events.append])
    sent = client.run_on_scheduler(stream_bytes) - before
    assert result.committed == 8
    # Task messages from the scheduler to the workers are small: the model is not in them.
    assert sent < 1 * 2**20, sent
    lines = [line.split() for line in log.read_text().splitlines()]
    pickles = [pid for what, pid in lines if what == "pickle"]
    unpickles = [pid for what, pid in lines if what == "unpickle"]
    workers = set(client.run(lambda: os.getpid()).values())
    assert len(pickles) <= 2 + len(workers) < result.committed  # digest, scatter, replicas
    assert len({p for p in unpickles if int(p) in workers}) == len(
        [p for p in unpickles if int(p) in workers]
    )  # at most once in each worker
    out = pd.read_parquet(tmp_path / "out" / "score")
    np.testing.assert_allclose(out.s, out.a + out.b + out.c + 1.0)

    # Resume with the same object; a changed object re-scores every batch.
    assert (
        make_pipeline(tmp_path, Predict(model, features=FEATURES, output="s"))
        .run(client=client)
        .status
        == "nothing_to_do"
    )
    model.weights[0] = 2.0
    changed = make_pipeline(tmp_path, Predict(model, features=FEATURES, output="s")).run(
        client=client
    )
    assert changed.committed == 8
    out = pd.read_parquet(tmp_path / "out" / "score")
    np.testing.assert_allclose(out.s, out.a + out.b + out.c + 2.0)


def test_bad_rows_quarantined_in_a_run_and_output_exactly_once(tmp_path, client, testlib):
    frame = write_inputs(tmp_path / "in", n_files=4, rows=100)
    bad = pd.DataFrame(
        {
            "id": ["bad-0", "bad-1", "bad-2"],
            "a": [1.0, 999.0, np.nan],
            "b": [1.0, 1.0, 1.0],
            "c": ["1", "1", "1"],
        }
    )
    bad.to_parquet(tmp_path / "in" / "part-99.parquet", index=False)
    step = Predict(testlib.Touchy(), features=FEATURES, output="y")
    result = make_pipeline(tmp_path, step).run(client=client, fault=testlib.blip_once)
    assert result.status == "succeeded", result
    assert result.rows_in == len(frame) + 3
    assert result.rows_quarantined == 2 and result.rows_out == len(frame) + 1
    assert result.rows_in == result.rows_out + result.rows_quarantined + result.rows_filtered
    out = pd.read_parquet(tmp_path / "out" / "score")
    assert out.id.is_unique and len(out) == len(frame) + 1  # the retried batch landed once
    q = pd.read_parquet(tmp_path / "work" / "score" / "quarantine.parquet")
    assert sorted(q.kind) == ["bad_feature", "model_error"]
    assert any(
        "out of the trained range" in r and "bad-1" in raw
        for r, raw in zip(q.reason, q.raw, strict=True)
    )


def test_yaml_job_with_a_model_file(tmp_path, client):
    from dbatch.spec import load_job

    frame = write_inputs(tmp_path / "in", n_files=3)
    joblib.dump(fit_regression(2), tmp_path / "model.joblib")
    (tmp_path / "job.yaml").write_text(
        textwrap.dedent(
            """\
            name: scoring
            source: {type: files, path: in/*.parquet}
            batching: {count: 1}
            steps:
              - predict: {model: model.joblib, features: [a, b, c], output: score, batch_rows: 64}
            sink: {type: parquet, path: out/scores}
            """
        )
    )
    job = load_job(tmp_path / "job.yaml")
    [step] = job.pipeline.steps
    assert isinstance(step, Predict) and step.batch_rows == 64
    assert step.model.name == str(tmp_path / "model.joblib")
    result = job.pipeline.run(client=client)
    assert result.status == "succeeded" and result.rows_out == len(frame)
    got = read_output(tmp_path / "out" / "scores")
    want = fit_regression(2).predict(frame[FEATURES].set_index(frame.id).sort_index())
    np.testing.assert_allclose(got.score.to_numpy(), want)
    assert load_job(tmp_path / "job.yaml").pipeline.run(client=client).status == "nothing_to_do"


def test_pytorch_model_files(tmp_path, client):
    try:
        import torch
    except ImportError:
        unavailable("needs the PyTorch extra (pip install torch==2.13.0; CI installs it)")
    frame = write_inputs(tmp_path / "in", n_files=4)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
    torch.save(net, tmp_path / "net.pt")
    example = torch.zeros(4, 3)
    batch = torch.export.Dim("batch")
    exported = torch.export.export(net, (example,), dynamic_shapes=({0: batch},))
    torch.export.save(exported, tmp_path / "net.pt2")
    steps = [
        Predict(str(tmp_path / "net.pt"), features=FEATURES, output="y_pt", dtype="float32"),
        Predict(str(tmp_path / "net.pt2"), features=FEATURES, output="y_pt2", batch_rows=100),
    ]
    p = Pipeline(
        source=Files(str(tmp_path / "in" / "*.parquet")),
        sink=ParquetSink(str(tmp_path / "out" / "torch")),
        steps=steps,
        batching=ByCount(1),
        name="torch",
        workdir=str(tmp_path / "work"),
    )
    result = p.run(client=client)
    assert result.status == "succeeded", result
    got = read_output(tmp_path / "out" / "torch")
    inputs = frame.set_index("id").sort_index()[FEATURES].to_numpy(np.float32).copy()
    with torch.no_grad():
        want = net(torch.from_numpy(inputs)).numpy()[:, 0]
    np.testing.assert_allclose(got.y_pt.to_numpy(), want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got.y_pt2.to_numpy(), want, rtol=1e-5, atol=1e-6)
    threads = client.run(lambda: __import__("torch").get_num_threads())
    assert set(threads.values()) == {1}
