"""connect(): nothing, an address, a scheduler file, a Client, a cluster, DASK_SCHEDULER_ADDRESS,
and a real remote scheduler started as `dask scheduler` / `dask worker` processes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import dask
import pandas as pd
import pytest
from conftest import free_port

import dbatch
from dbatch import ByCount, Derive, Files, Map, ParquetSink, Pipeline
from dbatch.cluster import show_dashboard_link

LINK_TEMPLATE = "https://proxy.example.org/user/me/proxy/{port}/status"


def python(script: str, env: dict[str, str] | None = None, timeout: float = 120):
    """Run ``script`` in a fresh interpreter (no client of this test session around)."""
    base = {k: v for k, v in os.environ.items() if k != "DASK_SCHEDULER_ADDRESS"}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**base, **(env or {})},
    )


def stop(proc: subprocess.Popen) -> None:
    """Stop a process started in its own session, and every child of it."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=15)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=15)


# -- connect() without a target, in a fresh process ------------------------------------------

NEW_LOCAL_CLUSTER = """
import json

import psutil

import dbatch

if __name__ == "__main__":
    client = dbatch.connect()
    me = psutil.Process()
    listening = sorted(
        {
            f"{c.laddr.ip}:{c.laddr.port}"
            for p in [me, *me.children(recursive=True)]
            for c in p.net_connections(kind="inet")
            if c.status == psutil.CONN_LISTEN
        }
    )
    print(
        "RESULT "
        + json.dumps(
            {
                "scheduler": client.scheduler.address,
                "workers": sorted(client.scheduler_info()["workers"]),
                "listening": listening,
                "link": client.dashboard_link,
                "owns": getattr(client, "_dbatch_owns_cluster", False),
            }
        )
    )
    cluster = client.cluster
    client.close()
    cluster.close()
"""


@pytest.mark.slow
def test_connect_with_nothing_starts_a_loopback_local_cluster_and_prints_the_link():
    proc = python(
        NEW_LOCAL_CLUSTER,
        env={"DASK_DISTRIBUTED__DASHBOARD__LINK": LINK_TEMPLATE},
    )
    assert proc.returncode == 0, proc.stderr
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
    info = json.loads(line.removeprefix("RESULT "))
    assert info["owns"] is True
    assert info["scheduler"].startswith("tcp://127.0.0.1:")
    assert len(info["workers"]) == dask.config.get("dbatch.cluster.n-workers")
    assert all(w.startswith("tcp://127.0.0.1:") for w in info["workers"])
    # Scheduler, workers, nannies and the dashboard all listen on the loopback interface only.
    assert info["listening"], "nothing listening?"
    assert all(addr.startswith("127.0.0.1:") for addr in info["listening"]), info["listening"]
    # The printed link follows distributed.dashboard.link, with the dashboard's real port.
    assert info["link"].startswith("https://proxy.example.org/user/me/proxy/")
    port = info["link"].split("/proxy/")[1].split("/")[0]
    assert f"127.0.0.1:{port}" in info["listening"]
    assert f"Dask dashboard: {info['link']}" in proc.stderr  # stdout is for results


def test_connect_with_nothing_returns_the_active_client(client):
    assert dbatch.connect(show_link=False) is client


def test_connect_with_a_client_returns_it(client):
    assert dbatch.connect(client) is client


def test_dashboard_link_honours_the_config(client, capsys):
    with dask.config.set({"distributed.dashboard.link": LINK_TEMPLATE}):
        show_dashboard_link(client)
    shown = capsys.readouterr()
    port = client.scheduler_info()["services"]["dashboard"]
    link = f"Dask dashboard: https://proxy.example.org/user/me/proxy/{port}/status"
    assert shown.err.strip() == link and shown.out == ""


def test_connect_with_an_address_string(client):
    other = dbatch.connect(client.scheduler.address, show_link=False)
    try:
        assert other is not client
        assert other.scheduler.address == client.scheduler.address
        assert other.submit(sum, [1, 2, 3]).result() == 6
    finally:
        other.close()


def test_connect_with_a_cluster_object():
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=1, threads_per_worker=1, processes=False, dashboard_address="127.0.0.1:0"
    ) as cluster:
        c = dbatch.connect(cluster, show_link=False)
        try:
            assert c.scheduler.address == cluster.scheduler_address
            assert c.submit(lambda x: x + 1, 1).result() == 2
        finally:
            c.close()


def test_connect_refuses_what_it_cannot_use():
    with pytest.raises(TypeError, match="address, a scheduler file, a Client or a cluster"):
        dbatch.connect(42)


