"""Short batches share a Dask task; each is still committed, recorded and failed on its own."""

from __future__ import annotations

import pickle
import threading
from pathlib import Path

import pandas as pd
import pytest

from dbatch import ByCount, Files, ParquetSink, Pipeline
from dbatch.core import BatchResult
from dbatch.executors.grouping import GROUP, GROUP_BELOW, Grouping, _picklable
from dbatch.testing import EventLog, RaiseOn, leftovers

N_FILES, ROWS = 120, 3


def write_inputs(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(N_FILES):
        rows = "".join(f"{i}-{k},{k}\n" for k in range(ROWS))
        (folder / f"in-{i:04d}.csv").write_text("id,v\n" + rows)


def pipeline(tmp_path: Path) -> Pipeline:
    return Pipeline(
        Files(str(tmp_path / "in" / "*.csv"), schema={"id": "string", "v": "int64"}),
        ParquetSink(str(tmp_path / "out")),
        batching=ByCount(1),
        name="grouped",
        workdir=str(tmp_path / "work"),
    )


def test_short_batches_share_tasks_and_fail_alone(tmp_path, client):
    from distributed import get_task_stream

    write_inputs(tmp_path / "in")
    p = pipeline(tmp_path)
    plan = p.plan()
    bad = plan[100].id  # late enough that the batches before it showed they are short
    log = EventLog()
    with get_task_stream(client) as stream:
        failed = p.run(client=client, fault=RaiseOn((bad,)), listeners=[log])
    tasks = {str(t["key"]) for t in stream.data if "grouped-batch" in str(t["key"])}
    assert failed.status == "failed" and failed.committed == N_FILES - 1 and failed.failed == 1
    assert len(tasks) < N_FILES / 2, len(tasks)  # far fewer tasks than batches
    # Every other batch committed exactly once; the bad one failed alone, with its error.
    committed = [e.batch_id for e in log.of("batch_committed")]
    assert sorted(committed) == sorted(b.id for b in plan if b.id != bad)
    (failure,) = log.of("batch_failed")
    assert failure.batch_id == bad and "injected failure" in failure.data["error_message"]
    assert failure.data["error_class"] == "ValueError"

    fixed = p.run(client=client, listeners=[again := EventLog()])
    assert fixed.status == "succeeded" and set(again.started()) == {bad}
    out = pd.read_parquet(tmp_path / "out")
    assert len(out) == N_FILES * ROWS and out["id"].is_unique


def test_a_worker_killed_inside_a_group_loses_and_repeats_nothing(tmp_path, client):
    """The group dies with its worker; Dask runs it again elsewhere, each batch committed once."""
    import os
    import signal

    write_inputs(tmp_path / "in")
    p = pipeline(tmp_path)
    victim = p.plan()[80].id
    marker = tmp_path / "killed"

    def kill_once(batch, attempt):
        if batch.id == victim and not marker.exists():
            marker.write_text("")
            os.kill(os.getpid(), signal.SIGKILL)

    log = EventLog()
    result = p.run(client=client, fault=kill_once, listeners=[log])
    assert result.status == "succeeded" and result.committed == N_FILES, result
    assert marker.exists()
    assert sorted(e.batch_id for e in log.of("batch_committed")) == sorted(b.id for b in p.plan())
    out = pd.read_parquet(tmp_path / "out")
    assert len(out) == N_FILES * ROWS and out["id"].is_unique
    assert leftovers(p.work_area(), tmp_path / "out") == []


def test_a_batch_that_kills_its_worker_takes_no_other_batch_down_with_it(tmp_path):
    """Its group dies on every attempt; its other batches, retried alone, commit."""
    import dask

    from dbatch.cluster import _local_client
    from dbatch.testing import KillWorker

    write_inputs(tmp_path / "in")
    p = pipeline(tmp_path)
    victim = p.plan()[80].id
    hook = KillWorker(str(tmp_path / "kills"), batch_ids=(victim,), times=10)
    with dask.config.set({"dbatch.retry.worker-deaths": 1}):
        client = _local_client(2, 1)  # the LocalCluster dbatch.connect() makes
    with client.cluster, client:  # the client closes first, then its cluster
        log = EventLog()
        result = p.run(client=client, fault=hook, listeners=[log])
    # Which batch of a task that killed its workers did it is not known: none of them is
    # quarantined for it, each is retried alone, and only the culprit fails again.
    assert result.committed == N_FILES - 1 and hook.kills() >= 4, result
    (retry,) = [e for e in log.of("batch_retry") if e.batch_id == victim and e.data["attempt"] == 1]
    assert "lost with a worker" in retry.data["error_message"]
    ended = {b["batch_id"]: b for b in result.batches}
    assert ended[victim]["state"] in ("quarantined", "failed")
    assert [i for i, b in ended.items() if b["state"] != "committed"] == [victim]
    committed = [e.batch_id for e in log.of("batch_committed")]
    assert sorted(committed) == sorted(b.id for b in p.plan() if b.id != victim)


def _result(seconds: float) -> BatchResult:
    return BatchResult(batch_id="b", fingerprint="f", duration=seconds)


def test_the_group_size_follows_the_last_batches():
    grouping = Grouping()
    assert grouping.size() == 1  # nothing seen yet: alone
    for _ in range(3):
        grouping.saw(_result(0.001))
    assert grouping.size() == 1  # too few to tell
    grouping.saw(_result(0.001))
    assert grouping.size() == GROUP
    for _ in range(16):
        grouping.saw(_result(GROUP_BELOW * 2))  # batches that take long go alone again
    assert grouping.size() == 1


def test_an_error_that_cannot_travel_is_told_by_name():
    class Unpicklable(Exception):
        def __init__(self):
            super().__init__("held a lock")
            self.lock = threading.Lock()

    error = _picklable(Unpicklable())
    assert isinstance(error, RuntimeError) and "Unpicklable: held a lock" in str(error)
    assert pickle.loads(pickle.dumps(error)).args == error.args
    kept = ValueError("plain")
    assert _picklable(kept) is kept


@pytest.mark.parametrize("size", [1, 3])
def test_run_group_keeps_going_after_a_failed_batch(tmp_path, size):
    from dbatch.executors.grouping import BatchError, run_group
    from dbatch.tasks import BatchTask
    from dbatch.workarea import WorkArea

    write_inputs(tmp_path / "in")
    p = pipeline(tmp_path)
    plan = p.plan()
    bad = plan[0].id
    physical = p.physical(plan=plan)
    root = WorkArea(p.work_area()).staging("r1")
    root.mkdir(parents=True)
    fault = RaiseOn((bad,))
    tasks = [BatchTask(b, "r1", str(root), fault=fault) for b in plan.batches[:size]]
    out = run_group(physical, tasks)
    assert isinstance(out[0], BatchError) and isinstance(out[0].error, ValueError)
    assert "injected failure" in out[0].traceback
    assert [r.rows_out for r in out[1:]] == [ROWS] * (size - 1)
