"""History from files, then the live stream, in one job: no event twice, none missing.

A month of daily CSV files is backfilled, then a Redis stream or a NATS JetStream
stream (which also holds copies of the last days of the files) is consumed by
the same job; late files arrive, the job runs again and resumes after more
messages. After each run the job's aggregate (count and sum by day and key)
equals the same computation over all the data at once, each event once, in
DuckDB.
"""

from __future__ import annotations

import csv
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa
import pytest
import yaml

from dbatch.context import BatchContext
from dbatch.core import Batch
from dbatch.errors import JobSpecError, SourceError
from dbatch.sources.files import Files
from dbatch.sources.hybrid import Hybrid
from dbatch.sources.streams.redis import RedisStream
from dbatch.spec import load_job

SCHEMA = {"id": "int64", "ts": "timestamp", "key": "string", "amount": "float64"}
HANDOVER = datetime(2026, 11, 28)  # W: the files hold what came before, the stream the rest
PER_DAY = 40
LIVE_FROM = datetime(2026, 11, 26, 12)  # the stream's first message: the overlap starts here


def events(first: datetime, last: datetime) -> list[dict]:
    """Every event in ``[first, last)``: 40 a day, 36 minutes apart; ids follow the time."""
    out = []
    day = datetime(first.year, first.month, first.day)
    while day < last:
        for i in range(PER_DAY):
            ts = day + timedelta(minutes=36 * i)
            if first <= ts < last:
                n = int(ts.replace(tzinfo=UTC).timestamp()) // 60
                out.append({"id": n, "ts": ts, "key": f"k{i % 4}", "amount": (n % 997) * 0.25})
        day += timedelta(days=1)
    return out


def write_csv(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(SCHEMA))
        w.writeheader()
        for r in rows:
            w.writerow({**r, "ts": r["ts"].isoformat()})


def messages(rows: list[dict]) -> list[bytes]:
    return [json.dumps({**r, "ts": r["ts"].isoformat()}).encode() for r in rows]


def day_files(landing: Path, rows: list[dict], suffix: str = "") -> None:
    by_day: dict[str, list[dict]] = {}
    for r in rows:
        by_day.setdefault(r["ts"].date().isoformat(), []).append(r)
    for day, part in by_day.items():
        write_csv(landing / f"orders-{day}{suffix}.csv", part)


def live_options(broker) -> dict:
    if broker.kind == "redis_stream":
        return {"type": "redis_stream", "url": broker.url, "stream": broker.name}
    return {"type": "nats", "servers": broker.url, "stream": broker.name}


def write_job(tmp_path: Path, broker, handover: str = "2026-11-28T00:00:00Z") -> Path:
    return write_hybrid_job(tmp_path, live_options(broker), handover)


def write_hybrid_job(tmp_path: Path, live: dict, handover: str) -> Path:
    """The job file: the landing area's CSV files, then ``live``, handed over at ``handover``."""
    job = {
        "name": "orders",
        "source": {
            "type": "hybrid",
            "history": {"type": "files", "path": "landing/*.csv", "schema": SCHEMA},
            "live": {**live, "format": "json", "schema": SCHEMA, "chunk": 60},
            "time_column": "ts",
            "handover": handover,
        },
        "steps": [{"derive": {"day": "CAST(ts AS DATE)"}}],
        "aggregate": {"by": ["day", "key"], "metrics": {"n": "count(*)", "total": "sum(amount)"}},
        "batching": {"count": 4},
        "sink": {"type": "parquet", "path": "out"},
        "workdir": "work",
    }
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(job, sort_keys=False))
    return path


class AllData:
    """Everything written to the files and published to the stream, as one table."""

    def __init__(self):
        self.rows: list[dict] = []

    def add(self, rows: list[dict]) -> list[dict]:
        self.rows += rows
        return rows

    def aggregate(self) -> pd.DataFrame:
        """The job's computation over all of it at once, each event (by id) once."""
        frame = pd.DataFrame(self.rows)  # noqa: F841 - read by DuckDB below
        sql = """
            SELECT CAST(ts AS DATE) AS day, key, count(*) AS n, sum(amount) AS total
            FROM (SELECT DISTINCT id, ts, key, amount FROM frame)
            GROUP BY ALL ORDER BY day, key
        """
        return duckdb.sql(sql).df()


def job_output(tmp_path: Path) -> pd.DataFrame:
    out = pd.read_parquet(tmp_path / "out")
    out["day"] = pd.to_datetime(out["day"]).dt.date
    return out.sort_values(["day", "key"]).reset_index(drop=True)[["day", "key", "n", "total"]]


def assert_same(got: pd.DataFrame, want: pd.DataFrame) -> None:
    want = want.assign(day=pd.to_datetime(want["day"]).dt.date)
    pd.testing.assert_frame_equal(got, want, check_dtype=False)


