"""The driver killed for real (SIGKILL) at named points, then resumed; and one run per job at a time."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa
from click.testing import CliRunner

import dbatch
from dbatch import ParquetSink, RunLockedError
from dbatch.cli import main
from dbatch.ledger import locks
from dbatch.spec import load_job
from dbatch.testing import EventLog, Pause, data_files, leftovers

N_FILES = 6
ROWS = 80

JOB = """\
name: nightly
source:
  type: files
  path: landing/*.csv
  schema: {id: string, account: string, amount: int64}
batching: {count: 1}
steps:
  - filter: "amount >= 0"
sink: {type: parquet, path: out/result}
workdir: work
cluster: {workers: 1}
"""


def write_job(root: Path, extra: str = "") -> Path:
    landing = root / "landing"
    landing.mkdir(parents=True)
    for f in range(N_FILES):
        lines = ["id,account,amount"] + [f"{f}-{i},A{i % 5},{i * 3 - 10}" for i in range(ROWS)]
        (landing / f"day-{f:02d}.csv").write_text("\n".join(lines) + "\n")
    job = root / "job.yaml"
    job.write_text(JOB + extra)
    return job


def dbatch_in_subprocess(job: Path, crash_at: str | None, *args: str, wait: bool = True):
    """`dbatch run JOB --json` as its own process, optionally set to die at a crash point."""
    env = {**os.environ, "DASK_DBATCH__PROGRESS__MODE": "off"}
    env.pop("DBATCH_CRASH_AT", None)
    if crash_at:
        env["DBATCH_CRASH_AT"] = crash_at
    proc = subprocess.Popen(
        [sys.executable, "-m", "dbatch.cli", "run", str(job), "--json", *args],
        cwd=job.parent,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, so nothing it started outlives the test
    )
    if not wait:
        return proc
    try:
        out, err = proc.communicate(timeout=120)
    finally:
        _kill_group(proc)
    return proc.returncode, out, err


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@pytest.fixture(scope="module")
def reference(tmp_path_factory, client) -> dict[str, str]:
    """Data files of a fault-free run over the same input files (same paths, so same batches)."""
    root = tmp_path_factory.mktemp("driver")
    job = write_job(root)
    pipeline = load_job(job).pipeline
    ref = pipeline.replace(
        sink=ParquetSink(str(root / "reference" / "out")), workdir=str(root / "reference" / "work")
    )
    result = ref.run(client=client)
    assert result.status == "succeeded", result
    return {"root": root, "files": data_files(root / "reference" / "out")}


def forget_dead_driver(client, timeout: float = 20) -> None:
    """Wait until the scheduler has dropped every task of the killed driver."""

    def tasks_of_job(dask_scheduler):
        return [str(k) for k in dask_scheduler.tasks if "nightly" in str(k)]

    deadline = time.time() + timeout
    while client.run_on_scheduler(tasks_of_job) and time.time() < deadline:
        time.sleep(0.05)
    assert not client.run_on_scheduler(tasks_of_job)


def ledger_of(job: Path) -> dbatch.Ledger:
    return dbatch.Ledger(load_job(job).pipeline.ledger_url())


@pytest.mark.parametrize(
    ("crash_at", "recorded_before", "promoted_before"),
    [
        ("recorded:3", 3, 3),  # after some batches were committed and recorded
        ("promoted:4", 3, 4),  # after batch 4 was renamed into place, before it was recorded
        ("publishing:1", N_FILES, N_FILES),  # in the middle of writing the new output version
    ],
)
def test_driver_killed_then_resumed(crash_at, recorded_before, promoted_before, reference, client):
    root = reference["root"]
    job = root / "job.yaml"
    for stale in ("work", "out"):
        if (root / stale).exists():
            import shutil

            shutil.rmtree(root / stale)
            for p in root.glob(f".{stale}*"):
                shutil.rmtree(p)
    # The driver runs on the test's cluster, as a notebook kernel on a shared cluster would.
    code, out, err = dbatch_in_subprocess(job, crash_at, "--scheduler", client.scheduler.address)
    assert code == -signal.SIGKILL, (code, out, err[-3000:])
    forget_dead_driver(client)

    # What the dead driver left: committed batches, maybe an unrecorded one, a stale lock.
    ledger = ledger_of(job)
    before = ledger.batches_frame("nightly").set_index("batch_id")
    with ledger.engine.connect() as con:
        lock = con.execute(sa.select(locks)).mappings().all()
    ledger.close()
    committed_before = set(before.index[before["state"] == "committed"])
    assert len(committed_before) == recorded_before
    promoted = list((root / "work" / "nightly" / "batches").iterdir())
    assert len(promoted) == promoted_before
    assert [row["job"] for row in lock] == ["nightly"]  # the dead driver's lock is still there
    assert not (root / "out" / "result").exists()  # nothing was published
    if crash_at.startswith("publishing"):
        building = list((root / "out").glob(".result.versions/*.building/*.parquet"))
        assert 0 < len(building) < N_FILES  # killed halfway through writing the version

    # Resume: the stale lock is taken over, committed batches are not recomputed.
    log = EventLog()
    pipeline = load_job(job).pipeline
    last = ledger_of(job).last_run("nightly")
    assert last["status"] == "running"
    result = pipeline.run(client=client, run_id=last["run_id"], listeners=[log])
    # Killed while publishing: every batch was done, so the resume only publishes.
    done_before = promoted_before == N_FILES
    assert result.status == ("nothing_to_do" if done_before else "succeeded"), result
    assert len(log.of("published")) == 1
    recomputed = set(log.started()) & committed_before
    assert recomputed == set()  # committed batches recomputed = 0
    assert len(log.started()) == N_FILES - promoted_before
    assert result.recovered == promoted_before - recorded_before
    assert all(n == 1 for n in log.started().values())

    # Byte-identical to the fault-free run; every row once; nothing left behind.
    assert data_files(root / "out" / "result") == reference["files"]
    frame = pd.read_parquet(root / "out" / "result")
    assert frame["id"].is_unique and len(frame) == N_FILES * (ROWS - 4)
    assert leftovers(root / "work" / "nightly", root / "out" / "result") == []
    ledger = ledger_of(job)
    after = ledger.batches_frame("nightly").set_index("batch_id")
    with ledger.engine.connect() as con:
        assert con.execute(sa.select(locks)).first() is None
    ledger.close()
    assert (after["state"] == "committed").all()
    for b in committed_before:  # their ledger records were not touched by the resume
        assert after.loc[b, "started"] == before.loc[b, "started"]
        assert after.loc[b, "attempts"] == 1


def test_resume_command_continues_the_dead_run(reference):
    """`dbatch resume` picks up the run a SIGKILLed `dbatch run` left, under the same run id.

    This driver starts its own LocalCluster, whose workers die with it.
    """
    root = reference["root"].parent / "resume-cli"
    job = write_job(root)
    code, _, err = dbatch_in_subprocess(job, "recorded:2")
    assert code == -signal.SIGKILL, err[-2000:]
    dead = ledger_of(job).last_run("nightly")

    result = CliRunner().invoke(main, ["resume", str(job), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["run_id"] == dead["run_id"]
    assert summary["status"] == "succeeded"
    assert summary["batches_skipped"] == 2 and summary["batches_committed"] == N_FILES - 2
    # Other paths, so other batch ids and file names; the same bytes.
    assert sorted(data_files(root / "out" / "result").values()) == sorted(
        reference["files"].values()
    )

    again = CliRunner().invoke(main, ["run", str(job), "--json"])
    assert again.exit_code == 0
    assert json.loads(again.stdout.strip().splitlines()[-1])["status"] == "nothing_to_do"


def test_second_run_of_a_running_job_stops_at_once(tmp_path, client):
    """Two processes: while `dbatch run` works, a second run of the job is refused at once."""
    job = write_job(tmp_path, extra="")
    (tmp_path / "slow.py").write_text(
        "import time\n\ndef pause(df):\n    time.sleep(0.5)\n    return df\n"
    )
    job.write_text(JOB.replace('  - filter: "amount >= 0"', "  - map: {function: slow:pause}"))
    first = dbatch_in_subprocess(job, None, "--scheduler", client.scheduler.address, wait=False)
    try:
        ledger = ledger_of(job)
        deadline = time.time() + 60
        holder = None
        while holder is None and time.time() < deadline and first.poll() is None:
            with ledger.engine.connect() as con:
                holder = con.execute(sa.select(locks)).mappings().first()
            time.sleep(0.05)
        ledger.close()
        assert holder is not None and holder["pid"] == first.pid

        t0 = time.perf_counter()
        second = CliRunner().invoke(main, ["run", str(job), "--json"])
        waited = time.perf_counter() - t0
        assert second.exit_code == 2
        assert "already running" in second.output and holder["run_id"] in second.output
        assert waited < 5, waited  # stopped at once, not after waiting for the first run
        out, err = first.communicate(timeout=120)
    finally:
        _kill_group(first)
    assert first.returncode == 0, err[-3000:]
    assert json.loads(out.strip().splitlines()[-1])["status"] == "succeeded"
    frame = pd.read_parquet(tmp_path / "out" / "result")
    assert frame["id"].is_unique and len(frame) == N_FILES * ROWS


def test_second_run_in_the_same_process_is_refused(tmp_path, client):
    """Two threads of one notebook kernel: the lock holds within a process too."""
    pipeline = load_job(write_job(tmp_path)).pipeline
    results = {}

    def first():
        results["first"] = pipeline.run(client=client, fault=Pause(0.3))

    thread = threading.Thread(target=first)
    thread.start()
    ledger = dbatch.Ledger(pipeline.ledger_url())
    deadline = time.time() + 30
    while time.time() < deadline:
        with ledger.engine.connect() as con:
            if con.execute(sa.select(locks)).first() is not None:
                break
        time.sleep(0.02)
    ledger.close()
    with pytest.raises(RunLockedError, match="already running"):
        pipeline.run(client=client)
    thread.join()
    assert results["first"].status == "succeeded"
    assert len(pd.read_parquet(tmp_path / "out" / "result")) == N_FILES * (ROWS - 4)


def test_stale_lock_of_a_dead_process_is_taken_over(tmp_path, client):
    pipeline = load_job(write_job(tmp_path)).pipeline
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    ledger = dbatch.Ledger(pipeline.ledger_url())
    with ledger.engine.begin() as con:
        con.execute(
            sa.insert(locks).values(
                job="nightly",
                run_id="dead-run",
                host=__import__("socket").gethostname(),
                pid=dead.pid,
                heartbeat=time.time(),
            )
        )
    ledger.close()
    assert pipeline.run(client=client).status == "succeeded"


def test_failed_overwrite_leaves_previous_output_byte_identical(tmp_path, client):
    """A later run whose step breaks on one batch publishes nothing; the old output stays."""
    job = write_job(tmp_path)
    first = load_job(job).pipeline.run(client=client)
    assert first.status == "succeeded"
    out = tmp_path / "out" / "result"
    before = (data_files(out), (out / "_manifest.json").read_bytes(), os.readlink(out))

    (tmp_path / "checks.py").write_text(
        "def strict(df):\n"
        "    if df['id'].str.startswith('3-').any():\n"
        "        raise ValueError('day 3 holds an amount we cannot handle')\n"
        "    return df\n"
    )
    job.write_text(JOB.replace('"amount >= 0"', '"amount >= 0"\n  - map: checks:strict'))
    log = EventLog()
    failed = load_job(job).pipeline.run(client=client, listeners=[log])
    assert failed.status == "failed" and failed.failed == 1, failed
    assert failed.committed == N_FILES - 1  # the other batches of the new definition are kept
    [event] = log.of("batch_failed")
    assert event.data["error_class"] == "ValueError" and event.data["attempt"] == 1
    assert not log.of("published")
    assert (data_files(out), (out / "_manifest.json").read_bytes(), os.readlink(out)) == before
    assert leftovers(tmp_path / "work" / "nightly", out) == []

    # Back to the job as it was: its committed batches are still there, nothing is
    # recomputed, and the output it published is the current one.
    job.write_text(JOB)
    again_log = EventLog()
    again = load_job(job).pipeline.run(client=client, listeners=[again_log])
    assert again.ok and not again_log.started(), again
    assert (data_files(out), (out / "_manifest.json").read_bytes(), os.readlink(out)) == before
    assert leftovers(tmp_path / "work" / "nightly", out) == []
