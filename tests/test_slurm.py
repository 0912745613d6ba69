"""A dbatch job on SLURM through dask-jobqueue: the job scripts a profile makes, and a real run on
a single-node slurmctld + slurmd whose output is the LocalCluster's."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import unavailable

import dbatch
from dbatch import ByCount, Files, ParquetSink, Pipeline
from dbatch.cluster import close, scaler_of
from dbatch.cluster.profiles import parse_profile
from dbatch.cluster.starting import import_cluster_class


def slurm_profile(tmp_path: Path) -> dict:
    return {
        "class": "dask_jobqueue.SLURMCluster",
        "kwargs": {
            "cores": 1,
            "processes": 1,
            "memory": "1GB",
            "queue": "debug",
            "walltime": "00:10:00",
            "log_directory": str(tmp_path / "slurm-logs"),
            "scheduler_options": {"host": "127.0.0.1", "dashboard_address": ":0"},
            "worker_extra_args": ["--no-dashboard"],
        },
        "adapt": {"minimum": 0, "maximum": 2},
    }


def test_the_profile_makes_slurm_job_scripts(tmp_path):
    profile = parse_profile(slurm_profile(tmp_path), name="hpc", key="cluster")
    cluster = import_cluster_class(profile)(**profile.kwargs)
    try:
        script = cluster.job_script()
    finally:
        cluster.close()
    assert "#SBATCH -p debug" in script and "#SBATCH --cpus-per-task=1" in script
    assert "#SBATCH -t 00:10:00" in script and "#SBATCH --mem=" in script
    assert "distributed.cli.dask_worker tcp://127.0.0.1:" in script and "--nthreads 1" in script


def slurm_ready() -> None:
    if shutil.which("sbatch") is None or shutil.which("sinfo") is None:
        unavailable("SLURM is not installed (apt-get install slurm-wlm munge)")
    shown = subprocess.run(
        ["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=30, check=False
    )
    if shown.returncode != 0 or not {"idle", "mixed", "allocated"} & set(shown.stdout.split()):
        unavailable(f"no SLURM node is up (sinfo: {shown.stdout.strip() or shown.stderr.strip()})")


def pipeline(root: Path, name: str) -> Pipeline:
    (root / "in").mkdir(parents=True, exist_ok=True)
    for i in range(4):
        (root / "in" / f"f{i}.csv").write_text(f"id,v\n{i}-a,{i}\n{i}-b,{i * 7}\n")
    return Pipeline(
        Files(str(root / "in" / "*.csv")),
        ParquetSink(str(root / "out")),
        batching=ByCount(1),
        name=name,
        workdir=str(root / "work"),
    )


def sorted_rows(path: Path) -> pd.DataFrame:
    return pd.read_parquet(path).sort_values("id").reset_index(drop=True)


@pytest.mark.slow
def test_a_job_runs_on_slurm_workers_like_on_a_local_cluster(tmp_path, client):
    slurm_ready()
    started = dbatch.connect(cluster=parse_profile(slurm_profile(tmp_path), name="hpc", key="c"))
    try:
        result = pipeline(tmp_path / "slurm", "on-slurm").run(client=started)
        assert result.status == "succeeded" and result.committed == 4
        # Read on each worker (a lambda travels by value; os.environ.get would carry ours).
        # The scaler retires idle workers once the run is done: a worker leaving while
        # this asks is no answer, not a failure.
        jobs = started.run(lambda: __import__("os").environ.get("SLURM_JOB_ID"), on_error="ignore")
        assert jobs and all(jobs.values()), jobs  # every worker left was a SLURM job
        assert max(scaler_of(started).history) == 2
    finally:
        close(started)
    deadline = time.monotonic() + 60
    while subprocess.run(
        ["squeue", "-h", "-n", "dask-worker"], capture_output=True, text=True
    ).stdout.strip():
        assert time.monotonic() < deadline, "the SLURM jobs outlived the cluster"
        time.sleep(0.5)
    assert pipeline(tmp_path / "local", "on-local").run(client=client).status == "succeeded"
    pd.testing.assert_frame_equal(
        sorted_rows(tmp_path / "slurm" / "out"), sorted_rows(tmp_path / "local" / "out")
    )
