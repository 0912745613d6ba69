"""-v, -q, --log-level and --log-format on every command; stdout carries results, stderr the rest."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

import dbatch
from dbatch.cli import main

REPO = Path(dbatch.__file__).resolve().parent.parent

JOB = """\
name: logged
source: {type: files, path: in/*.csv, schema: {id: string, amount: int64}}
batching: {count: 1}
steps:
  - map: {function: MODULE:strict}
sink: {type: parquet, path: out/result}
"""

CHECKS = """\
def strict(df):
    if STRICT and (df["id"] == "2-1").any():
        raise ValueError("day 2 holds an id this test refuses")
    return df


STRICT = False
"""


def write_job(root: Path, strict: bool = False) -> Path:
    (root / "in").mkdir(parents=True, exist_ok=True)
    for f in range(3):
        (root / "in" / f"day-{f}.csv").write_text(f"id,amount\n{f}-1,1\n{f}-2,2\n")
    # A module name of its own per variant: the session's workers keep what they imported.
    module = f"logged_checks_{'strict' if strict else 'lenient'}"
    (root / f"{module}.py").write_text(CHECKS.replace("STRICT = False", f"STRICT = {strict}"))
    job = root / "job.yaml"
    job.write_text(JOB.replace("MODULE", module))
    return job


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "DASK_DBATCH__PROGRESS__MODE": "off"}
    return subprocess.run(
        [sys.executable, "-m", "dbatch", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_stdout_carries_the_result_and_stderr_the_dashboard_link(tmp_path, client):
    job = write_job(tmp_path)
    proc = cli("run", str(job), "--scheduler", client.scheduler.address, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Dask dashboard: http://" in proc.stderr
    assert "Dask dashboard" not in proc.stdout
    assert "succeeded" in proc.stdout

    job.parent.joinpath("in", "day-3.csv").write_text("id,amount\n3-1,1\n")
    as_json = cli(
        "-v", "run", str(job), "--json", "--scheduler", client.scheduler.address, cwd=tmp_path
    )
    assert as_json.returncode == 0, as_json.stderr[-3000:]
    summary = json.loads(as_json.stdout)  # all of stdout is the one JSON object
    assert summary["status"] == "succeeded" and summary["batches_committed"] == 1
    assert "INFO dbatch.run: Dask dashboard: http://" in as_json.stderr  # logged at the start
    assert "INFO dbatch.run: batch " in as_json.stderr and "committed" in as_json.stderr


@pytest.mark.parametrize("where", ["before", "after"])
def test_log_level_and_json_format_before_or_after_the_command(tmp_path, client, where):
    job = write_job(tmp_path, strict=True)
    flags = ["-v", "--log-format", "json"]
    command = ["run", str(job), "--scheduler", client.scheduler.address]
    args = [*flags, *command] if where == "before" else [*command, *flags]
    proc = cli(*args, cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr[-3000:]  # one batch fails
    entries = [json.loads(line) for line in proc.stderr.strip().splitlines()]
    assert {e["logger"] for e in entries} >= {"dbatch.run"}
    levels = {e["level"] for e in entries}
    assert {"INFO", "ERROR"} <= levels
    [failed] = [e for e in entries if e.get("event") == "batch_failed"]
    assert failed["job"] == "logged" and "day 2 holds an id" in failed["message"]
    assert any(e.get("dashboard") for e in entries)
    assert "failed" in proc.stdout  # the result, on stdout


def test_quiet_and_log_level_leave_out_what_is_below(tmp_path, client):
    job = write_job(tmp_path, strict=True)
    command = ["run", str(job), "--scheduler", client.scheduler.address]
    default = cli(*command, cwd=tmp_path)
    assert default.returncode == 1
    assert "ERROR dbatch.run: batch " in default.stderr  # warnings and errors, as text lines
    assert "INFO" not in default.stderr and "Dask dashboard: http://" in default.stderr

    quiet = cli("-q", *command, cwd=tmp_path)
    assert quiet.returncode == 1
    assert "ERROR dbatch.run" in quiet.stderr and "Dask dashboard" not in quiet.stderr

    critical = cli(*command, "--log-level", "critical", cwd=tmp_path)
    assert critical.returncode == 1 and "dbatch.run" not in critical.stderr
    assert "failed" in critical.stdout  # results are never silenced

    history = cli("history", str(job), "-vv", cwd=tmp_path)
    assert history.returncode == 0 and "failed" in history.stdout


def test_every_command_takes_the_logging_options():
    for name in main.commands:
        for flags in (["-v"], ["-qq"], ["--log-level", "DEBUG"], ["--log-format", "json"]):
            result = CliRunner().invoke(main, [*flags, name, *flags, "-h"])
            assert result.exit_code == 0, (name, flags, result.output)
    bad = CliRunner().invoke(main, ["--log-level", "loud", "plan", "-h"])
    assert bad.exit_code == 2 and "--log-level" in bad.stderr


def test_the_dbatch_logger_is_as_it_was_after_a_command(tmp_path):
    logger = logging.getLogger("dbatch")
    before = (list(logger.handlers), logger.level, logger.propagate)
    job = write_job(tmp_path)
    result = CliRunner().invoke(main, ["-vv", "--log-format", "json", "plan", str(job)])
    assert result.exit_code == 0, result.output
    assert (list(logger.handlers), logger.level, logger.propagate) == before
