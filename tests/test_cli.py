"""The command line: run --json, exit status, plan, demo, `dask dbatch`, --workers, progress."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from dbatch import ByCount, Files, ParquetSink, Pipeline
from dbatch.cli import main
from dbatch.core import Event, Plan
from dbatch.monitor.progress import TerminalProgress

STEPS = '''\
import os
import time


def stamp(df):
    """Record which worker process ran the batch."""
    time.sleep(0.2)
    return df.assign(pid=os.getpid())


def explode(df):
    if (df["amount"] > 40).any():
        raise ValueError("amount too large for this test")
    return df
'''


def write_job(root: Path, steps: str = "", n_files: int = 4, batch_files: int = 1) -> Path:
    """A landing area of small CSV files and a job file that reads them."""
    (root / "in").mkdir(parents=True, exist_ok=True)
    for f in range(n_files):
        lines = ["id,account,amount,status"]
        lines += [f"{f}-{i},A{i % 3},{i * (f + 1)},{'ok' if i % 4 else 'void'}" for i in range(12)]
        (root / "in" / f"part-{f}.csv").write_text("\n".join(lines) + "\n")
    (root / "cli_steps.py").write_text(STEPS)
    job = root / "job.yaml"
    job.write_text(
        textwrap.dedent(
            f"""\
            name: cli-test
            source: {{type: files, path: in/*.csv}}
            batching: {{count: {batch_files}}}
            steps:
              - filter: "status = 'ok'"
            {textwrap.indent(steps, "  ")}
            sink: {{type: parquet, path: out/result}}
            """
        )
    )
    return job


@pytest.fixture
def steps_module():
    yield
    sys.modules.pop("cli_steps", None)


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [shutil.which("dbatch") or "dbatch", *args],
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, "DASK_DISTRIBUTED__WORKER__DAEMON": "False"},
    )


# -- in-process, through click's runner (uses the session cluster) --------------------------


def test_run_json_prints_one_summary_object(tmp_path, client, steps_module):
    job = write_job(tmp_path / "job")
    result = CliRunner().invoke(main, ["run", str(job), "--json"])
    assert result.exit_code == 0, result.output + result.stderr
    summary = json.loads(result.stdout)  # the whole of stdout is one JSON object
    assert summary["status"] == "succeeded"
    assert summary["run_id"]
    assert summary["batches_planned"] == 4
    assert summary["batches_committed"] == 4
    assert summary["batches_failed"] == 0
    assert summary["rows_in"] == 48
    assert summary["rows_out"] == 36 and summary["rows_filtered"] == 12
    assert summary["rows_quarantined"] == 0
    assert Path(summary["output"]) == tmp_path / "job" / "out" / "result"
    assert len(pd.read_parquet(summary["output"])) == 36

    again = CliRunner().invoke(main, ["run", str(job), "--json"])
    assert again.exit_code == 0
    second = json.loads(again.stdout)
    assert second["status"] == "nothing_to_do"
    assert second["batches_committed"] == 0 and second["batches_skipped"] == 4
    assert second["run_id"] != summary["run_id"]


def test_run_exits_non_zero_when_a_batch_fails(tmp_path, client, steps_module):
    job = write_job(tmp_path / "job", steps="- map: cli_steps:explode\n")
    result = CliRunner().invoke(main, ["run", str(job), "--json"])
    assert result.exit_code == 1, result.output
    summary = json.loads(result.stdout)
    assert summary["status"] == "failed"
    assert summary["batches_failed"] >= 1
    assert summary["batches_committed"] + summary["batches_failed"] == 4
    assert "failed" in summary["message"] and "run the same command again" in summary["message"]
    assert not (tmp_path / "job" / "out" / "result").exists()  # nothing published

    human = CliRunner().invoke(main, ["run", str(job)])
    assert human.exit_code == 1
    assert "failed" in human.stdout


def test_bad_job_file_exits_2_with_the_message(tmp_path):
    job = write_job(tmp_path / "job")
    job.write_text(job.read_text().replace("batching: {count: 1}", "batching: {count: one}"))
    result = CliRunner().invoke(main, ["run", str(job), "--json"])
    assert result.exit_code == 2
    assert result.stdout == ""
    assert str(job) in result.stderr and "key 'batching.count'" in result.stderr

    empty = write_job(tmp_path / "empty")
    for f in (tmp_path / "empty" / "in").glob("*.csv"):
        f.unlink()
    result = CliRunner().invoke(main, ["run", str(empty)])
    assert result.exit_code == 2
    assert "key 'source.path'" in result.stderr and "no input files match" in result.stderr


def test_plan_prints_the_batches_without_a_cluster(tmp_path):
    job = write_job(tmp_path / "job", batch_files=2)
    result = CliRunner().invoke(main, ["plan", str(job)])
    assert result.exit_code == 0, result.output
    assert "Plan(job='cli-test', batches=2, units=4" in result.stdout
    as_json = CliRunner().invoke(main, ["plan", str(job), "--json"])
    data = json.loads(as_json.stdout)
    assert (data["version"], data["kind"], data["job"]) == (1, "plan", "cli-test")
    assert [b["units"] for b in data["batches"]] == [2, 2]
    assert len({b["batch_id"] for b in data["batches"]}) == 2


def test_help_lists_the_commands():
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    for command in ("run", "plan", "resume", "status", "history", "demo"):
        assert command in result.stdout
    demo_help = CliRunner().invoke(main, ["demo", "--help"]).stdout
    assert "--dir" in demo_help and "--days" in demo_help and "--rows-per-file" in demo_help
    run_help = CliRunner().invoke(main, ["run", "--help"]).stdout
    assert "--scheduler" in run_help and "--workers" in run_help and "--json" in run_help


# -- real processes ------------------------------------------------------------------


@pytest.mark.slow
def test_demo_then_rerun_does_no_work(tmp_path):
    demo = tmp_path / "demo"
    first = run_cli("demo", "--dir", str(demo), "--days", "2", "--rows-per-file", "300")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "wrote 8 files, 2,400 transactions" in first.stdout
    assert "Dask dashboard: http://127.0.0.1:" in first.stderr  # stdout: results only
    assert "Dask dashboard" not in first.stdout
    assert "succeeded" in first.stdout
    assert "nightly-reconciliation" in first.stderr  # the progress bar
    totals = pd.read_parquet(demo / "out" / "daily_totals")
    assert {"account", "day", "currency", "total_usd", "transactions"} <= set(totals.columns)
    assert totals["transactions"].dtype == "int64"

    again = run_cli("run", str(demo / "job.yaml"))
    assert again.returncode == 0, again.stdout + again.stderr
    assert "nothing_to_do" in again.stdout and "no work done" in again.stdout
    assert "Dask dashboard" not in again.stderr  # no cluster was started for nothing

    as_json = run_cli("run", str(demo / "job.yaml"), "--json")
    summary = json.loads(as_json.stdout)
    assert summary["status"] == "nothing_to_do" and summary["batches_skipped"] == 2


def test_python_m_dbatch_needs_no_script_on_path():
    """`python -m dbatch` runs the command from the interpreter alone (a fresh venv, not activated)."""
    env = {**os.environ, "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, "-m", "dbatch", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert "Batch jobs on Dask" in result.stdout and "run" in result.stdout


@pytest.mark.slow
def test_dask_dbatch_entry_point():
    dask = shutil.which("dask")
    assert dask, "the dask command is installed with dask"
    result = subprocess.run([dask, "dbatch", "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "Batch jobs on Dask" in result.stdout and "demo" in result.stdout
    listed = subprocess.run([dask, "--help"], capture_output=True, text=True, timeout=120)
    assert "dbatch" in listed.stdout


@pytest.mark.slow
def test_workers_option_sizes_the_local_cluster(tmp_path):
    job = write_job(tmp_path / "job", steps="- map: cli_steps:stamp\n")
    result = run_cli("run", str(job), "--workers", "1", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout)["batches_committed"] == 4
    pids = pd.read_parquet(tmp_path / "job" / "out" / "result")["pid"]
    assert pids.nunique() == 1  # 4 batches, one worker process

    refused = run_cli("run", str(job), "--workers", "0")
    assert refused.returncode == 2 and "--workers" in refused.stderr


# -- progress ---------------------------------------------------------------------------


def test_terminal_progress_follows_run_events(tmp_path, client, capfd):
    src = tmp_path / "in"
    src.mkdir()
    for f in range(3):
        (src / f"p{f}.csv").write_text("a,b\n1,2\n3,4\n")
    pipeline = Pipeline(
        Files(str(src / "*.csv")),
        ParquetSink(str(tmp_path / "out")),
        batching=ByCount(1),
        name="progress-job",
        workdir=str(tmp_path / "work"),
    )
    result = pipeline.run(client=client, progress=True)
    assert result.ok
    err = capfd.readouterr().err
    assert "progress-job" in err and "3/3" in err and "failed=0" in err


def test_terminal_progress_counts_each_event_kind(capfd):
    from dbatch.core import Batch, Unit

    batches = tuple(Batch.from_units([Unit(f"u{i}")], index=i) for i in range(4))
    bar = TerminalProgress(Plan(job="events", batches=batches))
    ev = lambda kind, b=None, **data: Event(kind, "r1", "events", b, data)  # noqa: E731
    bar(ev("run_started"))
    bar(ev("batch_started", batches[0].id))
    assert bar.bar.n == 0  # a started batch is not done
    bar(ev("batch_committed", batches[0].id, rows_in=10))
    bar(ev("batch_skipped", batches[1].id))
    bar(ev("batch_retry", batches[2].id))
    assert bar.bar.n == 2 and bar.retries == 1
    bar(ev("batch_failed", batches[2].id))
    bar(ev("batch_quarantined", batches[3].id))
    assert bar.bar.n == 4
    assert (bar.failed, bar.quarantined, bar.rows) == (1, 1, 10)
    bar(ev("finished", status="failed"))
    err = capfd.readouterr().err
    assert "4/4" in err and "failed=1" in err and "batches_quarantined=1" in err
