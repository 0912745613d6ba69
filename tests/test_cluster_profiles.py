"""Cluster profiles: dbatch.clusters.<name> in dask config (and environment variables), a job
file's cluster:, TLS files, a LocalCluster, any cluster class with adapt bounds, install hints."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import dask
import pandas as pd
import pytest
import test_security
from test_cli import write_job

import dbatch
from dbatch import ByCount, Files, ParquetSink, Pipeline
from dbatch.cluster import (
    Scaler,
    close,
    cluster_from_config,
    connect,
    named_profile,
    owns_cluster,
    scaler_of,
)
from dbatch.cluster.profiles import CLUSTER_PACKAGES, parse_profile
from dbatch.errors import JobSpecError

tls_cluster = test_security.tls_cluster  # the TLS-only scheduler, with certificates made there

IN_PROCESS = {
    "processes": False,
    "dashboard_address": ":0",
    "threads_per_worker": 1,
}


def pipeline_over(root: Path, n_files: int, name: str) -> Pipeline:
    (root / "in").mkdir(parents=True, exist_ok=True)
    for i in range(n_files):
        (root / "in" / f"f{i}.csv").write_text(f"id,v\n{i}-a,{i}\n{i}-b,{i * 10}\n")
    return Pipeline(
        Files(str(root / "in" / "*.csv")),
        ParquetSink(str(root / "out")),
        batching=ByCount(1),
        name=name,
        workdir=str(root / "work"),
    )


def read_sorted(path: Path) -> pd.DataFrame:
    frame = pd.read_parquet(path)
    return frame.sort_values(list(frame.columns)).reset_index(drop=True)


def wait_for_workers(cluster, n: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while len(cluster.scheduler_info["workers"]) != n:
        assert time.monotonic() < deadline, (n, cluster.scheduler_info["workers"])
        time.sleep(0.05)


# -- a cluster class by import path, scaled to the batches left ------------------------------


def test_a_class_profile_runs_a_job_within_its_bounds_and_is_closed(tmp_path, client):
    profile = {
        "class": "distributed.LocalCluster",
        "kwargs": {**IN_PROCESS, "n_workers": 0},
        "adapt": {"minimum": 0, "maximum": 2},
    }
    with dask.config.set({"dbatch.clusters.grow": profile}):
        started = dbatch.connect(cluster="grow", show_link=False)
    cluster = started.cluster
    scaler = scaler_of(started)
    assert owns_cluster(started) and scaler is not None
    assert scaler.history == [0]  # nothing to do yet: the minimum
    try:
        result = pipeline_over(tmp_path / "a", 5, "grow").run(client=started)
        assert result.status == "succeeded" and result.committed == 5
        # Five batches left, one thread a worker: as many workers as allowed, never more.
        assert max(scaler.history) == 2 and scaler.history[1] == 2
    finally:
        close(started)
    assert cluster.status.name == "closed"
    # The same job on the session's LocalCluster writes the same rows.
    assert pipeline_over(tmp_path / "b", 5, "plain").run(client=client).status == "succeeded"
    pd.testing.assert_frame_equal(read_sorted(tmp_path / "a/out"), read_sorted(tmp_path / "b/out"))


def test_the_scaler_grows_to_the_maximum_and_shrinks_to_idle_workers_only():
    from distributed import Client, LocalCluster

    with (
        LocalCluster(n_workers=0, **IN_PROCESS) as cluster,
        Client(cluster) as c,
    ):
        scaler = Scaler(cluster, minimum=1, maximum=3, client=c)
        assert scaler.wanted(0) == 1 and scaler.wanted(2) == 2 and scaler.wanted(99) == 3
        assert scaler.demand(99) == 3
        wait_for_workers(cluster, 3)
        assert scaler.demand(1) == 1  # the tail of a run: idle workers are retired
        wait_for_workers(cluster, 1)
        assert scaler.demand(0) == 1  # never below the minimum
        assert scaler.history == [3, 1]
        two = Scaler(cluster, minimum=0, maximum=10, threads_per_worker=4, client=c)
        assert two.wanted(9) == 3  # nine batches, four threads a worker


def test_profiles_from_environment_variables_run_the_job_on_the_command_line(tmp_path):
    """DASK_DBATCH__CLUSTERS__<NAME>__CLASS / __KWARGS__<KEY>, a cluster class of the user's."""
    (tmp_path / "marked.py").write_text(
        textwrap.dedent(
            """\
            from pathlib import Path

            from distributed import LocalCluster


            class MarkedCluster(LocalCluster):
                def __init__(self, marker, **kwargs):
                    self.marker = Path(marker)
                    self.marker.write_text(f"started {kwargs['n_workers']}\\n")
                    super().__init__(**kwargs)

                def close(self, *args, **kwargs):
                    with self.marker.open("a") as f:
                        f.write("closed\\n")
                    return super().close(*args, **kwargs)
            """
        )
    )
    job = write_job(tmp_path, n_files=3)
    marker = tmp_path / "marker.txt"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]),
        "DASK_DBATCH__CLUSTERS__ENVY__CLASS": "marked.MarkedCluster",
        "DASK_DBATCH__CLUSTERS__ENVY__KWARGS__MARKER": str(marker),
        "DASK_DBATCH__CLUSTERS__ENVY__KWARGS__N_WORKERS": "1",
        "DASK_DBATCH__CLUSTERS__ENVY__KWARGS__PROCESSES": "False",
        "DASK_DBATCH__CLUSTERS__ENVY__KWARGS__DASHBOARD_ADDRESS": ":0",
    }
    done = subprocess.run(
        [sys.executable, "-m", "dbatch.cli", "run", str(job), "--cluster", "envy", "--json"],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["status"] == "succeeded" and summary["batches_committed"] == 3
    assert marker.read_text().splitlines() == ["started 1", "closed"]
    assert len(pd.read_parquet(tmp_path / "out" / "result")) > 0


# -- address with TLS files, local ----------------------------------------------------------


def test_an_address_profile_reaches_a_tls_scheduler_with_its_files(tls_cluster, tmp_path):
    good = tls_cluster["good"]
    profile = {
        "address": tls_cluster["address"],
        "security": {"ca": good.tls_ca_file, "cert": good.tls_client_cert, "key": "client.key"},
    }
    parsed = parse_profile(
        profile, name="secure", key="cluster", base_dir=Path(good.tls_ca_file).parent
    )
    assert parsed.security["key"] == good.tls_client_key  # relative: from the job's folder
    started = connect(cluster=parsed, show_link=False)
    try:
        assert not owns_cluster(started)  # someone else's scheduler: never closed by dbatch
        result = pipeline_over(tmp_path / "t", 2, "tls-profile").run(client=started)
        assert result.status == "succeeded"
    finally:
        close(started)
    missing = parse_profile(
        {**profile, "security": {"ca": str(tmp_path / "nope.pem")}}, name="secure", key="cluster"
    )
    with pytest.raises(JobSpecError, match=r"security.ca .*nope.pem.* is not a file"):
        connect(cluster=missing, show_link=False)


def test_a_local_profile_sets_workers_threads_and_memory():
    with dask.config.set(
        {"dbatch.clusters.small": {"local": {"workers": 1, "threads": 2, "memory_limit": "1GiB"}}}
    ):
        started = connect(cluster="small", show_link=False)
    try:
        (info,) = started.scheduler_info()["workers"].values()
        assert info["nthreads"] == 2 and info["memory_limit"] == 2**30
        assert owns_cluster(started)
    finally:
        cluster = started.cluster
        close(started)
    assert cluster.status.name == "closed"


# -- what is wrong says what to do ----------------------------------------------------------


def test_a_missing_cluster_package_gets_its_install_line():
    absent = next(m for m in CLUSTER_PACKAGES if importlib.util.find_spec(m) is None)
    profile = parse_profile({"class": f"{absent}.SomeCluster"}, name="far", key="cluster")
    with pytest.raises(JobSpecError, match=f"pip install {CLUSTER_PACKAGES[absent]}"):
        connect(cluster=profile, show_link=False)
    typo = parse_profile({"class": "distributed.LocalClustr"}, name="typo", key="cluster")
    with pytest.raises(JobSpecError, match="did you mean 'LocalCluster'"):
        connect(cluster=typo, show_link=False)
    bad_kwargs = parse_profile(
        {"class": "distributed.SpecCluster", "kwargs": {"wrokers": {}}}, name="k", key="cluster"
    )
    with pytest.raises(JobSpecError, match="check the names under kwargs"):
        connect(cluster=bad_kwargs, show_link=False)


def test_an_unknown_profile_names_the_known_ones_and_where_to_define_it():
    with dask.config.set({"dbatch.clusters.hpc": {"address": "tls://h:8786"}}):
        with pytest.raises(JobSpecError, match=r"no cluster profile 'hcp' \(did you mean 'hpc'"):
            named_profile("hcp")
        assert named_profile("HPC").address == "tls://h:8786"  # environment variables: upper case


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"local": {}, "address": "tls://h:1"}, "exactly one of address, local or class"),
        ({"class": "a.B", "adapt": {"minimum": 3, "maximum": 2}}, "minimum 3 is above maximum 2"),
        ({"class": "a.B", "adapt": {"minimum": 1}}, "adapt needs maximum"),
        ({"address": "tls://h:1", "adapt": {"maximum": 2}}, "adapt needs a cluster dbatch starts"),
        ({"address": "tls://h:1", "security": {"cert": "c.pem"}}, "security needs ca"),
        ({"local": {"wrokers": 2}}, "did you mean 'workers'"),
        ({"local": {}, "kwargs": {"a": 1}}, "kwargs go with class"),
    ],
)
def test_wrong_profiles_are_refused_with_their_key(value, message):
    with pytest.raises(JobSpecError, match=message):
        parse_profile(value, name="x", key="cluster")


