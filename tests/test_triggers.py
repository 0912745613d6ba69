"""Triggers, `dbatch watch` and `dbatch backfill`: cron calendars, interval and arrival loops, windows."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pandas as pd
import pytest
from click.testing import CliRunner

from dbatch import ByCount, ByWindow, Files, JobSpecError, Ledger, ParquetSink, Pipeline
from dbatch.backfill import UnitsBetween, backfill
from dbatch.cli import main
from dbatch.spec import load_job
from dbatch.triggers import Arrival, Cron, Interval, parse_duration
from dbatch.watch import watch

BERLIN = ZoneInfo("Europe/Berlin")


def fires(trigger: Cron, start: datetime, n: int) -> list[str]:
    """The next ``n`` fire times after ``start``, each from the previous one, as ISO strings."""
    out, now = [], start
    for _ in range(n):
        now = trigger.next_fire(now)
        out.append(now.isoformat())
    return out


# -- cron calendars (plain data, no cluster) -------------------------------------------


def test_cron_daily_in_utc_and_month_ends():
    start = datetime(2026, 11, 1, 2, 0, tzinfo=UTC)  # exactly at a fire time: the next one
    assert fires(Cron("0 2 * * *"), start, 2) == [
        "2026-11-02T02:00:00+00:00",
        "2026-11-03T02:00:00+00:00",
    ]
    # The 31st skips months without one; L is the last day, February of a leap year included.
    assert fires(Cron("0 0 31 * *"), datetime(2026, 4, 1, tzinfo=UTC), 3) == [
        "2026-05-31T00:00:00+00:00",
        "2026-07-31T00:00:00+00:00",
        "2026-08-31T00:00:00+00:00",
    ]
    assert fires(Cron("0 0 L * *"), datetime(2028, 1, 31, 12, tzinfo=UTC), 2) == [
        "2028-02-29T00:00:00+00:00",
        "2028-03-31T00:00:00+00:00",
    ]
    # Given in UTC, answered in the trigger's zone.
    local = Cron("0 6 * * *", tz="Europe/Berlin").next_fire(datetime(2026, 11, 30, 12, tzinfo=UTC))
    assert local.isoformat() == "2026-12-01T06:00:00+01:00"


def test_cron_across_daylight_saving_changes():
    nightly = Cron("30 2 * * *", tz="Europe/Berlin")
    # Spring forward (29 March 2026): 02:30 does not exist; it fires once, at the change.
    assert fires(nightly, datetime(2026, 3, 28, 12, tzinfo=BERLIN), 2) == [
        "2026-03-29T03:00:00+02:00",
        "2026-03-30T02:30:00+02:00",
    ]
    # Fall back (25 October 2026): 02:30 happens twice; a nightly job runs once.
    assert fires(nightly, datetime(2026, 10, 24, 12, tzinfo=BERLIN), 2) == [
        "2026-10-25T02:30:00+02:00",
        "2026-10-26T02:30:00+01:00",
    ]
    # An hourly job runs in both repeated hours: they are different hours of real time.
    hourly = fires(
        Cron("0 * * * *", tz="Europe/Berlin"), datetime(2026, 10, 25, 1, 30, tzinfo=BERLIN), 3
    )
    assert hourly == [
        "2026-10-25T02:00:00+02:00",
        "2026-10-25T02:00:00+01:00",
        "2026-10-25T03:00:00+01:00",
    ]
    # After the run at the first fire time, the next one is a day later.
    first = datetime.fromisoformat("2026-10-25T02:30:00+02:00")
    assert nightly.next_fire(first, last=first).isoformat() == "2026-10-26T02:30:00+01:00"


def test_interval_and_arrival_durations():
    assert Interval("1h").seconds == 3600 and Interval("30min").seconds == 1800
    assert Interval(90).seconds == 90 and parse_duration("10") == 10.0  # not nanoseconds
    now = datetime(2026, 11, 1, tzinfo=UTC)
    every = Interval("30s")
    assert every.next_fire(now) == now  # at once, then every 30 s after the last start
    assert every.next_fire(now, last=now).isoformat() == "2026-11-01T00:00:30+00:00"
    assert Arrival(count=3, poll="250ms").poll == 0.25
    assert Arrival(bytes="1KiB").bytes == 1024
    for bad in ("soon", 0, -5, True, "0s"):
        with pytest.raises(JobSpecError, match="schedule.every"):
            Interval(bad)
    with pytest.raises(JobSpecError, match="exactly one of count"):
        Arrival(count=3, bytes=10)
    with pytest.raises(JobSpecError, match="schedule.cron"):
        Cron("61 * * * *")
    with pytest.raises(JobSpecError, match="time zone"):
        Cron("0 2 * * *", tz="Mars/Olympus")


def test_triggers_meet_the_trigger_protocol_and_the_old_names_still_import():
    import dbatch.backfill
    import dbatch.triggers
    import dbatch.watch
    from dbatch.protocols import Trigger

    for trigger in (Cron("0 2 * * *"), Interval("1h"), Arrival(count=3)):
        assert isinstance(trigger, Trigger)
    assert dbatch.triggers.watch is dbatch.watch.watch
    assert dbatch.triggers.summary_line is dbatch.watch.summary_line
    assert dbatch.triggers.backfill is dbatch.backfill.backfill
    assert dbatch.triggers.UnitsBetween is dbatch.backfill.UnitsBetween
    assert "watch" in dir(dbatch.triggers)


# -- schedule: in job files ---------------------------------------------------------------


def job_yaml(root: Path, extra: str, name: str = "trig") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    path = root / "job.yaml"
    path.write_text(
        f"name: {name}\n"
        "source: {type: files, path: in/*.csv}\n"
        "batching: {count: 1}\n"
        "sink: {type: parquet, path: out/result}\n" + textwrap.dedent(extra)
    )
    return path


@pytest.mark.parametrize(
    ("schedule", "key", "words"),
    [
        ('{cron: "0 25 * * *"}', "schedule.cron", "not a cron expression"),
        ('{cron: "0 2 * * *", tz: Nowhere/Land}', "schedule.tz", "unknown time zone"),
        ("{every: soon}", "schedule.every", "positive duration"),
        ("{arrival: {count: 0}}", "schedule.arrival.count", "positive whole number"),
        ("{arrival: {count: 3, wait: 1s}}", "schedule.arrival", "{count: N}"),
        ("{every: 1h, cron: '0 2 * * *'}", "schedule", "expected one of"),
        ("{every: 1h, tz: UTC}", "schedule", "unknown key(s) ['tz']"),
        ("daily", "schedule", "expected one of"),
    ],
)
def test_bad_schedule_names_the_file_and_key(tmp_path, schedule, key, words):
    path = job_yaml(tmp_path, f"schedule: {schedule}\n")
    with pytest.raises(JobSpecError) as info:
        load_job(path)
    message = str(info.value)
    assert message.startswith(f"{path}: key '{key}': "), message
    assert words in message


def test_schedule_forms_become_triggers(tmp_path):
    forms = {
        '{cron: "0 2 * * *", tz: Europe/Berlin}': Cron("0 2 * * *", tz="Europe/Berlin"),
        "{every: 1h}": Interval(3600),
        "{every: 45}": Interval(45),
        "{arrival: {count: 10, poll: 30s}}": Arrival(count=10, poll=30),
        "{arrival: {bytes: 1MiB}}": Arrival(bytes=2**20),
    }
    for text, expected in forms.items():
        assert load_job(job_yaml(tmp_path, f"schedule: {text}\n")).schedule == expected
    assert load_job(job_yaml(tmp_path, "")).schedule is None


def test_watch_without_a_schedule_says_what_to_add(tmp_path):
    path = job_yaml(tmp_path, "")
    result = CliRunner().invoke(main, ["watch", str(path), "--once"])
    assert result.exit_code == 2
    assert "key 'schedule': no schedule; add one of" in result.stderr


# -- watching on a real cluster ----------------------------------------------------------


def write_csv(path: Path, prefix: str, rows: int = 3) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["id,amount"] + [f"{prefix}-{i},{i}" for i in range(rows)]
    path.write_text("\n".join(lines) + "\n")


def test_interval_watch_runs_twice_and_the_second_run_has_nothing_to_do(tmp_path, client):
    for i in range(3):
        write_csv(tmp_path / "in" / f"part-{i}.csv", f"p{i}")
    path = job_yaml(tmp_path, "schedule: {every: 0.2s}\n")
    started = time.monotonic()
    result = CliRunner().invoke(main, ["watch", str(path), "--max-runs", "2", "--json"])
    assert result.exit_code == 0, result.output
    runs = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["status"] for r in runs] == ["succeeded", "nothing_to_do"]
    assert runs[0]["batches_committed"] == 3 and runs[1]["batches_skipped"] == 3
    assert runs[0]["run_id"] != runs[1]["run_id"]
    assert time.monotonic() - started < 60
    history = Ledger(load_job(path).pipeline.ledger_url())
    try:
        assert list(history.runs_frame("trig")["status"]) == ["succeeded", "nothing_to_do"]
    finally:
        history.close()


def test_watch_leaves_open_a_client_it_did_not_make(tmp_path):
    """A notebook's ``dbatch.connect()`` cluster outlives a ``watch`` that borrowed it."""
    from dbatch.cluster import _local_client

    write_csv(tmp_path / "in" / "a.csv", "a")
    pipeline = Pipeline(
        Files(str(tmp_path / "in" / "*.csv")),
        ParquetSink(str(tmp_path / "out")),
        name="borrow",
        workdir=str(tmp_path / "work"),
    )
    mine = _local_client(1, 1)  # what dbatch.connect() makes when there is no client yet
    cluster = mine.cluster
    try:
        with mine.as_current():
            outcome = watch(pipeline, Interval(3600), max_runs=1)
        assert outcome.runs == 1 and outcome.last.status == "succeeded", outcome
        assert mine.status == "running" and cluster.status.name == "running"
        assert mine.submit(sum, [1, 2]).result() == 3
    finally:
        mine.close()
        cluster.close()


