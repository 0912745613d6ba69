"""dbatch init, validate and quarantine: templates that run, checks without a cluster, bad rows."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from dbatch.cli import main
from dbatch.cli.templates import TEMPLATES

ROOT = Path(__file__).resolve().parents[1]


def checkout_env() -> dict[str, str]:
    """The environment of a fresh process that imports this checkout."""
    env = {**os.environ, "DASK_DISTRIBUTED__WORKER__DAEMON": "False"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def python_m_dbatch(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``python -m dbatch ...`` in a fresh process, importing this checkout."""
    return subprocess.run(
        [sys.executable, "-m", "dbatch", *args],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=cwd,
        env=checkout_env(),
    )


# -- init ---------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("template", sorted(TEMPLATES))
def test_init_writes_a_job_that_runs(tmp_path, template):
    target = tmp_path / template
    made = python_m_dbatch("init", "--template", template, str(target), cwd=tmp_path)
    assert made.returncode == 0, made.stdout + made.stderr
    job = target / "job.yaml"
    assert job.exists() and job.read_text().startswith("# ")  # commented
    assert f"dbatch run {job}" in made.stdout

    # Run from another folder: the job's paths are the job file's, not the shell's.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    ran = python_m_dbatch("run", str(job), "--workers", "1", "--json", cwd=elsewhere)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    summary = json.loads(ran.stdout)
    assert summary["status"] == "succeeded", summary
    assert summary["batches_committed"] == summary["batches_planned"] > 1
    assert summary["rows_out"] > 0
    if template in ("etl", "inference"):
        assert summary["rows_quarantined"] > 0  # the sample has bad rows on purpose
        assert len(pd.read_parquet(summary["output"])) == summary["output_rows"]


def test_init_refuses_to_overwrite_a_job_file(tmp_path):
    first = CliRunner().invoke(main, ["init", str(tmp_path / "j")])
    assert first.exit_code == 0, first.output
    (tmp_path / "j" / "job.yaml").write_text("# mine\n")
    again = CliRunner().invoke(main, ["init", "--template", "sql", str(tmp_path / "j")])
    assert again.exit_code == 2
    assert "already exists" in again.stderr and "--force" in again.stderr
    assert (tmp_path / "j" / "job.yaml").read_text() == "# mine\n"
    forced = CliRunner().invoke(main, ["init", "--template", "sql", "--force", str(tmp_path / "j")])
    assert forced.exit_code == 0
    assert "type: sql" in (tmp_path / "j" / "job.yaml").read_text()
    assert (tmp_path / "j" / "shop.db").exists()


def test_init_knows_only_its_templates(tmp_path):
    result = CliRunner().invoke(main, ["init", "--template", "spark", str(tmp_path)])
    assert result.exit_code == 2
    assert "etl" in result.stderr and "xarray" in result.stderr


# -- validate -------------------------------------------------------------------------------


def init_job(root: Path, template: str = "etl") -> Path:
    result = CliRunner().invoke(main, ["init", "--template", template, str(root)])
    assert result.exit_code == 0, result.output
    return root / "job.yaml"


def test_validate_says_ok_with_a_summary(tmp_path):
    job = init_job(tmp_path / "etl")
    result = CliRunner().invoke(main, ["validate", str(job)])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"OK {job}: job 'orders-etl'")
    assert "4 units in 2 batches" in result.stdout
    assert "the SQL compiles over the batches' columns" in result.stdout
    assert "daily_revenue writable" in result.stdout
    assert not (tmp_path / "etl" / "out").exists()  # nothing was written
    assert not (tmp_path / "etl" / ".dbatch").exists()


def test_validate_finds_a_typo_in_a_sql_step(tmp_path):
    job = init_job(tmp_path / "etl")
    job.write_text(job.read_text().replace("status = 'paid'", "stat = 'paid'"))
    result = CliRunner().invoke(main, ["validate", str(job)])
    assert result.exit_code == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: ") and "steps[0]" in lines[0] and '"stat"' in lines[0]