# -- a real remote scheduler -------------------------------------------------------------------


@pytest.fixture(scope="module")
def remote(tmp_path_factory):
    """`dask scheduler` and one `dask worker` process on 127.0.0.1, stopped at the end."""
    dask_cli = shutil.which("dask")
    assert dask_cli, "the dask command comes with dask"
    root = tmp_path_factory.mktemp("remote")
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    scheduler_file = root / "scheduler.json"
    procs: list[subprocess.Popen] = []
    logs = []

    def start(*args: str) -> None:
        log = open(root / f"{len(procs)}.log", "w")  # noqa: SIM115 - closed below
        logs.append(log)
        procs.append(
            subprocess.Popen(
                [dask_cli, *args],
                cwd=root,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, so killpg stops its children
            )
        )

    try:
        start(
            "scheduler",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--no-dashboard",
            "--scheduler-file",
            str(scheduler_file),
        )
        deadline = time.time() + 60
        while not scheduler_file.exists() and time.time() < deadline:
            time.sleep(0.1)
        assert scheduler_file.exists(), (root / "0.log").read_text()
        start(
            "worker",
            address,
            "--nworkers",
            "1",
            "--nthreads",
            "1",
            "--host",
            "127.0.0.1",
            "--no-dashboard",
            "--local-directory",
            str(root / "worker-space"),
        )
        from distributed import Client

        with Client(address, timeout="30s") as c:
            c.wait_for_workers(1, timeout=60)
        yield {"address": address, "scheduler_file": scheduler_file, "root": root}
    finally:
        for proc in reversed(procs):
            stop(proc)
        for log in logs:
            log.close()


def write_inputs(root: Path, n_files: int = 4) -> None:
    (root / "in").mkdir(parents=True, exist_ok=True)
    for f in range(n_files):
        rows = "\n".join(f"{f}-{i},{i}" for i in range(20))
        (root / "in" / f"part-{f}.csv").write_text("id,amount\n" + rows + "\n")


def test_pipeline_runs_through_a_remote_scheduler(remote, tmp_path):
    write_inputs(tmp_path)
    pipeline = Pipeline(
        Files(str(tmp_path / "in" / "*.csv")),
        ParquetSink(str(tmp_path / "out")),
        steps=[Derive({"double": "amount * 2"}), Map(lambda df: df.assign(pid=os.getpid()))],
        batching=ByCount(2),
        name="remote",
        workdir=str(tmp_path / "work"),
    )
    client = dbatch.connect(remote["address"], show_link=False)
    try:
        worker_pids = set(client.run(os.getpid).values())
        result = pipeline.run(client=client)
    finally:
        client.close()
    assert result.status == "succeeded", result
    assert result.batches_frame()["state"].tolist() == ["committed", "committed"]
    out = pd.read_parquet(tmp_path / "out")
    assert len(out) == 80 and (out["double"] == out["amount"] * 2).all()
    assert set(out["pid"]) <= worker_pids and os.getpid() not in set(out["pid"])


def test_connect_with_a_scheduler_file(remote):
    client = dbatch.connect(str(remote["scheduler_file"]), show_link=False)
    try:
        assert client.scheduler.address == remote["address"]
        assert len(client.scheduler_info()["workers"]) == 1
    finally:
        client.close()


@pytest.mark.slow
def test_connect_follows_dask_scheduler_address(remote):
    proc = python(
        """
        import dbatch

        client = dbatch.connect(show_link=False)
        print("ADDRESS", client.scheduler.address, len(client.scheduler_info()["workers"]))
        client.close()
        """,
        env={"DASK_SCHEDULER_ADDRESS": remote["address"]},
    )
    assert proc.returncode == 0, proc.stderr
    assert f"ADDRESS {remote['address']} 1" in proc.stdout


JOB = """\
name: remote-cli
source: {type: files, path: in/*.csv}
batching: {count: 1}
steps:
  - map: {function: "remote_steps:mark", on: pandas}
sink: {type: parquet, path: out/result}
"""


