"""Worker processes killed for real (SIGKILL) in the middle of a run: nothing lost, nothing doubled."""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from pathlib import Path

import dask
import pandas as pd
import psutil
import pytest

import dbatch
from dbatch import ByCount, Files, ParquetSink, Pipeline
from dbatch.cluster import _local_client
from dbatch.testing import EventLog, KillWorker, Pause, data_files, leftovers

N_FILES = 12
ROWS = 150
SCHEMA = {"id": "string", "account": "string", "amount": "int64"}


def write_landing(root: Path) -> None:
    root.mkdir(parents=True)
    for f in range(N_FILES):
        lines = ["id,account,amount"] + [f"{f}-{i},A{i % 7},{i * 13 + f}" for i in range(ROWS)]
        (root / f"in-{f:02d}.csv").write_text("\n".join(lines) + "\n")


def pipeline(landing: Path, base: Path) -> Pipeline:
    return Pipeline(
        Files(str(landing / "*.csv"), schema=SCHEMA),
        ParquetSink(str(base / "out")),
        batching=ByCount(1),
        name="killed-workers",
        workdir=str(base / "work"),
    )


@pytest.fixture(scope="module")
def landing(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("landing") / "in"
    write_landing(root)
    return root


@pytest.fixture(scope="module")
def reference(landing, tmp_path_factory, client) -> dict:
    """A fault-free run over the same files: its data files and rows."""
    base = tmp_path_factory.mktemp("reference")
    result = pipeline(landing, base).run(client=client)
    assert result.status == "succeeded", result
    return {"files": data_files(base / "out"), "frame": pd.read_parquet(base / "out")}


def dedicated_cluster(allowed_failures: int = 3):
    """Two single-threaded worker processes under nannies, which restart a killed worker."""
    from distributed import LocalCluster

    with dask.config.set({"distributed.scheduler.allowed-failures": allowed_failures}):
        return LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
            worker_dashboard_address=None,
        )


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_worker_killed_at_a_random_moment(seed, landing, reference, tmp_path):
    """SIGKILL one of two workers at a seeded random moment, in the middle of one of its batches."""
    from distributed import Client

    rng = random.Random(seed)
    pause = Pause(0.15, marker=str(tmp_path / "starts"))
    with dedicated_cluster() as cluster, Client(cluster) as client:
        victim = rng.choice(sorted(client.run(os.getpid).values()))
        delay = rng.uniform(0.0, 0.6)  # after the first batch started; the run takes ~1 s more
        killed: list[tuple[float, str]] = []

        def kill() -> None:
            deadline = time.time() + 60
            while not pause.starts() and time.time() < deadline:
                time.sleep(0.01)
            time.sleep(delay)
            # Strike while the victim is inside a batch: the next one it starts is held.
            pause.hold(victim)
            while time.time() < deadline:
                held = [s for s in pause.held() if s[2] == victim]
                if held:
                    os.kill(victim, signal.SIGKILL)
                    killed.append((time.time(), held[0][0]))
                    return
                time.sleep(0.005)

        log = EventLog()
        p = pipeline(landing, tmp_path)
        killer = threading.Thread(target=kill)
        killer.start()
        result = p.run(client=client, fault=pause, listeners=[log])
        finished = time.time()
        killer.join()
        # The kill happened while the run was going on, and the nanny replaced the worker.
        assert killed and killed[0][0] < finished, (delay, killed)
        assert not psutil.pid_exists(victim) or psutil.Process(victim).status() == "zombie"
        client.wait_for_workers(2, timeout=30)
        assert victim not in client.run(os.getpid).values()

    assert result.status == "succeeded", result
    # The batch the victim was running when it died was run again by another worker.
    interrupted = killed[0][1]
    runs_of_it = [s for s in pause.starts() if s[0] == interrupted]
    assert len(runs_of_it) >= 2 and runs_of_it[-1][2] != victim
    committed_by = {e.batch_id: e.data["worker"] for e in log.of("batch_committed")}
    assert not committed_by[interrupted].endswith(f":{victim}")

    out = tmp_path / "out"
    assert data_files(out) == reference["files"]  # byte-identical data files
    frame = pd.read_parquet(out)
    want = reference["frame"]
    assert len(frame) == len(want) == N_FILES * ROWS
    assert frame["id"].is_unique  # 0 duplicated
    assert set(frame["id"]) == set(want["id"])  # 0 lost
    assert result.rows_in == result.rows_out == N_FILES * ROWS
    assert leftovers(p.work_area(), out) == []
    assert sorted(committed_by) == sorted(b.id for b in p.plan())  # each batch committed once
    assert len(log.of("batch_committed")) == N_FILES
    ledger = dbatch.Ledger(p.ledger_url())
    states = ledger.batches_frame(p.name)
    ledger.close()
    assert (states["state"] == "committed").all() and len(states) == N_FILES