def test_validate_reports_every_problem_on_its_own_line(tmp_path):
    job = init_job(tmp_path / "etl")
    for f in (tmp_path / "etl" / "landing").glob("*.csv"):
        f.unlink()
    foreign = tmp_path / "etl" / "out" / "daily_revenue"
    foreign.mkdir(parents=True)
    (foreign / "precious.txt").write_text("not dbatch's")
    result = CliRunner().invoke(main, ["validate", str(job)])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2, lines
    assert "key 'source.path'" in lines[0] and "no input files match" in lines[0]
    assert "sink" in lines[1] and "was not written by dbatch" in lines[1]
    assert (foreign / "precious.txt").exists()


def test_validate_refuses_a_bad_job_file_in_one_line(tmp_path):
    job = init_job(tmp_path / "etl")
    job.write_text(job.read_text().replace("count: 2", "count: two"))
    result = CliRunner().invoke(main, ["validate", str(job)])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and str(job) in lines[0] and "batching.count" in lines[0]


def test_validate_checks_that_the_sink_database_answers(tmp_path):
    from conftest import free_port

    job = init_job(tmp_path / "sql", "sql")
    url = f"postgresql+psycopg://nobody@127.0.0.1:{free_port()}/dw"
    text = job.read_text().replace(f'"sqlite:///{(tmp_path / "sql").resolve()}/warehouse.db"', url)
    assert url in text
    job.write_text(text)
    result = CliRunner().invoke(main, ["validate", str(job)])
    assert result.exit_code == 2
    (line,) = result.stderr.strip().splitlines()
    assert "sink" in line and "cannot be reached" in line and "127.0.0.1" in line


# -- quarantine -------------------------------------------------------------------------------


def test_quarantine_lists_rows_with_kind_reason_and_place(tmp_path, client):
    job = init_job(tmp_path / "etl")
    ran = CliRunner().invoke(main, ["run", str(job), "--json"])
    assert ran.exit_code == 0, ran.output
    run_id = json.loads(ran.stdout)["run_id"]

    table = CliRunner(env={"COLUMNS": "250"}).invoke(main, ["quarantine", str(job)])
    assert table.exit_code == 0, table.output
    assert "8 quarantined row(s) and file(s) of 'orders-etl': type 4, allowed 4" in table.stdout
    assert "landing/orders-2026-11-01.csv:18" in table.stdout and run_id in table.stdout
    assert "None" not in table.stdout and "nan" not in table.stdout

    data = json.loads(CliRunner().invoke(main, ["quarantine", str(job), "--json"]).stdout)
    assert (data["version"], data["kind"], data["job"], data["count"]) == (
        1,
        "quarantine",
        "orders-etl",
        8,
    )
    first = data["rows"][0]
    assert first["location"] == "landing/orders-2026-11-01.csv:18" and first["line"] == 18
    assert first["kind"] == "type" and "12.5O" in first["reason"] and "12.5O" in first["raw"]
    assert first["run_id"] == run_id and first["state"] == "published"
    assert first["source"] == str(tmp_path / "etl" / "landing" / "orders-2026-11-01.csv")

    allowed = json.loads(
        CliRunner().invoke(main, ["quarantine", str(job), "--kind", "allowed", "--json"]).stdout
    )
    assert allowed["count"] == 4 and {r["kind"] for r in allowed["rows"]} == {"allowed"}
    batch = first["batch_id"]
    one = json.loads(
        CliRunner().invoke(main, ["quarantine", str(job), "--batch", batch, "--json"]).stdout
    )
    assert one["count"] == 4 and {r["batch_id"] for r in one["rows"]} == {batch}
    none = CliRunner().invoke(main, ["quarantine", str(job), "--kind", "no_such_kind"])
    assert none.exit_code == 0 and "nothing quarantined matching the filters" in none.stdout


def test_quarantine_shows_the_rows_of_refused_batches(tmp_path, client):
    job = init_job(tmp_path / "etl")
    job.write_text(job.read_text().replace("max_bad_fraction: 0.05", "max_bad_fraction: 0.001"))
    ran = CliRunner().invoke(main, ["run", str(job), "--json"])
    assert ran.exit_code == 1  # every batch has 1% bad rows: refused
    data = json.loads(CliRunner().invoke(main, ["quarantine", str(job), "--json"]).stdout)
    assert data["count"] == 8 and {r["state"] for r in data["rows"]} == {"rejected"}
    table = CliRunner().invoke(main, ["quarantine", str(job)]).stdout
    assert "rejected" in table and "state" in table


