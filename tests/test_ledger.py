"""The ledger on SQLite and on the real PostgreSQL: what it records, and the status/history commands."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import dask
import pandas as pd
import pytest
import sqlalchemy as sa
from click.testing import CliRunner

import dbatch
from dbatch.cli import main
from dbatch.ledger import batches, locks, runs
from dbatch.spec import load_job
from dbatch.testing import RaiseOn

ROWS = 30


def write_job(root: Path, name: str, ledger: str | None = None) -> Path:
    landing = root / "landing"
    landing.mkdir(parents=True)
    for f in range(4):
        lines = ["id,amount"] + [f"{f}-{i},{i - 5}" for i in range(ROWS)]
        if f == 2:
            lines.append(f"{f}-bad,not-a-number")  # one quarantined row
        (landing / f"{f}.csv").write_text("\n".join(lines) + "\n")
    job = {
        "name": name,
        "source": {
            "type": "files",
            "path": "landing/*.csv",
            "schema": {"id": "string", "amount": "int64"},
        },
        "batching": {"count": 1},
        "steps": [{"filter": "amount >= 0"}],
        "sink": {"type": "parquet", "path": "out"},
        "workdir": "work",
    }
    if ledger:
        job["ledger"] = ledger
    path = root / "job.yaml"
    path.write_text(json.dumps(job))  # JSON is YAML
    return path


def check_records(ledger: dbatch.Ledger, job: str, run_id: str, failed_batch: str) -> None:
    frame = ledger.batches_frame(job).set_index("batch_id")
    assert len(frame) == 4
    ok = frame.drop(index=failed_batch)
    assert (ok["state"] == "committed").all()
    assert (ok["rows_in"] == ok["rows_out"] + ok["rows_filtered"] + ok["rows_quarantined"]).all()
    assert ok["rows_filtered"].tolist() == [5, 5, 5]
    assert sorted(ok["rows_quarantined"].tolist()) == [0, 0, 1]
    assert ok["fingerprint"].str.len().eq(16).all() and ok["checksum"].str.len().eq(32).all()
    assert (ok["attempts"] == 1).all() and ok["worker"].str.contains(":").all()
    assert (ok["ended"] >= ok["started"]).all() and (ok["duration"] > 0).all()
    assert str(frame["started"].dtype).startswith("datetime64")
    bad = frame.loc[failed_batch]
    assert bad["state"] == "failed" and bad["error_class"] == "ValueError"
    assert "deterministic error" in bad["error_message"] and bad["attempts"] == 1

    runs_frame = ledger.runs_frame(job)
    assert runs_frame["run_id"].tolist()[-1] == run_id
    last = runs_frame.iloc[-1]
    assert last["status"] == "failed" and last["batches_planned"] == 4
    assert last["batches_committed"] == 3 and last["batches_failed"] == 1
    assert last["rows_in"] == 3 * ROWS + 1 and last["rows_out"] == 3 * (ROWS - 5)
    assert last["ended"] >= last["started"]
    assert json.loads(last["params"]) == {"purpose": "ledger test"}


def run_with_one_failure(job_path: Path, client):
    pipeline = load_job(job_path).pipeline
    failed = pipeline.plan()[3].id
    result = pipeline.run(
        client=client, fault=RaiseOn((failed,)), params={"purpose": "ledger test"}
    )
    assert result.status == "failed"
    return pipeline, result, failed


def test_sqlite_ledger_records_runs_and_batches(tmp_path, client):
    pipeline, result, failed = run_with_one_failure(write_job(tmp_path, "nightly"), client)
    # The default: a SQLite file in the work area.
    assert pipeline.ledger_url() == f"sqlite:///{(tmp_path / 'work' / 'ledger.sqlite').resolve()}"
    assert (tmp_path / "work" / "ledger.sqlite").exists()
    ledger = dbatch.Ledger(pipeline.ledger_url())
    check_records(ledger, "nightly", result.run_id, failed)
    ledger.close()


def test_ledger_location_from_config_and_job_file(tmp_path, client):
    with dask.config.set({"dbatch.ledger.url": f"sqlite:///{tmp_path / 'elsewhere.sqlite'}"}):
        pipeline = load_job(write_job(tmp_path / "a", "a")).pipeline
        assert pipeline.run(client=client).status == "succeeded"
    assert (tmp_path / "elsewhere.sqlite").exists()
    assert not (tmp_path / "a" / "work" / "ledger.sqlite").exists()

    job = write_job(tmp_path / "b", "b", ledger="state/ledger.sqlite")  # relative to the job file
    assert load_job(job).pipeline.run(client=client).status == "succeeded"
    assert (tmp_path / "b" / "state" / "ledger.sqlite").exists()


def test_status_and_history_commands(tmp_path, client):
    job = write_job(tmp_path, "nightly")
    _, result, failed = run_with_one_failure(job, client)
    runner = CliRunner()

    status = runner.invoke(main, ["status", str(job), "--json"])
    assert status.exit_code == 0, status.output
    data = json.loads(status.stdout)
    assert (data["version"], data["kind"], data["job"]) == (1, "status", "nightly")
    assert data["last_run"]["run_id"] == result.run_id and data["last_run"]["status"] == "failed"
    states = {b["batch_id"]: b["state"] for b in data["batches"]}
    assert states.pop(failed) == "failed" and set(states.values()) == {"committed"}
    assert {
        "attempts",
        "rows_in",
        "rows_out",
        "rows_quarantined",
        "error",
        "checksum",
    } <= set(data["batches"][0])
    (bad,) = [b for b in data["batches"] if b["batch_id"] == failed]
    assert bad["error"]["class"] and bad["error"]["message"]
    text = runner.invoke(main, ["status", str(job)])
    assert text.exit_code == 0 and "failed" in text.output and failed in text.output

    # Finish the job, then look at the history of both runs.
    fixed = load_job(job).pipeline.run(client=client)
    assert fixed.status == "succeeded" and fixed.committed == 1 and fixed.skipped == 3
    history = runner.invoke(main, ["history", str(job), "--json"])
    assert history.exit_code == 0, history.output
    shape = json.loads(history.stdout)
    assert (shape["version"], shape["kind"]) == (1, "history")
    rows = shape["runs"]
    assert [r["status"] for r in rows] == ["failed", "succeeded"]
    assert [r["batches_committed"] for r in rows] == [3, 1]
    assert rows[1]["batches_skipped"] == 3
    text = runner.invoke(main, ["history", str(job)])
    assert text.exit_code == 0 and result.run_id in text.output and fixed.run_id in text.output


@pytest.mark.postgres
def test_postgres_ledger(tmp_path, client, postgres_url):
    job_name = f"pg-{uuid.uuid4().hex[:10]}"
    job = write_job(tmp_path, job_name, ledger=postgres_url)
    try:
        pipeline, result, failed = run_with_one_failure(job, client)
        assert pipeline.ledger_url() == postgres_url
        ledger = dbatch.Ledger(postgres_url)
        assert ledger.engine.dialect.name == "postgresql"
        check_records(ledger, job_name, result.run_id, failed)
        with ledger.engine.connect() as con:  # the lock was released
            assert con.execute(sa.select(locks).where(locks.c.job == job_name)).first() is None
        ledger.close()

        status = CliRunner().invoke(main, ["status", str(job), "--json"])
        assert status.exit_code == 0, status.output
        assert json.loads(status.stdout)["last_run"]["run_id"] == result.run_id
        again = pipeline.run(client=client)
        assert again.status == "succeeded" and again.committed == 1 and again.skipped == 3
        history = json.loads(CliRunner().invoke(main, ["history", str(job), "--json"]).stdout)
        assert [r["status"] for r in history["runs"]] == ["failed", "succeeded"]
        assert len(pd.read_parquet(tmp_path / "out")) == 4 * (ROWS - 5)
    finally:
        engine = sa.create_engine(postgres_url)
        with engine.begin() as con:
            for table in (batches, runs, locks):
                con.execute(table.delete().where(table.c.job == job_name))
        engine.dispose()


def test_ledger_tables_hold_plain_values_only():
    """No pickled blobs in dbatch's own state: every column is text or a number."""
    plain = (sa.String, sa.Text, sa.Integer, sa.BigInteger, sa.Float)
    for table in (runs, batches, locks):
        for column in table.columns:
            assert isinstance(column.type, plain), (table.name, column.name, column.type)


