"""backfill --dry-run: the windows and batches a backfill would run, what is committed, and
estimates of time and memory from the ledger's history; the ledger's bytes and peak memory."""

from __future__ import annotations

import json
import math

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from test_triggers import daily_pipeline, window_ids

import dbatch.cluster
from dbatch.backfill import backfill, preview_backfill
from dbatch.cli import main
from dbatch.ledger import Ledger
from dbatch.memory import PeakMemory

JOB = (
    "name: daily\n"
    "source: {type: files, path: in/*.csv, time_pattern: '(\\d{4}-\\d{2}-\\d{2})'}\n"
    "batching: {window: 1D}\n"
    "sink: {type: parquet, path: out}\n"
)


@pytest.fixture
def no_cluster(monkeypatch):
    """A preview that tried to start or reach a cluster would fail here."""

    def refuse(*args, **kwargs):
        raise AssertionError("a dry run started a cluster")

    monkeypatch.setattr(dbatch.cluster, "_local_client", refuse)
    monkeypatch.setattr(dbatch.cluster, "connect", refuse)


def test_a_dry_run_before_any_run_lists_the_windows_without_estimates(tmp_path, no_cluster):
    p = daily_pipeline(tmp_path)
    preview = preview_backfill(p, "2026-11-02", "2026-11-04")
    assert [b["action"] for b in preview.batches] == ["run", "run"]
    assert {b["batch_id"] for b in preview.batches} == window_ids(p, 2, 3)
    assert [b["first"][:10] for b in preview.batches] == ["2026-11-02", "2026-11-03"]
    assert all(b["units"] == 2 and b["bytes"] > 0 for b in preview.batches)
    summary = preview.summary()
    assert summary["to_run"] == 2 and summary["batch_seconds"] is None
    assert not (tmp_path / "work" / "daily" / "batches").exists()


def test_a_dry_run_after_runs_estimates_from_the_ledger(tmp_path, client):
    p = daily_pipeline(tmp_path)
    assert backfill(p, "2026-11-02", "2026-11-04", client=client).status == "succeeded"
    ledger = Ledger(p.ledger_url())
    try:
        frame = ledger.batches_frame("daily")
    finally:
        ledger.close()
    sizes = {b.id: b.size for b in p.plan()}
    assert (frame["bytes"] == frame["batch_id"].map(sizes)).all()  # each batch's input bytes
    assert frame["peak_memory"].notna().all() and (frame["peak_memory"] >= 0).all()

    preview = preview_backfill(p, "2026-11-02", "2026-11-05", threads=2)
    actions = {b["batch_id"]: b["action"] for b in preview.batches}
    assert actions == {
        **dict.fromkeys(window_ids(p, 2, 3), "skip"),
        **dict.fromkeys(window_ids(p, 4), "run"),
    }
    (todo,) = preview.to_run
    per_byte = frame["duration"].sum() / frame["bytes"].sum()
    assert todo["seconds"] == pytest.approx(todo["bytes"] * per_byte)
    ratio = (frame["peak_memory"] / frame["bytes"]).max()  # the worst seen, per byte
    assert todo["memory"] == max(int(frame["peak_memory"].max()), math.ceil(todo["bytes"] * ratio))
    summary = preview.summary()
    assert summary["history_batches"] == 2 and summary["committed"] == 2
    assert summary["wall_seconds"] == pytest.approx(summary["batch_seconds"] / 2)
    forced = preview_backfill(p, "2026-11-02", "2026-11-05", force=True)
    assert [b["action"] for b in forced.batches] == ["run", "run", "run"]


def test_the_dry_run_command(tmp_path, no_cluster):
    daily_pipeline(tmp_path)
    (tmp_path / "job.yaml").write_text(JOB)
    args = ["backfill", str(tmp_path / "job.yaml"), "--start", "2026-11-01", "--end", "2026-11-03"]
    shown = CliRunner().invoke(main, [*args, "--dry-run"])
    assert shown.exit_code == 0, shown.output
    assert "2 of 2 batch(es) to run" in shown.output and "no estimate" in shown.output
    as_json = CliRunner().invoke(main, [*args, "--dry-run", "--json"])
    data = json.loads(as_json.stdout)
    assert data["to_run"] == 2 and len(data["batch_list"]) == 2
    assert not (tmp_path / ".dbatch" / "daily" / "batches").exists()


def test_an_older_ledger_gets_the_new_columns(tmp_path):
    url = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    Ledger(url).close()
    engine = sa.create_engine(url)
    with engine.begin() as con:
        con.execute(sa.text("ALTER TABLE dbatch_batches DROP COLUMN peak_memory"))
        con.execute(sa.text("ALTER TABLE dbatch_batches DROP COLUMN bytes"))
    Ledger(url).close()
    names = {c["name"] for c in sa.inspect(engine).get_columns("dbatch_batches")}
    engine.dispose()
    assert {"bytes", "peak_memory"} <= names


def test_peak_memory_sees_what_a_block_allocates():
    with PeakMemory(every=0.01) as peak:
        block = bytearray(64 * 2**20)
        block[::4096] = b"x" * len(block[::4096])  # touch every page
    assert peak.grown >= 48 * 2**20
    with PeakMemory() as quiet:
        pass
    assert quiet.grown < 16 * 2**20


def test_peak_memory_shares_one_sampling_thread():
    import threading

    for _ in range(20):
        with PeakMemory(every=0.001):
            pass
    samplers = [t for t in threading.enumerate() if t.name == "dbatch-peak-memory"]
    assert len(samplers) == 1
