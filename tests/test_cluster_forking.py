"""A LocalCluster dbatch starts forks its workers from a server that imported their stack,
stops that server when it closes, and `dbatch run` leaves no process behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/environ").exists(), reason="looks for leftover processes in /proc"
)


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "DASK_SCHEDULER_ADDRESS"}


def _carrying(marker: str) -> list[str]:
    """The living processes whose environment holds ``marker`` (inherited by descendants)."""
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if marker.encode() in environ.read_bytes():
                found.append((environ.parent / "cmdline").read_bytes().decode(errors="replace"))
        except OSError:  # ended meanwhile, or not ours to read
            pass
    return found


FORKED = """
import json, os, sys
from multiprocessing import forkserver

import dask.config

import dbatch
from dbatch.cluster import close

def seen():
    return {"duckdb": "duckdb" in sys.modules, "pyarrow": "pyarrow.parquet" in sys.modules,
            "ppid": os.getppid(), "omp": os.environ.get("OMP_NUM_THREADS")}

if __name__ == "__main__":
    with dask.config.set({"dbatch.cluster.start-method": sys.argv[1]}):
        client = dbatch.connect(n_workers=2, show_link=False)
    workers = list(client.run(seen).values())  # the first task: nothing imported it yet
    server = forkserver._forkserver._forkserver_pid
    close(client)
    print("RESULT " + json.dumps({"workers": workers, "server": server, "driver": os.getpid(),
                                  "after": forkserver._forkserver._forkserver_pid}))
"""


def _run_script(tmp_path: Path, script: str, *args: str) -> dict:
    path = tmp_path / "script.py"
    path.write_text(textwrap.dedent(script))
    proc = subprocess.run(
        [sys.executable, str(path), *args], capture_output=True, text=True, timeout=180, env=_env()
    )
    assert proc.returncode == 0, proc.stderr
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line.removeprefix("RESULT "))


@pytest.mark.slow
def test_workers_fork_from_a_server_that_imported_their_stack_and_it_stops(tmp_path):
    info = _run_script(tmp_path, FORKED, "forkserver")
    assert len(info["workers"]) == 2
    for w in info["workers"]:
        assert w["duckdb"] and w["pyarrow"]  # imported once, by the server
        assert w["ppid"] == info["server"] != info["driver"]
        assert w["omp"] == "1"  # distributed's pre-spawn-environ, set before the server started
    assert info["after"] is None  # closing the cluster stopped the server
    assert not Path(f"/proc/{info['server']}").exists()


@pytest.mark.slow
def test_spawn_start_method_gives_fresh_interpreters(tmp_path):
    info = _run_script(tmp_path, FORKED, "spawn")
    for w in info["workers"]:
        assert not w["duckdb"]  # a fresh interpreter imports it in its first batch
        assert w["ppid"] == info["driver"]
        assert w["omp"] == "1"
    assert info["server"] is None


SHARED_SERVER = """
import json, os, sys
from multiprocessing import forkserver

import dask.config
from distributed import Client, LocalCluster

import dbatch
from dbatch.cluster import LocalStart, close

if __name__ == "__main__":
    # The user's own cluster, forked from the same server.
    with dask.config.set({"distributed.worker.multiprocessing-method": "forkserver"}):
        theirs = LocalCluster(n_workers=1, threads_per_worker=1, host="127.0.0.1",
                              dashboard_address=":0", worker_dashboard_address=None)
    their_client = Client(theirs)
    ours = dbatch.connect(LocalStart(n_workers=1), show_link=False)  # not the active client
    close(ours)
    alive = forkserver._forkserver._forkserver_pid is not None
    answer = their_client.submit(sum, [1, 2, 3]).result()
    their_client.close()
    theirs.close()
    print("RESULT " + json.dumps({"alive": alive, "answer": answer}))
"""


@pytest.mark.slow
def test_closing_dbatchs_cluster_leaves_a_server_that_still_serves_another(tmp_path):
    info = _run_script(tmp_path, SHARED_SERVER)
    assert info == {"alive": True, "answer": 6}


@pytest.mark.slow
def test_dbatch_run_exits_with_its_status_and_leaves_no_process(tmp_path):
    pq.write_table(pa.table({"a": [1, 2, 3]}), tmp_path / "a.parquet")
    pq.write_table(pa.table({"a": [4, 5]}), tmp_path / "b.parquet")
    job = tmp_path / "job.yaml"
    job.write_text(
        "name: cold\n"
        "source: {type: files, path: '*.parquet', format: parquet, schema: {a: int64}}\n"
        "batching: {count: 1}\n"
        "steps: [{filter: 'a > 1'}]\n"
        "sink: {type: parquet, path: out}\n"
    )
    marker = f"DBATCH_TEST_RUN={uuid.uuid4().hex}"
    key, value = marker.split("=")
    command = [sys.executable, "-m", "dbatch", "run", str(job), "--json", "--workers", "2"]
    proc = subprocess.run(
        command, capture_output=True, text=True, timeout=180, env={**_env(), key: value}
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["status"] == "succeeded" and result["rows_out"] == 4
    assert _carrying(marker) == []  # no worker, fork server or resource tracker is left
    # A wrong job file: status 2 and the error on standard error, as before.
    proc = subprocess.run(
        [*command[:4], str(tmp_path / "missing.yaml")], capture_output=True, text=True, env=_env()
    )
    assert proc.returncode == 2 and "does not exist" in proc.stderr