def test_quarantine_of_a_job_that_never_ran(tmp_path):
    job = init_job(tmp_path / "etl")
    result = CliRunner().invoke(main, ["quarantine", str(job)])
    assert result.exit_code == 0 and "nothing quarantined for 'orders-etl'" in result.stdout
    data = json.loads(CliRunner().invoke(main, ["quarantine", str(job), "--json"]).stdout)
    assert data == {"version": 1, "kind": "quarantine", "job": "orders-etl", "count": 0, "rows": []}


# -- status, history and run: one JSON shape, readable tables ---------------------------------

ISO = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$"


def test_run_status_and_history_share_one_versioned_shape(tmp_path, client):
    import re

    job = init_job(tmp_path / "etl")
    ran = json.loads(CliRunner().invoke(main, ["run", str(job), "--json"]).stdout)
    assert (ran["version"], ran["kind"], ran["job"], ran["status"]) == (
        1,
        "run",
        "orders-etl",
        "succeeded",
    )
    assert re.match(ISO, ran["started"]) and re.match(ISO, ran["ended"])
    assert ran["params"] == {"job_file": str(job.resolve())}  # an object, not JSON text
    assert len(ran["batches"]) == 2 and ran["batches"][0]["error"] is None

    status = json.loads(CliRunner().invoke(main, ["status", str(job), "--json"]).stdout)
    history = json.loads(CliRunner().invoke(main, ["history", str(job), "--json"]).stdout)
    assert (status["version"], status["kind"]) == (1, "status")
    assert (history["version"], history["kind"]) == (1, "history")
    (past,) = history["runs"]
    assert status["last_run"] == past
    # The same run, the same fields, wherever it is printed.
    same = ("run_id", "status", "batches_planned", "batches_committed", "rows_in", "rows_out")
    assert {k: past[k] for k in same} == {k: ran[k] for k in same}
    assert set(past) <= set(ran)
    assert past["params"] == {"job_file": str(job.resolve())}
    assert re.match(ISO, past["started"]) and re.match(ISO, past["ended"])
    for batch in status["batches"]:
        assert set(batch) == set(ran["batches"][0])
        assert re.match(ISO, batch["started"]) and batch["duration"] >= 0
        assert batch["run_id"] == ran["run_id"] and batch["worker"]


def test_status_and_history_tables_read_well(tmp_path, client):
    job = init_job(tmp_path / "etl")
    job.write_text(job.read_text().replace("max_bad_fraction: 0.05", "max_bad_fraction: 0.001"))
    assert CliRunner().invoke(main, ["run", str(job)]).exit_code == 1
    wide = CliRunner(env={"COLUMNS": "250"})
    status = wide.invoke(main, ["status", str(job)])
    assert status.exit_code == 0, status.output
    out = status.stdout
    assert "2 batch(es) of 'orders-etl': 2 failed" in out
    assert "TooManyBadRows: " in out and "more than max_bad_fraction" in out  # class: message
    assert " 400 " in out and " s " in out  # counts, durations with their unit
    for wrong in ("None", "nan", "NaT", "+00:00"):
        assert wrong not in out

    big = json.loads(CliRunner().invoke(main, ["status", str(job), "--json"]).stdout)
    assert {b["error"]["class"] for b in big["batches"]} == {"TooManyBadRows"}

    history = wide.invoke(main, ["history", str(job)])
    assert history.exit_code == 0
    assert "1 run(s) of 'orders-etl'" in history.stdout
    assert "2 planned: 2 failed" in history.stdout
    assert "0 in, 0 out, 0 quarantined" in history.stdout  # a failed run commits nothing
    assert "None" not in history.stdout and "nan" not in history.stdout


def test_table_formats():
    from dbatch.cli.tables import count, duration, when

    assert count(2_500_000) == "2,500,000" and count(None) == "-"
    assert duration(0.4213) == "0.42 s" and duration(83) == "1 min 23 s"
    assert duration(7322) == "2 h 2 min" and duration(None) == "-"
    assert when("2026-11-02T06:15:04.123Z") == "2026-11-02 06:15:04" and when(None) == "-"


