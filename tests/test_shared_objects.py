"""Shared objects (lookups, models) reach each worker once, even after Dask drops idle copies."""

from __future__ import annotations

import os
from pathlib import Path

from dbatch.executors.shared import SharedOnWorkers


class Counted:
    """Records in ``log`` every process that unpickles it."""

    def __init__(self, log: str):
        self.log = log
        self.payload = b"x" * (1 << 20)

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