def test_arrival_fires_only_after_three_new_files(tmp_path, client):
    landing = tmp_path / "in"
    write_csv(landing / "a-00.csv", "old")
    pipeline = Pipeline(
        Files(str(landing / "*.csv")),
        ParquetSink(str(tmp_path / "out")),
        batching=ByCount(1),
        name="arrive",
        workdir=str(tmp_path / "work"),
    )
    assert pipeline.run(client=client).committed == 1
    trigger = Arrival(count=3, poll=0.05)
    dropped: list[float] = []

    def drop_files() -> None:
        for i in range(1, 4):
            time.sleep(0.4)
            write_csv(landing / f"a-{i:02d}.csv", f"new{i}")
            dropped.append(time.time())

    ledger = Ledger(pipeline.ledger_url())
    try:
        assert not trigger.ready(pipeline, ledger)  # nothing new yet
        dropper = threading.Thread(target=drop_files)
        dropper.start()
        results = []
        outcome = watch(pipeline, trigger, client=client, max_runs=1, on_result=results.append)
        dropper.join()
        assert outcome.runs == 1 and not outcome.last_failed
        [result] = results
        run_started = pd.Timestamp(ledger.runs_frame("arrive")["started"].iloc[-1])
        assert run_started.timestamp() >= dropped[2]  # not before the third file landed
        assert result.committed == 3 and result.skipped == 1
        assert len(pd.read_parquet(tmp_path / "out")) == 4 * 3
        assert not trigger.ready(pipeline, ledger)  # everything is recorded now
        write_csv(landing / "a-04.csv", "more")
        assert [u.key for u in trigger.pending(pipeline, ledger)] == [str(landing / "a-04.csv")]
    finally:
        ledger.close()


