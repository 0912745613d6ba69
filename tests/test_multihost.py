"""Hosts of their own: the scheduler, two worker hosts and the driver each in a Linux network
namespace of this machine, joined by veth pairs to a bridge, with their own addresses; TLS with
certificates made here; the files on a path every host sees. One worker host dies in the middle
of a run, and the output is the LocalCluster's, byte for byte. Plain TCP stays refused.

Needs root and iproute2 (``ip netns``); skips without them (fails under DBATCH_STRICT_SERVICES=1).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from conftest import unavailable
from cryptography.hazmat.primitives import serialization
from test_security import _ca, _leaf

import dbatch
from dbatch import Pipeline
from dbatch.spec import load_job
from dbatch.testing import data_files, leftovers

SUBNET = "10.77.0"
HOSTS = {"sched": 1, "w1": 11, "w2": 12, "driver": 20}
WORKERS_PER_HOST = 2
PORT = 8786
N_FILES = 12
ROWS = 100
PAUSE = 0.5  # seconds in each batch: long enough to kill a host while it is inside one
PREFIX = "dbt"  # namespaces are dbt<pid of the test process>-<host>

# The scheduler and the workers: TLS only, and what dbatch sets on the clusters it starts.
SERVICE_ENV = {
    "DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION": "True",
    "DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": "3",
    "DASK_DISTRIBUTED__SCHEDULER__WORKER_SATURATION": "1.0",
}


def ip(*args: str) -> str:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout


def namespaces_work() -> None:
    """Skip (or fail, under DBATCH_STRICT_SERVICES=1) where namespaces cannot be made."""
    if sys.platform != "linux":
        unavailable("network namespaces are a Linux feature")
    if shutil.which("ip") is None:
        unavailable("needs iproute2's `ip` for network namespaces (apt-get install iproute2)")
    if os.geteuid() != 0:
        unavailable("needs root to make network namespaces (ip netns add)")
    probe = f"{PREFIX}{os.getpid()}-probe"
    try:
        ip("netns", "add", probe)
        ip("-n", probe, "link", "add", "br0", "type", "bridge")
        ip("-n", probe, "link", "add", "probe0", "type", "veth", "peer", "name", "probe1")
    except RuntimeError as e:
        unavailable(f"cannot make network namespaces, bridges and veth pairs here: {e}")
    finally:
        subprocess.run(["ip", "netns", "del", probe], capture_output=True, check=False)


class Network:
    """One namespace a host plus a switch namespace with a bridge that joins them.

    Nothing is added to this machine's own namespace: each veth pair is made with one
    end in the host's namespace (``eth0``) and the other on the switch's bridge.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.tag = f"{PREFIX}{os.getpid()}"
        self.made: list[str] = []
        self.started: list[subprocess.Popen] = []

    def ns(self, host: str) -> str:
        return f"{self.tag}-{host}"

    @staticmethod
    def address(host: str) -> str:
        return f"{SUBNET}.{HOSTS[host]}"

    def up(self) -> None:
        remove_stale_namespaces()
        switch = self.ns("switch")
        ip("netns", "add", switch)
        self.made.append(switch)
        ip("-n", switch, "link", "add", "br0", "type", "bridge")
        ip("-n", switch, "link", "set", "br0", "up")
        for host in HOSTS:
            ns = self.ns(host)
            ip("netns", "add", ns)
            self.made.append(ns)
            port = f"to-{host}"
            veth = ("type", "veth", "peer", "name", port, "netns", switch)
            ip("link", "add", "eth0", "netns", ns, *veth)
            ip("-n", switch, "link", "set", port, "master", "br0", "up")
            ip("-n", ns, "addr", "add", f"{self.address(host)}/24", "dev", "eth0")
            ip("-n", ns, "link", "set", "eth0", "up")
            ip("-n", ns, "link", "set", "lo", "up")

    def popen(self, host: str, args: list[str], name: str, env: dict) -> subprocess.Popen:
        """Start ``args`` on ``host``; its output goes to ``<name>.out`` / ``<name>.err``."""
        with (
            open(self.folder / f"{name}.out", "w") as out,
            open(self.folder / f"{name}.err", "w") as err,
        ):
            proc = subprocess.Popen(
                ["ip", "netns", "exec", self.ns(host), *args],
                stdout=out,
                stderr=err,
                env=env,
                cwd=self.folder,
            )
        self.started.append(proc)
        return proc

    def run(self, host: str, args: list[str], env: dict, timeout: float = 120):
        return subprocess.run(
            ["ip", "netns", "exec", self.ns(host), *args],
            capture_output=True,
            text=True,
            env=env,
            cwd=self.folder,
            timeout=timeout,
        )

    def pids(self, host: str) -> set[int]:
        """Every process on ``host`` (``ip netns pids``: pids as this machine numbers them)."""
        return {int(p) for p in ip("netns", "pids", self.ns(host)).split()}

    def kill_host(self, host: str) -> None:
        """SIGKILL every process on ``host``, as if the machine had lost its power."""
        kill_all(self.ns(host))

    def down(self) -> None:
        for ns in self.made:
            kill_all(ns)
        for proc in self.started:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        for ns in reversed(self.made):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)


