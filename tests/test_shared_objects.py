"""Shared objects (lookups, models) reach each worker once, even after Dask drops idle copies."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dbatch.executors.shared import SharedOnWorkers


class Counted:
    """Records in ``log`` every process that unpickles it."""

    def __init__(self, log: str, size: int = 1 << 20):
        self.log = log
        self.payload = b"x" * size

    def __getstate__(self):
        return {"log": self.log, "payload": self.payload}

    def __setstate__(self, state):
        self.__dict__.update(state)
        with open(self.log, "a") as f:
            f.write(f"{os.getpid()}\n")


def use(shared: SharedOnWorkers, token: str) -> int:
    return len(shared[token].payload) + os.getpid() * 0


def test_a_dropped_broadcast_copy_is_not_fetched_again(tmp_path: Path, client):
    log = tmp_path / "unpickled.txt"
    log.write_text("")
    from distributed import Variable

    [future] = client.scatter([Counted(str(log))], broadcast=True, hash=False, direct=True)
    Variable("test-shared-model", client=client).set(future)
    shared = SharedOnWorkers({"model": (future.key, "test-shared-model")})
    workers = list(client.scheduler_info()["workers"])
    for w in workers:  # each worker uses it once: the process keeps it
        client.submit(use, shared, "model", workers=[w], pure=False).result()
    client.amm.run_once()  # nothing waits on the copies: the memory manager drops all but one
    assert len(client.who_has(future)[future.key]) == 1
    for _ in range(3):
        for w in workers:
            assert client.submit(use, shared, "model", workers=[w], pure=False).result() == 1 << 20
    unpickles = log.read_text().split()
    assert len(unpickles) == len(set(unpickles)) == len(workers)  # once in each worker
    # A worker that never held it (it joined later) fetches it once, by name.
    for w in workers:
        client.run(_forget, workers=[w])
    client.amm.run_once()
    for w in workers:
        assert client.submit(use, shared, "model", workers=[w], pure=False).result() == 1 << 20
    Variable("test-shared-model", client=client).delete()
    future.release()


def _forget() -> None:
    from dbatch.executors import shared as executor

    executor._HELD.clear()


class PaddedIdentity(Counted):
    """A ``Map`` function carrying ``size`` bytes; records every process that unpickles it."""

    def __call__(self, frame):
        return frame


def _plan_keys(dask_scheduler) -> list[str]:
    return [str(k) for k in dask_scheduler.tasks if str(k).startswith("dbatch-sent-plan-")]


@pytest.mark.parametrize("size, scattered", [(1 << 10, False), (1 << 18, True)])
def test_a_small_plan_travels_in_its_tasks_and_a_large_one_is_scattered_once(
    tmp_path: Path, client, size: int, scattered: bool
):
    from dbatch import ByCount, Files, Map, ParquetSink, Pipeline
    from dbatch.core import EventKind

    (tmp_path / "in").mkdir()
    for i in range(6):
        (tmp_path / "in" / f"p{i}.csv").write_text(f"id,v\n{i},{i * 10}\n")
    log = tmp_path / "unpickled.txt"
    log.write_text("")
    pipeline = Pipeline(
        Files(str(tmp_path / "in" / "*.csv"), schema={"id": "int64", "v": "int64"}),
        ParquetSink(str(tmp_path / "out")),
        steps=[Map(PaddedIdentity(str(log), size))],
        batching=ByCount(1),
        name="sent",
        workdir=str(tmp_path / "work"),
    )
    keys: list[str] = []

    def look(event) -> None:  # on the driver, while the run's tasks are referenced
        if event.kind == EventKind.BATCH_COMMITTED:
            keys.extend(client.run_on_scheduler(_plan_keys))

    result = pipeline.run(client=client, listeners=[look])
    assert result.committed == 6 and result.rows_out == 6
    workers = {str(pid) for pid in client.run(os.getpid).values()}
    unpickled = [pid for pid in log.read_text().split() if pid in workers]
    if scattered:  # one key, broadcast: each worker unpickles the plan once
        assert len(set(keys)) == 1
        assert len(unpickled) == len(set(unpickled)) <= len(workers)
    else:  # inside each task: unpickled by each of them, and never a key of its own
        assert keys == []
        assert len(unpickled) == 6