def test_watch_keeps_going_after_failed_runs_and_alerts_each(tmp_path, client):
    """A job file whose map step fails one file: each run fails, is reported, alerts fire."""
    for i in range(2):
        write_csv(tmp_path / "in" / f"part-{i}.csv", f"p{i}")
    write_csv(tmp_path / "in" / "part-9.csv", "boom")
    (tmp_path / "trig_steps.py").write_text(
        "def explode(df):\n"
        "    if df['id'].str.startswith('boom').any():\n"
        "        raise ValueError('a bad file for this test')\n"
        "    return df\n"
    )
    alerts = tmp_path / "alerts.jsonl"
    script = "import sys; open(sys.argv[1], 'a').write(sys.stdin.read() + chr(10))"
    path = job_yaml(
        tmp_path,
        f"""\
        steps:
          - map: {{function: "trig_steps:explode"}}
        schedule: {{every: 0.1s}}
        alerts:
          - on: [failed]
            command: {json.dumps([sys.executable, "-c", script, str(alerts)])}
        """,
    )
    try:
        result = CliRunner().invoke(main, ["watch", str(path), "--max-runs", "2", "--json"])
    finally:
        sys.modules.pop("trig_steps", None)
    assert result.exit_code == 1, result.output  # the last run failed
    runs = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["status"] for r in runs] == ["failed", "failed"]
    assert runs[0]["batches_committed"] == 2 and runs[1]["batches_skipped"] == 2
    assert runs[1]["batches_failed"] == 1
    sent = [json.loads(line) for line in alerts.read_text().splitlines()]
    assert [a["run_id"] for a in sent] == [r["run_id"] for r in runs]
    assert "a bad file for this test" in sent[0]["errors"][0]["error_message"]