def test_set_gives_dask_configuration_to_the_run(tmp_path, client):
    job = init_job(tmp_path / "etl")
    # Without the job's own limit, the configured one applies; --set tightens it.
    text = job.read_text()
    job.write_text("".join(li for li in text.splitlines(True) if "max_bad_fraction:" not in li))
    assert "max_bad_fraction" not in job.read_text().split("bad_input:")[1]
    args = ["run", str(job), "--json", "--set", "dbatch.bad-input.max-bad-fraction=0.001"]
    refused = CliRunner().invoke(main, args)
    assert refused.exit_code == 1, refused.output
    assert json.loads(refused.stdout)["batches_failed"] == 2
    allowed = CliRunner().invoke(main, ["run", str(job), "--json"])
    assert allowed.exit_code == 0 and json.loads(allowed.stdout)["batches_committed"] == 2


def test_set_refuses_what_is_not_key_value(tmp_path):
    job = init_job(tmp_path / "etl")
    result = CliRunner().invoke(main, ["run", str(job), "--set", "n-workers"])
    assert result.exit_code == 2 and "KEY=VALUE" in result.stderr
    typo = CliRunner().invoke(main, ["backfill", "--help"])
    assert "--set KEY=VALUE" in typo.stdout


def test_parse_settings_reads_values_as_yaml(capsys):
    from dbatch.cli.settings import parse_settings

    parsed = parse_settings(["dbatch.cluster.n-workers=2", "distributed.worker.daemon=false"])
    assert parsed == {"dbatch.cluster.n-workers": 2, "distributed.worker.daemon": False}
    assert parse_settings(["dbatch.clustr.n-workers=2"]) == {"dbatch.clustr.n-workers": 2}
    assert "not a known configuration key" in capsys.readouterr().err


def test_status_shows_output_checksums_only_where_there_are_output_files(tmp_path, client):
    aggregated = init_job(tmp_path / "agg")
    plain = init_job(tmp_path / "plain")
    text = plain.read_text()
    start, end = text.index("aggregate:"), text.index("sink:")
    plain.write_text(text[:start] + text[end:])  # the rows themselves, no aggregate
    for job in (aggregated, plain):
        assert CliRunner().invoke(main, ["run", str(job)]).exit_code == 0
    sums = {
        job.parent.name: [
            b["checksum"]
            for b in json.loads(CliRunner().invoke(main, ["status", str(job), "--json"]).stdout)[
                "batches"
            ]
        ]
        for job in (aggregated, plain)
    }
    # Bucket files are not checksummed: no checksum rather than the digest of nothing.
    assert sums["agg"] == [None, None]
    assert all(len(c) == 32 for c in sums["plain"]) and len(set(sums["plain"])) == 2


def test_run_stops_at_a_typo_in_a_sql_step_before_any_batch(tmp_path):
    """The steps are checked on a worker before a batch is sent: one line, exit 2, no output."""
    job = init_job(tmp_path / "etl")
    job.write_text(job.read_text().replace("status = 'paid'", "stat = 'paid'"))
    result = python_m_dbatch("run", str(job), "--json", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "steps[0]" in errors[0] and '"stat"' in errors[0], result.stderr
    assert "Compute Failed" not in result.stderr  # the job file's mistake, not a failed task
    assert not (tmp_path / "etl" / "out" / "daily_revenue").exists()
    history = python_m_dbatch("history", str(job), "--json", cwd=tmp_path)
    runs = json.loads(history.stdout)["runs"]
    assert [r["status"] for r in runs] == ["failed"] and "steps[0]" in runs[0]["message"]


DRIVER_RUN = """
import sys
from distributed import Client, LocalCluster
from dbatch.spec import load_job

if __name__ == "__main__":
    with LocalCluster(n_workers=1, threads_per_worker=1, host="127.0.0.1",
                      dashboard_address="127.0.0.1:0") as cluster, Client(cluster) as client:
        result = load_job(sys.argv[1]).pipeline.run(client=client, progress=False)
        print(result.status, *(m for m in ("duckdb", "pandas") if m in sys.modules))
"""


def test_a_run_on_a_cluster_leaves_duckdb_and_pandas_out_of_the_driver(tmp_path):
    """Checks and estimates run where DuckDB is loaded already; the driver stays small."""
    job = init_job(tmp_path / "etl")
    script = tmp_path / "drive.py"
    script.write_text(DRIVER_RUN)
    done = subprocess.run(
        [sys.executable, str(script), str(job)],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=tmp_path,
        env=checkout_env(),
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["succeeded"], done.stdout