def test_backfill_then_live_equals_all_the_data_at_once(broker, tmp_path, client):
    landing, everything = tmp_path / "landing", AllData()
    # A month of daily files, days 1 to 29; day 5 holds only its first half for now.
    history = everything.add(events(datetime(2026, 11, 1), datetime(2026, 11, 30)))
    late_half = [r for r in history if r["ts"] >= datetime(2026, 11, 5, 12) and r["ts"].day == 5]
    day_files(landing, [r for r in history if r not in late_half])
    job = write_job(tmp_path, broker)
    pipeline = load_job(job).pipeline
    assert isinstance(pipeline.source, Hybrid)

    backfill = pipeline.run(client=client)  # the stream is empty or absent yet
    assert backfill.ok, backfill
    before = everything.rows
    everything.rows = [r for r in before if r not in late_half and r["ts"] < HANDOVER]
    assert_same(job_output(tmp_path), everything.aggregate())
    everything.rows = before

    # The stream: copies of the last files' events (from Nov 26 noon), then what is new.
    live = everything.add(events(LIVE_FROM, datetime(2026, 12, 1)))
    broker.publish(messages(live))
    first_live = pipeline.run(client=client)
    assert first_live.ok and first_live.skipped == backfill.committed, first_live
    files_after_w = sum(1 for r in history if r["ts"] >= HANDOVER)
    stream_before_w = sum(1 for r in live if r["ts"] < HANDOVER)
    assert first_live.rows_filtered == files_after_w + stream_before_w
    without_late = AllData()
    without_late.rows = [r for r in everything.rows if r not in late_half]
    assert_same(job_output(tmp_path), without_late.aggregate())
    assert broker.position() == broker.end()

    # Late files: day 5's second half (history: read), a file of day 30 (the stream has it).
    day_files(landing, late_half, suffix="-late")
    day_files(landing, [r for r in live if r["ts"].day == 30])
    with_late = pipeline.run(client=client)
    assert with_late.ok and with_late.committed == 1, with_late
    assert_same(job_output(tmp_path), everything.aggregate())

    again = pipeline.run(client=client)
    assert again.status == "nothing_to_do", again
    assert_same(job_output(tmp_path), everything.aggregate())

    # Resume: more live messages, and a late copy of a history event (ts < W: covered).
    more = everything.add(events(datetime(2026, 12, 1), datetime(2026, 12, 2, 6)))
    broker.publish(messages([history[3], *more]))
    resumed = pipeline.run(client=client)
    assert resumed.ok and resumed.skipped == again.skipped, resumed
    assert resumed.rows_in - again.rows_in == len(more) + 1
    assert_same(job_output(tmp_path), everything.aggregate())
    assert broker.position() == broker.end()

    for f in landing.iterdir():  # the landing area cleared after the backfill
        f.unlink()
    cleared = pipeline.run(client=client)
    assert cleared.status == "nothing_to_do", cleared
    assert_same(job_output(tmp_path), everything.aggregate())

    moved = load_job(write_job(tmp_path, broker, handover="2026-11-29T00:00:00Z")).pipeline
    with pytest.raises(JobSpecError, match="2026-11-28T00:00:00Z.*2026-11-29T00:00:00Z"):
        moved.plan()


# -- the rule at its edges, without a broker --------------------------------------------------


def hybrid(landing: Path, **options) -> Hybrid:
    return Hybrid(
        Files(str(landing / "*.csv"), schema=SCHEMA),
        RedisStream(stream="not-read-here", schema=SCHEMA),
        **{"time_column": "ts", "handover": "2026-11-28T00:00:00Z", **options},
    )


def load_history(source: Hybrid) -> tuple[pa.Table, BatchContext]:
    units = source.history.list_units()
    batch = Batch.from_units([source._wrap("history", u) for u in units], index=0)
    ctx = BatchContext(batch=batch, mode="quarantine")
    return source.load(batch, ctx), ctx


def test_an_event_at_w_is_the_streams_and_one_without_a_time_is_set_aside(tmp_path):
    landing = tmp_path / "landing"
    landing.mkdir()
    (landing / "a.csv").write_text(
        "id,ts,key,amount\n"
        "1,2026-11-27T23:59:59.999999,k0,1.0\n"
        "2,2026-11-28T00:00:00,k0,2.0\n"
        "3,,k1,3.0\n"
        "4,2026-12-01T00:00:00,k1,4.0\n"
    )
    table, ctx = load_history(hybrid(landing))
    assert table.column("id").to_pylist() == [1]
    assert (ctx.rows_in, ctx.rows_filtered, ctx.rows_quarantined) == (4, 2, 1)
    bad = ctx.quarantined_rows().to_pylist()
    assert bad[0]["kind"] == "no_event_time" and json.loads(bad[0]["raw"])["id"] == 3

    # A date column: a date is its midnight, so W at noon leaves W's day to the history.
    dated = {**SCHEMA, "ts": "date"}
    (landing / "a.csv").write_text("id,ts,key,amount\n1,2026-11-28,k0,1.0\n2,2026-11-29,k0,1\n")
    source = Hybrid(
        Files(str(landing / "*.csv"), schema=dated),
        RedisStream(stream="s", schema=dated),
        time_column="ts",
        handover="2026-11-28T12:00:00",
    )
    table, _ = load_history(source)
    assert table.column("id").to_pylist() == [1]


def test_the_sides_and_the_hand_over_are_checked(tmp_path):
    with pytest.raises(JobSpecError, match="no ISO 8601 time"):
        hybrid(tmp_path, handover="after lunch")
    with pytest.raises(JobSpecError, match="give a number"):
        hybrid(tmp_path, handover="2026-11-28", time_column="id")
    with pytest.raises(JobSpecError, match="no column 'when'"):
        hybrid(tmp_path, time_column="when")
    with pytest.raises(JobSpecError, match="must be a stream"):
        Hybrid(Files("a/*.csv"), Files("b/*.csv"), time_column="ts", handover="2026-11-28")
    with pytest.raises(SourceError, match="no input files"):
        hybrid(tmp_path / "empty").list_units()
    numeric = Hybrid(
        Files("a/*.csv", schema=SCHEMA),
        RedisStream(stream="s", schema=SCHEMA),
        time_column="id",
        handover=1000,
    )
    assert numeric.mark == "1000" and "before 1000" in numeric.describe()