def test_a_run_that_cannot_start_is_reported_and_the_watch_goes_on(tmp_path, client):
    (tmp_path / "in").mkdir()
    pipeline = Pipeline(
        Files(str(tmp_path / "in" / "*.csv")),
        ParquetSink(str(tmp_path / "out")),
        name="empty",
        workdir=str(tmp_path / "work"),
    )
    errors: list[Exception] = []
    finished = []
    outcome = watch(
        pipeline,
        Interval(0.05),
        client=client,
        max_runs=2,
        on_error=errors.append,
        listeners=[lambda e: finished.append(e) if e.kind == "finished" else None],
    )
    assert outcome.runs == 2 and outcome.failed == 2 and outcome.last_failed
    assert all("no input files match" in str(e) for e in errors)
    assert [e.data["status"] for e in finished] == ["failed", "failed"]
    assert "could not start" in finished[0].data["message"]


def test_sigterm_stops_the_watch_cleanly(tmp_path, client):
    write_csv(tmp_path / "in" / "part-0.csv", "p0")
    path = job_yaml(tmp_path, "schedule: {every: 0.3s}\n")
    proc = subprocess.Popen(
        [
            shutil.which("dbatch") or "dbatch",
            "watch",
            str(path),
            "--scheduler",
            client.scheduler.address,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "DASK_DISTRIBUTED__WORKER__DAEMON": "False"},
    )
    guard = threading.Timer(120, proc.kill)  # never hang the suite
    guard.start()
    try:
        lines = iter(proc.stdout.readline, "")
        first = next(line for line in lines if " trig run " in line)  # the first run's summary
        assert "succeeded" in first, first
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        guard.cancel()
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "SIGTERM: stopping after the current run" in err
    assert "(stopped)" in err
    history = Ledger(load_job(path).pipeline.ledger_url())
    try:
        runs = history.runs_frame("trig")
        assert (runs["status"] != "running").all()  # no run left half done
        assert history.last_run("trig") is not None
    finally:
        history.close()


# -- backfills -----------------------------------------------------------------------------


def daily_pipeline(tmp_path: Path, batching=None) -> Pipeline:
    for day in range(1, 6):
        for branch in ("a", "b"):
            write_csv(tmp_path / "in" / f"2026-11-{day:02d}-{branch}.csv", f"{day}{branch}")
    return Pipeline(
        Files(str(tmp_path / "in" / "*.csv"), time_pattern=r"(\d{4}-\d{2}-\d{2})"),
        ParquetSink(str(tmp_path / "out")),
        batching=batching or ByWindow("1D"),
        name="daily",
        workdir=str(tmp_path / "work"),
    )


