"""The command line fails cleanly: one line, exit 2 for what the user must fix, 1 for a failed run."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import PG_URL, STRICT, free_port

import dbatch
from dbatch.cli import main

REPO = Path(dbatch.__file__).resolve().parent.parent

JOB = """\
name: {name}
source: {{type: files, path: in/*.csv}}
batching: {{count: 1}}
sink: {sink}
{extra}"""


def write_job(
    root: Path, name: str = "errors", sink: str = "{type: parquet, path: out/result}", extra=""
) -> Path:
    (root / "in").mkdir(parents=True, exist_ok=True)
    for f in range(2):
        (root / "in" / f"p{f}.csv").write_text("id,amount\n" + f"{f}-1,1\n{f}-2,2\n")
    job = root / "job.yaml"
    job.write_text(JOB.format(name=name, sink=sink, extra=extra))
    return job


def dbatch_cli(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    """``python -m dbatch ARGS`` as a real process, importing this checkout."""
    environ = {**os.environ, "PYTHONPATH": str(REPO), "DASK_DBATCH__PROGRESS__MODE": "off", **env}
    return subprocess.run(
        [sys.executable, "-m", "dbatch", *args],
        cwd=cwd,
        env=environ,
        capture_output=True,
        text=True,
        timeout=180,
    )


def one_line_error(proc: subprocess.CompletedProcess, code: int = 2) -> str:
    """The single ``error: ...`` line a refused command prints; no traceback, nothing on stdout."""
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-3000:]
    return lines[0]


def test_a_folder_instead_of_a_job_file(tmp_path):
    write_job(tmp_path / "jobs")
    line = one_line_error(dbatch_cli("run", "jobs", cwd=tmp_path))
    assert "'jobs' is a folder, not a job file" in line
    assert str(Path("jobs") / "job.yaml") in line  # the file to give instead


def test_an_unreachable_scheduler_fails_fast_naming_the_address(tmp_path):
    job = write_job(tmp_path)
    address = f"tcp://127.0.0.1:{free_port()}"  # nothing listens there
    t0 = time.perf_counter()
    proc = dbatch_cli(
        "run",
        str(job),
        "--scheduler",
        address,
        cwd=tmp_path,
        DASK_DBATCH__CLUSTER__CONNECT_TIMEOUT="1s",
    )
    waited = time.perf_counter() - t0
    line = one_line_error(proc)
    assert f"cannot connect to the Dask scheduler at {address}" in line
    assert "dbatch.cluster.connect-timeout (1 s)" in line and "host and port" in line
    assert waited < 25, waited  # distributed alone waits 30 s, then prints a traceback


def test_set_gives_the_connect_timeout_too(tmp_path):
    job = write_job(tmp_path)
    address = f"tcp://127.0.0.1:{free_port()}"
    proc = dbatch_cli(
        "run",
        str(job),
        "--scheduler",
        address,
        "--set",
        "dbatch.cluster.connect-timeout=2s",
        cwd=tmp_path,
    )
    line = one_line_error(proc)
    assert "dbatch.cluster.connect-timeout (2 s)" in line, line


def test_a_server_that_is_not_a_scheduler(tmp_path):
    """Whatever answers on the port (here: random bytes) is one line, not a MemoryError."""
    job = write_job(tmp_path)
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def babble():
        server.settimeout(60)
        try:
            while True:
                conn, _ = server.accept()
                conn.sendall(b"\x7f" * 64)
        except OSError:
            return

    threading.Thread(target=babble, daemon=True).start()
    try:
        proc = dbatch_cli(
            "run",
            str(job),
            "--scheduler",
            f"tcp://127.0.0.1:{port}",
            cwd=tmp_path,
            DASK_DBATCH__CLUSTER__CONNECT_TIMEOUT="2s",
        )
    finally:
        server.close()
    assert f"Dask scheduler at tcp://127.0.0.1:{port}" in one_line_error(proc)


@pytest.mark.parametrize(
    ("where", "key"),
    [
        ('sink: {type: parquet, path: "out/\\0result"}\n', "sink.path"),
        ('workdir: "work\\0"\n', "workdir"),
        ('source: {type: files, path: ["in/\\0*.csv"]}\n', "source.path[0]"),
    ],
)
def test_a_nul_byte_in_a_path(tmp_path, where, key):
    job = write_job(tmp_path)
    text = job.read_text()
    first = where.split(":", 1)[0]
    kept = [line for line in text.splitlines() if not line.startswith(f"{first}:")]
    job.write_text("\n".join(kept) + "\n" + where)
    line = one_line_error(dbatch_cli("run", str(job), cwd=tmp_path))
    assert f"key '{key}'" in line and "NUL byte" in line


def _wrong_ledgers(postgres: str | None) -> list[tuple[str, str]]:
    urls = [("notaurl://", "is a SQLAlchemy URL such as")]
    if postgres:
        host = postgres.split("@", 1)[1]
        urls.append((f"postgresql+psycopg://nosuchrole@{host}", 'role "nosuchrole" does not exist'))
    return urls


@pytest.mark.parametrize("command", ["run", "status", "history"])
def test_a_wrong_ledger_url(tmp_path, command):
    try:
        import sqlalchemy as sa

        engine = sa.create_engine(PG_URL)
        with engine.connect():
            pass
        engine.dispose()
        postgres: str | None = PG_URL
    except Exception:  # noqa: BLE001 - the PostgreSQL case is checked when the server is there
        postgres = None
        if STRICT:
            pytest.fail(f"needs PostgreSQL at {PG_URL.split('@')[-1]} (DBATCH_STRICT_SERVICES=1)")
    for url, says in _wrong_ledgers(postgres):
        job = write_job(tmp_path / str(abs(hash(url))), extra=f'ledger: "{url}"\n')
        line = one_line_error(dbatch_cli(command, str(job), cwd=job.parent))
        assert "cannot open the ledger" in line and says in line, line
    assert postgres is None or len(_wrong_ledgers(postgres)) == 2


def test_help_with_dash_h_on_every_command(tmp_path):
    proc = dbatch_cli("-h", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "Usage: dbatch" in proc.stdout and "Commands:" in proc.stdout
    for name in main.commands:
        result = CliRunner().invoke(main, [name, "-h"])
        assert result.exit_code == 0, (name, result.output)
        assert f"Usage: dbatch {name}" in result.stdout, name


def test_a_commit_error_is_a_failed_run(tmp_path):
    """The sink's database is down: the run is recorded failed (not running) and exits 1."""
    sink = (
        f'{{type: sql, url: "postgresql+psycopg://etl@127.0.0.1:{free_port()}/dw", table: facts}}'
    )
    job = write_job(tmp_path, sink=sink)
    proc = dbatch_cli("run", str(job), "--json", cwd=tmp_path)
    assert proc.returncode == 1, (proc.stdout, proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr
    summary = json.loads(proc.stdout)  # stdout is one JSON object
    assert summary["status"] == "failed" and "127.0.0.1" in summary["message"]
    assert "error: run " in proc.stderr and "failed" in proc.stderr

    history = dbatch_cli("history", str(job), "--json", cwd=tmp_path)
    [run] = json.loads(history.stdout)["runs"]
    assert run["run_id"] == summary["run_id"]
    assert run["status"] == "failed" and "CommitError" in run["message"]


@pytest.mark.parametrize(
    ("batching", "says"),
    [
        ("{count: 100000000000000000000000}", "more than the 1,000,000 a batch may hold"),
        ("{count: 1.0e+38}", "expected a whole number of units per batch"),
        ("{count: 1e38}", "expected a whole number of units per batch"),
        ("{size: 1000000PiB}", "more than the 1 TiB a batch may hold"),
        ("{threshold: {count: 10000000}}", "more than the 1,000,000 a batch may hold"),
    ],
)
def test_absurd_batching_numbers_are_refused(tmp_path, batching, says):
    job = write_job(tmp_path, extra="")
    job.write_text(job.read_text().replace("batching: {count: 1}", f"batching: {batching}"))
    line = one_line_error(dbatch_cli("plan", str(job), cwd=tmp_path))
    assert "key 'batching." in line and says in line


def test_absurd_worker_counts_are_refused(tmp_path):
    job = write_job(tmp_path, extra="cluster: {workers: 100000000}\n")
    line = one_line_error(dbatch_cli("run", str(job), cwd=tmp_path))
    assert "key 'cluster.workers'" in line and "more than the 256" in line
    job = write_job(tmp_path)
    proc = dbatch_cli("run", str(job), "--workers", "100000000", cwd=tmp_path)
    assert proc.returncode == 2 and "1<=x<=256" in proc.stderr
    assert not (tmp_path / "out").exists()