def _open_ledger(url: str) -> None:
    dbatch.Ledger(url).close()


def test_a_new_ledger_opened_by_many_at_once(tmp_path):
    """Two runs (threads of a kernel, or processes) starting together on a ledger that
    does not exist yet: each creates the tables the others have not, none fails."""
    import multiprocessing
    import threading

    for i in range(100):  # the race shows in about 1 round in 75 on a busy machine
        url = f"sqlite:///{tmp_path / f't{i}' / 'ledger.sqlite'}"
        errors: list[BaseException] = []

        def open_it(url=url, errors=errors):
            try:
                _open_ledger(url)
            except BaseException as e:  # noqa: BLE001 - collected and asserted below
                errors.append(e)

        threads = [threading.Thread(target=open_it) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
    spawn = multiprocessing.get_context("spawn")
    for i in range(3):
        url = f"sqlite:///{tmp_path / f'p{i}' / 'ledger.sqlite'}"
        procs = [spawn.Process(target=_open_ledger, args=(url,)) for _ in range(3)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(120)
        assert [p.exitcode for p in procs] == [0, 0, 0]
    ledger = dbatch.Ledger(url)
    try:
        names = set(sa.inspect(ledger.engine).get_table_names())
        assert {"dbatch_runs", "dbatch_batches"} <= names
    finally:
        ledger.close()


def test_events_handed_together_are_written_in_one_transaction(tmp_path):
    from dbatch.core import Event, EventKind

    ledger = dbatch.Ledger(f"sqlite:///{tmp_path}/ledger.sqlite")

    def started(batch_id: str, **data) -> Event:
        return Event(EventKind.BATCH_STARTED, "r1", "j", batch_id, data)

    ledger.handle_all([started(f"b-{i}", fingerprint="f", attempt=1) for i in range(3)])
    assert set(ledger.batch_states("j")) == {"b-0", "b-1", "b-2"}
    with pytest.raises(KeyError):  # the last one has no fingerprint: none of them is kept
        ledger.handle_all([started("b-3", fingerprint="f"), started("b-4")])
    assert set(ledger.batch_states("j")) == {"b-0", "b-1", "b-2"}
    ledger.record(started("b-5", fingerprint="f"))  # one at a time still works after
    assert "b-5" in ledger.batch_states("j")
    ledger.close()


def test_runs_in_one_process_share_the_ledger_engine_and_a_deleted_ledger_is_made_again(
    tmp_path, client
):
    """The engine of a ledger URL is kept between runs (its compiled SQL with it); its
    connections are not: a work area deleted between two runs gets a new ledger file,
    which records the second run, and nothing is written to the deleted one."""
    import shutil

    pipeline = load_job(write_job(tmp_path, "again")).pipeline
    first = pipeline.run(client=client)
    url = pipeline.ledger_url()
    a, b = dbatch.Ledger(url), dbatch.Ledger(url)
    try:
        assert a.engine is b.engine
        assert a.runs_frame("again")["run_id"].tolist() == [first.run_id]
    finally:
        a.close()
        b.close()
    shutil.rmtree(tmp_path / "work")
    second = pipeline.run(client=client)
    assert second.status == "succeeded" and second.committed == 4  # nothing known: all again
    ledger = dbatch.Ledger(url)
    try:
        assert ledger.runs_frame("again")["run_id"].tolist() == [second.run_id]
    finally:
        ledger.close()
    assert (
        dbatch.Ledger("sqlite:///:memory:").engine is not dbatch.Ledger("sqlite:///:memory:").engine
    )


def _record_in_child(url: str, parents_engine: int) -> None:
    import os

    ledger = dbatch.Ledger(url)  # a new engine: the parent's is forgotten, not closed
    try:
        ledger.acquire("child-job", "child-run")
        ledger.release("child-job", "child-run")
    finally:
        ledger.close()
    os._exit(3 if id(ledger.engine) == parents_engine else 0)


def test_a_forked_child_opens_its_own_ledger_engine(tmp_path):
    import multiprocessing

    url = f"sqlite:///{tmp_path}/ledger.sqlite"
    parent = dbatch.Ledger(url)
    try:
        with parent.engine.connect() as con:  # a connection now pooled in the parent
            con.execute(sa.text("SELECT 1"))
        fork = multiprocessing.get_context("fork")
        child = fork.Process(target=_record_in_child, args=(url, id(parent.engine)))
        child.start()
        child.join(60)
        assert child.exitcode == 0
        with parent.engine.connect() as con:  # the parent's pooled connection still works
            assert con.execute(sa.text("SELECT count(*) FROM dbatch_locks")).scalar() == 0
    finally:
        parent.close()