def window_ids(pipeline: Pipeline, *days: int) -> set[str]:
    wanted = {f"2026-11-{d:02d}" for d in days}
    return {b.id for b in pipeline.plan() if Path(b.units[0].key).name[:10] in wanted}


def committed_ids(pipeline: Pipeline) -> set[str]:
    ledger = Ledger(pipeline.ledger_url())
    try:
        return {k for k, r in ledger.batch_states("daily").items() if r.state == "committed"}
    finally:
        ledger.close()


def test_backfill_runs_exactly_the_windows_asked_for(tmp_path, client):
    p = daily_pipeline(tmp_path)
    first = backfill(p, "2026-11-02", "2026-11-04", client=client)
    assert first.status == "succeeded", first
    ran = {b["batch_id"] for b in first.batches if b["state"] == "committed"}
    assert ran == window_ids(p, 2, 3) == committed_ids(p)
    assert sorted(pd.read_parquet(tmp_path / "out")["id"].str[:2].unique()) == [
        "2a", "2b", "3a", "3b"
    ]  # fmt: skip

    # Another window: the first stays published, nothing else runs.
    second = backfill(p, "2026-11-05", "2026-11-06", client=client)
    assert second.committed == 1 and second.skipped == 2 and second.planned == 3
    assert committed_ids(p) == window_ids(p, 2, 3, 5)
    assert len(pd.read_parquet(tmp_path / "out")) == 3 * 2 * 3

    # Already committed: no work, unless forced.
    again = backfill(p, "2026-11-02", "2026-11-03", client=client)
    assert again.status == "nothing_to_do" and again.committed == 0
    forced = backfill(p, "2026-11-02", "2026-11-03", client=client, force=True)
    assert forced.committed == 1 and forced.skipped == 2
    assert {b["batch_id"] for b in forced.batches if b["state"] == "committed"} == window_ids(p, 2)

    # A plain run does the rest.
    rest = p.run(client=client)
    assert rest.committed == 2 and rest.skipped == 3
    assert len(pd.read_parquet(tmp_path / "out")) == 5 * 2 * 3


def test_backfill_refuses_straddling_batches_and_empty_ranges(tmp_path):
    p = daily_pipeline(tmp_path, batching=ByCount(4))  # 4 files = two days per batch
    with pytest.raises(JobSpecError, match="inside and outside") as info:
        backfill(p, "2026-11-02", "2026-11-03")
    assert "window: 1D" in str(info.value)
    daily = daily_pipeline(tmp_path)
    with pytest.raises(JobSpecError, match="no batch falls in") as info:
        backfill(daily, "2027-01-01", "2027-02-01")
    assert "2026-11-01 00:00 to 2026-11-05 00:00 UTC" in str(info.value)
    with pytest.raises(JobSpecError, match="must come before"):
        UnitsBetween("2026-11-03", "2026-11-01")
    with pytest.raises(JobSpecError, match="not a date"):
        UnitsBetween("yesterday-ish", "2026-11-01")
    assert not (tmp_path / "work" / "daily" / "batches").exists()  # nothing ran


def test_backfill_command(tmp_path, client):
    daily_pipeline(tmp_path)  # writes the landing files
    path = tmp_path / "job.yaml"
    path.write_text(
        "name: daily\n"
        "source: {type: files, path: in/*.csv, time_pattern: '(\\d{4}-\\d{2}-\\d{2})'}\n"
        "batching: {window: 1D}\n"
        "sink: {type: parquet, path: out}\n"
    )
    args = ["backfill", str(path), "--start", "2026-11-04", "--end", "2026-11-05", "--json"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["batches_committed"] == 1 and summary["batches_planned"] == 1
    assert sorted(pd.read_parquet(tmp_path / "out")["id"].str[:2].unique()) == ["4a", "4b"]
    again = CliRunner().invoke(main, [*args, "--force"])
    assert json.loads(again.stdout)["batches_committed"] == 1
    bad = CliRunner().invoke(main, ["backfill", str(path), "--start", "x", "--end", "2026-11-05"])
    assert bad.exit_code == 2 and "not a date or timestamp" in bad.stderr
