"""What a run asks of fresh workers before its first batch (``executors/workers.py``), on a real cluster."""

from __future__ import annotations

import sys
import time

import pytest

from dbatch.executors.workers import prepare_workers, warm_in_task_thread


def _in_the_task_thread() -> dict[str, bool]:
    """What a batch would find ready in the thread it runs in."""
    from dbatch import engine

    return {
        "duckdb connection": getattr(engine._local, "con", None) is not None,
        "pyarrow.dataset": "pyarrow.dataset" in sys.modules,
    }


@pytest.fixture
def fresh_client():
    """One spawned worker process with one thread: nothing imported or opened but distributed's."""
    from distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=1,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
            worker_dashboard_address=None,
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client


def test_the_warm_up_opens_the_connection_batches_use_and_imports_their_readers(fresh_client):
    assert fresh_client.submit(_in_the_task_thread, pure=False).result() == {
        "duckdb connection": False,
        "pyarrow.dataset": False,
    }
    fresh_client.run(warm_in_task_thread, block=True)
    assert fresh_client.submit(_in_the_task_thread, pure=False).result() == {
        "duckdb connection": True,
        "pyarrow.dataset": True,
    }


def test_prepare_workers_registers_the_quiet_failures_plugin_once_per_client(fresh_client):
    registered: list[str] = []
    register = fresh_client.register_plugin

    def counting(plugin, name=None, **kw):
        registered.append(name)
        return register(plugin, name=name, **kw)

    fresh_client.register_plugin = counting  # the real call, counted
    prepare_workers(fresh_client, None)  # no plan: no model to load
    prepare_workers(fresh_client, None)
    assert registered == ["dbatch-quiet-failures"]
    # The plugin is on the worker: its filter hides dbatch's "Compute Failed" records.
    assert fresh_client.run(_quieted) == {w: True for w in fresh_client.scheduler_info()["workers"]}


def test_workers_warmed_already_are_not_asked_again_but_one_that_joined_is(fresh_client):
    sent: list[object] = []
    run = fresh_client.run

    def counting(fn, *args, **kw):
        sent.append(fn)
        return run(fn, *args, **kw)

    fresh_client.run = counting  # the real call, counted
    first = set(fresh_client.nthreads())
    prepare_workers(fresh_client, None, first)
    prepare_workers(fresh_client, None, first)  # a re-run on the same cluster
    assert sent == [warm_in_task_thread]
    fresh_client.cluster.scale(2)
    fresh_client.wait_for_workers(2, timeout=60)
    both = set(fresh_client.nthreads())
    [joined] = both - first
    prepare_workers(fresh_client, None, both)
    assert sent == [warm_in_task_thread] * 2
    deadline = time.monotonic() + 30  # the warm-up runs without the driver waiting for it
    while True:
        ready = fresh_client.submit(_in_the_task_thread, workers=[joined], pure=False).result()
        if all(ready.values()) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert ready == {"duckdb connection": True, "pyarrow.dataset": True}


def _quieted() -> bool:
    import logging

    from dbatch.executors.workers import _not_dbatch_failure

    return _not_dbatch_failure in logging.getLogger("distributed.worker").filters