def test_batch_that_kills_its_worker_every_time_is_quarantined(landing, tmp_path):
    """Like an out-of-memory batch: quarantined with a diagnosis; every other batch commits."""
    p = pipeline(landing, tmp_path)
    plan = p.plan()
    victim = plan[3].id
    hook = KillWorker(str(tmp_path / "kills"), batch_ids=(victim,), times=10)
    with dask.config.set({"dbatch.retry.worker-deaths": 1}):
        client = _local_client(2, 1)  # the LocalCluster dbatch.connect() makes
    try:
        result = p.run(client=client, fault=hook)
        assert result.status == "succeeded_with_quarantine", result
        assert hook.kills() == 2  # the first attempt and the one allowed retry
        assert result.quarantined == 1 and result.committed == N_FILES - 1
        info = {b["batch_id"]: b for b in result.batches}[victim]
        assert info["state"] == "quarantined"
        assert info["error_class"] == "KilledWorker"
        assert "killed its worker process on every attempt" in info["error_message"]
        frame = pd.read_parquet(tmp_path / "out")
        assert len(frame) == (N_FILES - 1) * ROWS and frame["id"].is_unique

        # Once the cause is fixed, `replay` runs only the quarantined batch.
        log = EventLog()
        replayed = p.run(client=client, replay=True, listeners=[log])
    finally:
        cluster = client.cluster
        client.close()
        cluster.close()
    assert replayed.status == "succeeded", replayed
    assert list(log.started()) == [victim]
    assert len(pd.read_parquet(tmp_path / "out")) == N_FILES * ROWS
    assert leftovers(p.work_area(), tmp_path / "out") == []


def test_a_task_dask_runs_again_after_its_commit_stages_nothing(landing, tmp_path):
    """A worker that held finished results died: Dask runs those tasks again, for nothing."""
    from dbatch.tasks import BatchTask, process_batch
    from dbatch.workarea import WorkArea

    p = pipeline(landing, tmp_path)
    plan = p.plan()
    physical = p.physical(plan=plan)
    batch = plan.batches[0]
    work = WorkArea(tmp_path / "work")
    root = work.staging("r1")
    root.mkdir(parents=True)
    task = BatchTask(batch, "r1", str(root))
    first = process_batch(physical, task)
    work.promote(batch, first.staging)
    again = process_batch(physical, task)
    assert (again.batch_id, again.rows_out, again.checksum) == (batch.id, ROWS, first.checksum)
    assert list(root.iterdir()) == []  # nothing staged again
    # A later run replaying the batch (its commit is an earlier run's) does run it.
    other = work.staging("r2")
    other.mkdir()
    replay = process_batch(physical, BatchTask(batch, "r2", str(other)))
    assert Path(replay.staging).parent == other and len(list(other.iterdir())) == 1
    work.drop_staging("r1")
    work.drop_staging("r2")
    with pytest.raises(RuntimeError, match="its run r1 has ended"):
        process_batch(physical, BatchTask(batch, "r1", str(root), attempt=2))
    assert not root.exists() and leftovers(tmp_path / "work") == []