@pytest.mark.slow
def test_cli_run_with_scheduler_option(remote, tmp_path):
    write_inputs(tmp_path)
    # A module next to the job file: the remote worker cannot import it, so it travels by value.
    (tmp_path / "remote_steps.py").write_text(
        "import os\n\ndef mark(df):\n    return df.assign(pid=os.getpid(), tag='remote')\n"
    )
    (tmp_path / "job.yaml").write_text(JOB)
    proc = subprocess.run(
        [
            shutil.which("dbatch") or "dbatch",
            "run",
            str(tmp_path / "job.yaml"),
            "--scheduler",
            remote["address"],
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["status"] == "succeeded"
    assert summary["batches_committed"] == 4 and summary["rows_out"] == 80
    out = pd.read_parquet(tmp_path / "out" / "result")
    assert set(out["tag"]) == {"remote"}
    from distributed import Client

    with Client(remote["address"]) as c:
        assert set(out["pid"]) == set(c.run(os.getpid).values())


def test_job_file_cluster_key_names_the_scheduler(remote, tmp_path):
    from click.testing import CliRunner

    from dbatch.cli import main

    write_inputs(tmp_path)
    # A scheduler file next to the job file, named relative to it.
    shutil.copy(remote["scheduler_file"], tmp_path / "sched.json")
    (tmp_path / "job.yaml").write_text(
        "name: remote-key\n"
        "source: {type: files, path: in/*.csv}\n"
        "batching: {count: 2}\n"
        "sink: {type: parquet, path: out}\n"
        "cluster: {scheduler: sched.json}\n"
    )
    result = CliRunner().invoke(main, ["run", str(tmp_path / "job.yaml"), "--json"])
    assert result.exit_code == 0, result.output + result.stderr
    summary = json.loads(result.stdout)
    assert summary["status"] == "succeeded" and summary["batches_committed"] == 2
    from dbatch.ledger import Ledger

    ledger = Ledger(f"sqlite:///{tmp_path / '.dbatch' / 'ledger.sqlite'}")
    workers = set(ledger.batches_frame("remote-key")["worker"])
    ledger.close()
    from distributed import Client

    with Client(remote["address"]) as c:
        remote_pids = {str(pid) for pid in c.run(os.getpid).values()}
    assert {w.rsplit(":", 1)[1] for w in workers} == remote_pids  # recorded as host:pid


STARTED_WHILE_PLANNING = """
import json
import sys

import dask
import pyarrow as pa
import pyarrow.parquet as pq

from dbatch import ByCount, Files, Filter, ParquetSink, Pipeline
from dbatch.cluster import LocalStart, has_active_client

if __name__ == "__main__":
    folder = sys.argv[1]
    pq.write_table(pa.table({"a": [1, 2, 3]}), f"{folder}/a.parquet")
    start = LocalStart(n_workers=1, threads_per_worker=1)
    returned_at_once = start._client is None  # the workers boot while the run plans
    p = Pipeline(Files(f"{folder}/*.parquet", schema={"a": "int64"}),
                 ParquetSink(f"{folder}/out"), steps=[Filter("a > 1")],
                 batching=ByCount(1), name="j", workdir=f"{folder}/work")
    result = p.run(client=start, progress=False)
    handed = start._client
    start.close()  # a no-op: the run owned the cluster and closed it
    # A second run would have nothing to do: no cluster is started for it; forced, one is.
    from dbatch.ledger import Ledger
    from dbatch.runner import RunOptions, _early_start

    idle = _early_start(p, p.plan(), Ledger(p.ledger_url()), RunOptions())
    with dask.config.set({"dbatch.cluster.n-workers": 1}):
        unused = _early_start(p, p.plan(), Ledger(p.ledger_url()), RunOptions(force=True))
    unused._thread.join()
    unused_client = unused._client
    unused.close()
    print("RESULT " + json.dumps({
        "returned_at_once": returned_at_once,
        "status": result.status,
        "rows_out": result.rows_out,
        "run_cluster": handed.cluster.status.name,
        "unused_cluster": unused_client.cluster.status.name,
        "active_client": has_active_client(),
        "idle": idle is None,
        "forced": type(unused).__name__,
    }))
"""


@pytest.mark.slow
def test_a_cluster_started_while_planning_is_handed_to_the_run_and_closed(tmp_path):
    script = tmp_path / "start.py"
    script.write_text(STARTED_WHILE_PLANNING)
    proc = subprocess.run(
        [sys.executable, str(script), str(tmp_path)], capture_output=True, text=True, timeout=180
    )
    assert proc.returncode == 0, proc.stderr
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
    info = json.loads(line.removeprefix("RESULT "))
    assert info["returned_at_once"] is True
    assert info["status"] == "succeeded" and info["rows_out"] == 2
    assert info["run_cluster"] == "closed"  # the run owned it
    assert info["unused_cluster"] == "closed"  # never handed over: close() shut it down
    assert info["active_client"] is False
    assert info["idle"] is True  # nothing to do: no cluster started
    assert info["forced"] == "LocalStart"