def test_a_job_file_names_a_profile_or_writes_one_inline(tmp_path):
    assert cluster_from_config({"profile": "hpc"}, file="j.yaml", base_dir=tmp_path) == {
        "profile": "hpc"
    }
    inline = cluster_from_config({"local": {"workers": 3}}, file="j.yaml", base_dir=tmp_path)[
        "profile"
    ]
    assert inline.kind == "local" and inline.local == {"workers": 3}
    old = cluster_from_config(
        {"scheduler": "sched.json", "workers": 2}, file=None, base_dir=tmp_path
    )
    assert old == {"scheduler": str(tmp_path / "sched.json"), "workers": 2}  # as before
    with pytest.raises(JobSpecError, match="one of scheduler, profile or an inline profile"):
        cluster_from_config({"profile": "hpc", "scheduler": "tls://h:1"}, file=None, base_dir=None)
    with pytest.raises(JobSpecError, match="local: {workers: N}"):
        cluster_from_config({"local": {}, "workers": 2}, file=None, base_dir=None)


# -- many batches: the scheduler holds a bounded number of tasks ----------------------------


def test_a_long_run_keeps_a_bounded_number_of_tasks_on_the_scheduler(tmp_path, client, monkeypatch):
    import dbatch.executors.dask as dask_executor

    monkeypatch.setattr(dask_executor, "KEEP_FINISHED", 3)
    seen: list[int] = []

    def count(event) -> None:
        if event.kind == "batch_committed":
            seen.append(client.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.tasks)))

    before = client.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.tasks))
    with dask.config.set({"dbatch.cluster.max-in-flight": 2}):
        result = pipeline_over(tmp_path, 14, "bounded").run(client=client, listeners=[count])
    assert result.status == "succeeded" and len(seen) == 14
    # The plan, 2 in flight, 3 finished kept (and what other tests left): never all 14.
    assert max(seen) - before <= 1 + 2 + 3, seen