def kill_all(ns: str) -> None:
    for pid in ip("netns", "pids", ns).split():
        try:
            os.kill(int(pid), signal.SIGKILL)
        except ProcessLookupError:
            pass


def remove_stale_namespaces() -> None:
    """Namespaces left by a test process that was killed before it could remove them."""
    for name in (line.split()[0] for line in ip("netns", "list").splitlines() if line.strip()):
        owner = name.removeprefix(PREFIX).partition("-")[0]
        if name.startswith(PREFIX) and owner.isdigit() and not Path(f"/proc/{owner}").exists():
            kill_all(name)
            subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)


def certificates(folder: Path) -> dict[str, Any]:
    """A CA, and a certificate and key for each host (valid for its address), made here."""
    folder.mkdir()
    ca_key, ca_cert = _ca("dbatch multi-host test CA")
    ca = folder / "ca.pem"
    ca.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    found: dict[str, Any] = {"ca": str(ca)}
    for host in HOSTS:
        found[host] = _leaf(ca_key, ca_cert, host, folder, (Network.address(host),))
    return found


PROBE = """\
import json, os, sys
from distributed import Client, Security

address, ca, cert, key, n = sys.argv[1:]
security = Security(tls_ca_file=ca, tls_client_cert=cert, tls_client_key=key, require_encryption=True)
with Client(address, security=security, timeout=60) as client:
    client.wait_for_workers(int(n), timeout=60)
    print(json.dumps(client.run(os.getpid)))
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """The scheduler on its host, two worker processes on each worker host, all over TLS."""
    namespaces_work()
    folder = tmp_path_factory.mktemp("hosts")
    net = Network(folder)
    try:
        net.up()
        certs = certificates(folder / "tls")
        address = f"tls://{net.address('sched')}:{PORT}"
        env = {**os.environ, **SERVICE_ENV}

        def tls(host: str) -> list[str]:
            cert, key = certs[host]
            return ["--tls-ca-file", certs["ca"], "--tls-cert", cert, "--tls-key", key]

        net.popen(
            "sched",
            [sys.executable, "-m", "distributed.cli.dask_scheduler", "--protocol", "tls"]
            + ["--host", net.address("sched"), "--port", str(PORT), "--no-dashboard"]
            + tls("sched"),
            "scheduler",
            env,
        )
        for host in ("w1", "w2"):
            net.popen(
                host,
                [sys.executable, "-m", "distributed.cli.dask_worker", address]
                + ["--host", net.address(host), "--name", host, "--no-dashboard"]
                + ["--nworkers", str(WORKERS_PER_HOST), "--nthreads", "1", "--death-timeout", "60"]
                + ["--local-directory", str(folder / f"scratch-{host}")]
                + tls(host),
                f"worker-{host}",
                env,
            )
        # From the driver's host, as a client would: connect over TLS and wait for every worker.
        cert, key = certs["driver"]
        n = 2 * WORKERS_PER_HOST
        probe = net.run(
            "driver", [sys.executable, "-c", PROBE, address, certs["ca"], cert, key, str(n)], env
        )
        assert probe.returncode == 0, (probe.stderr[-3000:], logs(folder))
        pids = {worker: int(pid) for worker, pid in json.loads(probe.stdout).items()}
        yield {"net": net, "certs": certs, "address": address, "workers": pids, "folder": folder}
    finally:
        net.down()


def logs(folder: Path) -> str:
    """The last lines the scheduler and the workers wrote, for a failing assertion."""
    return "\n".join(
        f"--- {p.name}\n" + "\n".join(p.read_text().splitlines()[-15:])
        for p in sorted(folder.glob("*.err"))
    )


STEPS = '''\
import os
import time
from pathlib import Path

MARKS = Path({marks!r})


def slow(df):
    """Record which process starts which file, then take a while (to be cut short)."""
    MARKS.mkdir(exist_ok=True)
    first = str(df["id"].iloc[0]).split("-")[0]
    (MARKS / f"started-{{first}}-{{os.getpid()}}-{{time.time_ns()}}").touch()
    time.sleep({pause})
    return df
'''


@pytest.fixture(scope="module")
def landing(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("shared") / "in"
    root.mkdir()
    for f in range(N_FILES):
        lines = ["id,account,amount"] + [f"{f}-{i},A{i % 7},{i * 13 + f}" for i in range(ROWS)]
        (root / f"in-{f:02d}.csv").write_text("\n".join(lines) + "\n")
    return root


def write_job(folder: Path, landing: Path, pause: float = PAUSE) -> Path:
    """The job over the shared files; its steps module sits next to it (shipped by value)."""
    folder.mkdir(parents=True)
    (folder / "netsteps.py").write_text(STEPS.format(marks=str(folder / "marks"), pause=pause))
    job = folder / "job.yaml"
    job.write_text(
        textwrap.dedent(
            f"""\
            name: multi-host
            source:
              type: files
              path: {landing}/*.csv
              schema: {{id: string, account: string, amount: int64}}
            batching: {{count: 1}}
            steps:
              - map: netsteps:slow
            sink: {{type: parquet, path: out}}
            workdir: work
            """
        )
    )
    return job


def starts(folder: Path) -> list[tuple[str, int, int]]:
    """``(file number, pid, time in ns)`` of every batch start, oldest first."""
    found = []
    for mark in (folder / "marks").glob("started-*"):
        file, pid, when = mark.name.removeprefix("started-").split("-")
        found.append((file, int(pid), int(when)))
    return sorted(found, key=lambda s: s[2])


def profile_env(cluster: dict, name: str, address: str) -> dict:
    """``dbatch.clusters.<name>`` as a user would set it: environment variables."""
    cert, key = cluster["certs"]["driver"]
    key_of = f"DASK_DBATCH__CLUSTERS__{name.upper()}__"
    return {
        **os.environ,
        f"{key_of}ADDRESS": address,
        f"{key_of}SECURITY__CA": cluster["certs"]["ca"],
        f"{key_of}SECURITY__CERT": cert,
        f"{key_of}SECURITY__KEY": key,
        "DASK_DBATCH__CLUSTER__CONNECT_TIMEOUT": "3s",
    }


@contextlib.contextmanager
def loaded(job: Path) -> Iterator[Pipeline]:
    """The job file's pipeline; its steps module is forgotten after (each job has its own)."""
    try:
        yield load_job(job).pipeline
    finally:
        sys.modules.pop("netsteps", None)
        if str(job.parent.resolve()) in sys.path:
            sys.path.remove(str(job.parent.resolve()))


def reference_run(folder: Path, landing: Path, client) -> Path:
    """The same job on the session's LocalCluster: the output to compare with."""
    with loaded(write_job(folder, landing, pause=0.0)) as pipeline:  # the pause changes no byte
        result = pipeline.run(client=client)
    assert result.status == "succeeded", result
    return folder / "out"


@pytest.mark.slow
def test_a_worker_host_dies_mid_run_and_nothing_is_lost_or_doubled(
    cluster, landing, tmp_path, client
):
    net: Network = cluster["net"]
    host1 = {pid for worker, pid in cluster["workers"].items() if net.address("w1") in worker}
    host2 = {pid for worker, pid in cluster["workers"].items() if net.address("w2") in worker}
    assert len(host1) == len(host2) == WORKERS_PER_HOST, cluster["workers"]
    assert host1 <= net.pids("w1") and host2 <= net.pids("w2")  # each on its own host

    job = write_job(tmp_path / "net", landing)
    run = net.popen(
        "driver",
        [sys.executable, "-m", "dbatch.cli", "run", str(job), "--cluster", "net", "--json"],
        "driver",
        profile_env(cluster, "net", cluster["address"]),
    )
    # Strike host 1 just after one of its workers, done with a batch, starts its next one.
    deadline = time.monotonic() + 60
    interrupted, killed_at = None, 0
    while interrupted is None:
        assert run.poll() is None, ("the run ended before host 1 was killed", logs(net.folder))
        assert time.monotonic() < deadline, ("host 1 ran no second batch", starts(job.parent))
        seen = starts(job.parent)
        second = [s for s in seen if s[1] in host1 and [t[1] for t in seen].count(s[1]) > 1]
        if second:
            killed_at = time.time_ns()
            net.kill_host("w1")
            interrupted = second[-1][0]
        time.sleep(0.01)
    run.wait(timeout=90)
    summary_text = (net.folder / "driver.out").read_text()
    assert run.returncode == 0, (summary_text, (net.folder / "driver.err").read_text()[-3000:])
    summary = json.loads(summary_text)
    assert summary["status"] == "succeeded" and summary["batches_committed"] == N_FILES
    assert net.pids("w1") == set()  # host 1 is gone for good: nothing restarted it

    # The batch host 1 was inside of was started again, on host 2, after the kill.
    again = [s for s in starts(job.parent) if s[0] == interrupted and s[2] > killed_at]
    assert again and all(pid in host2 for _, pid, _ in again), (interrupted, starts(job.parent))
    assert {pid for _, pid, _ in starts(job.parent)} <= host1 | host2

    reference = reference_run(tmp_path / "ref", landing, client)
    out = job.parent / "out"
    assert data_files(out) == data_files(reference)  # byte-identical data files
    frame, want = pd.read_parquet(out), pd.read_parquet(reference)
    assert len(frame) == len(want) == N_FILES * ROWS
    assert frame["id"].is_unique  # nothing doubled
    assert set(frame["id"]) == set(want["id"])  # nothing lost
    with loaded(job) as pipeline:
        plan = pipeline.plan()
    assert leftovers(pipeline.work_area(), out) == []
    ledger = dbatch.Ledger(pipeline.ledger_url())
    try:
        states = ledger.batches_frame(pipeline.name)
    finally:
        ledger.close()
    assert len(states) == N_FILES and (states["state"] == "committed").all()
    assert sorted(states["batch_id"]) == sorted(b.id for b in plan)
    # The ledger names each batch's worker as host:pid; the batch cut short was host 2's.
    committed_by = {row.batch_id: int(row.worker.rpartition(":")[2]) for row in states.itertuples()}
    assert set(committed_by.values()) <= host1 | host2
    redone = next(b.id for b in plan if b.keys[0].endswith(f"/in-{int(interrupted):02d}.csv"))
    assert committed_by[redone] in host2, (redone, committed_by)


def test_plain_tcp_to_the_scheduler_host_is_refused(cluster, landing, tmp_path):
    net: Network = cluster["net"]
    job = write_job(tmp_path / "plain", landing)
    plain = cluster["address"].replace("tls://", "tcp://")
    command = [sys.executable, "-m", "dbatch.cli", "run", str(job), "--cluster", "plain"]
    refused = net.run("driver", command, profile_env(cluster, "plain", plain))
    assert refused.returncode == 2, refused.stderr
    assert f"refusing to connect to {plain} without TLS" in refused.stderr
    assert "Use a tls:// address" in refused.stderr and "Traceback" not in refused.stderr
    # Told the network is trusted, dbatch tries; the TLS-only scheduler does not answer it.
    tried = net.run("driver", [*command, "--insecure"], profile_env(cluster, "plain", plain))
    assert tried.returncode == 2, tried.stderr
    assert f"cannot connect to the Dask scheduler at {plain}" in tried.stderr
    assert "Traceback" not in tried.stderr
    assert not (job.parent / "out").exists() and not (job.parent / "marks").exists()
