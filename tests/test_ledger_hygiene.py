"""The ledger and the output stay truthful: abandoned runs, one job per output, no-op re-runs write nothing."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import sqlalchemy as sa

import dbatch
from dbatch.ledger import runs
from dbatch.spec import load_job

REPO = Path(dbatch.__file__).resolve().parent.parent

JOB = """\
name: {name}
source:
  type: files
  path: {landing}/*.csv
  schema: {{id: string, amount: int64}}
batching: {{count: 1}}
steps:
  - filter: "amount >= 0"
{steps}sink: {{type: parquet, path: {out}}}
bad_input: {{max_bad_fraction: 0.5}}
workdir: work
cluster: {{workers: 1}}
"""


def write_job(
    root: Path,
    name: str = "hygiene",
    *,
    landing: str = "landing",
    out: str = "out/result",
    steps: str = "",
) -> Path:
    files = root / landing
    if not files.exists():
        files.mkdir(parents=True)
        for f in range(4):
            lines = ["id,amount"] + [f"{f}-{i},{i - 2}" for i in range(10)] + [f"{f}-x,oops"]
            (files / f"day-{f}.csv").write_text("\n".join(lines) + "\n")
    job = root / "job.yaml"
    job.write_text(JOB.format(name=name, landing=landing, out=out, steps=steps))
    return job


def cli(*args: str, cwd: Path, wait: bool = True):
    env = {**os.environ, "PYTHONPATH": str(REPO), "DASK_DBATCH__PROGRESS__MODE": "off"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "dbatch", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group: nothing it starts outlives the test
    )
    if not wait:
        return proc
    try:
        out, err = proc.communicate(timeout=180)
    finally:
        _kill_group(proc)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def history(job: Path) -> list[dict]:
    proc = cli("history", str(job), "--json", cwd=job.parent)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)["runs"]


def test_a_killed_driver_leaves_its_run_abandoned_once_another_takes_over(tmp_path):
    (tmp_path / "slow.py").write_text(
        "import time\n\ndef pause(df):\n    time.sleep(1.0)\n    return df\n"
    )
    job = write_job(tmp_path, steps="  - map: {function: slow:pause}\n")
    first = cli("run", str(job), "--json", cwd=tmp_path, wait=False)
    engine = sa.create_engine(load_job(job).pipeline.ledger_url())
    try:
        deadline, committed = time.time() + 120, 0
        while committed < 1 and time.time() < deadline and first.poll() is None:
            time.sleep(0.1)
            try:
                with engine.connect() as con:
                    committed = con.execute(
                        sa.text("select count(*) from dbatch_batches where state = 'committed'")
                    ).scalar()
            except sa.exc.OperationalError:  # the tables are not there yet
                continue
        assert committed >= 1 and first.poll() is None, first.poll()
        os.killpg(first.pid, signal.SIGKILL)  # the driver and its LocalCluster, at once
        first.wait(timeout=30)
    finally:
        _kill_group(first)
        engine.dispose()
    [dead] = history(job)
    assert dead["status"] == "running"  # nothing can say otherwise until the next run

    again = cli("run", str(job), "--json", cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    new = json.loads(again.stdout)
    assert new["status"] == "succeeded" and new["batches_skipped"] >= 1
    rows = {r["run_id"]: r for r in history(job)}
    assert rows[dead["run_id"]]["status"] == "abandoned"
    assert new["run_id"] in rows[dead["run_id"]]["message"]  # who took over
    assert rows[new["run_id"]]["status"] == "succeeded"
    text = cli("history", str(job), cwd=tmp_path)
    assert "abandoned" in text.stdout and dead["run_id"] in text.stdout


def test_a_running_run_of_a_ledger_is_abandoned_when_the_lock_is_taken(tmp_path):
    """Also without a lock row (the run raised before the ledger heard how it ended)."""
    job = write_job(tmp_path)
    ledger = dbatch.Ledger(load_job(job).pipeline.ledger_url())
    with ledger.engine.begin() as con:
        con.execute(
            sa.insert(runs).values(
                run_id="old-run", job="hygiene", params="{}", status="running", started=1.0
            )
        )
        con.execute(
            sa.insert(runs).values(
                run_id="other-job", job="another", params="{}", status="running", started=1.0
            )
        )
    ledger.acquire("hygiene", "new-run")
    ledger.release("hygiene", "new-run")
    with ledger.engine.connect() as con:
        status = dict(con.execute(sa.select(runs.c.run_id, runs.c.status)).all())
    ledger.close()
    assert status == {"old-run": "abandoned", "other-job": "running"}  # only this job's


def test_two_jobs_cannot_publish_to_one_output(tmp_path, client):
    first = write_job(tmp_path / "a", "daily-totals")
    done = cli("run", str(first), "--scheduler", client.scheduler.address, cwd=first.parent)
    assert done.returncode == 0, done.stderr[-3000:]
    out = tmp_path / "a" / "out" / "result"
    before = sorted((p.name, p.read_bytes()) for p in out.rglob("*") if p.is_file())

    # Another job, another folder and ledger, the same output path.
    other = write_job(tmp_path / "b", "weekly-totals", out=str(out))
    refused = cli("run", str(other), "--scheduler", client.scheduler.address, cwd=other.parent)
    assert refused.returncode == 2, (refused.stdout, refused.stderr[-3000:])
    assert "Traceback" not in refused.stderr
    [line] = [x for x in refused.stderr.splitlines() if x.startswith("error: ")]
    assert "'weekly-totals'" in line and "'daily-totals'" in line and str(out) in line
    assert sorted((p.name, p.read_bytes()) for p in out.rglob("*") if p.is_file()) == before
    assert history(other) == []  # refused before it started: no run recorded

    again = cli("run", str(first), "--json", cwd=first.parent)
    assert again.returncode == 0 and json.loads(again.stdout)["status"] == "nothing_to_do"


def snapshot(root: Path) -> dict[str, tuple[int, int, str]]:
    """Every file and folder below ``root`` but the ledger: (mtime, size, sha256)."""
    found = {}
    for p in sorted(root.rglob("*")):
        if p.name.startswith("ledger.sqlite"):
            continue
        stat = p.stat()
        digest = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else ""
        found[str(p.relative_to(root))] = (stat.st_mtime_ns, stat.st_size, digest)
    return found


def test_an_unchanged_rerun_writes_nothing(tmp_path, client):
    job = write_job(tmp_path)
    args = ("run", str(job), "--json", "--scheduler", client.scheduler.address)
    first = cli(*args, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    assert json.loads(first.stdout)["rows_quarantined"] == 4
    quarantine = tmp_path / "work" / "hygiene" / "quarantine.parquet"
    assert quarantine.exists()
    before = snapshot(tmp_path / "work") | snapshot(tmp_path / "out")
    time.sleep(0.05)  # a rewrite would show in the mtimes

    for _ in range(2):
        again = cli(*args, cwd=tmp_path)
        assert again.returncode == 0 and json.loads(again.stdout)["status"] == "nothing_to_do"
    assert snapshot(tmp_path / "work") | snapshot(tmp_path / "out") == before

    # A driver that died between publishing and putting the quarantine in place: the
    # next run, with nothing else to do, still puts it there.
    quarantine.unlink()
    healed = cli(*args, cwd=tmp_path)
    assert healed.returncode == 0 and quarantine.exists()
    import pandas as pd

    assert len(pd.read_parquet(quarantine)) == 4
