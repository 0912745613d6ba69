"""History from files, then MQTT, in one job, against the real Mosquitto.

The story of tests/test_hybrid.py with MQTT as the live side: a month of daily
CSV files is backfilled (that first run also opens the job's persistent
session, as a user's first run would), then the topic carries events from a day
and a half before the hand-over time on, some of them published twice (a
publisher's retry); late files arrive, the job runs again (nothing to do) and
resumes after more messages; a moved hand-over is refused. After each run the
job's aggregate equals DuckDB's over everything written and published, each
event once, and each day around the hand-over holds its 40 events.

What MQTT guarantees is what is tested: QoS 1 into the spool, duplicates
dropped by the message key (``key: id``), the spool's position moved to its end
once the batches are committed.
"""

from __future__ import annotations

import json
import shutil
import uuid
from datetime import date, datetime, timedelta
from pathlib import Path

import duckdb
import pandas as pd
import pytest
from test_hybrid import (
    HANDOVER,
    LIVE_FROM,
    PER_DAY,
    day_files,
    events,
    job_output,
    write_hybrid_job,
)
from test_streams_mqtt import publish

from dbatch.errors import JobSpecError
from dbatch.sources.hybrid import Hybrid
from dbatch.sources.streams.mqtt import MqttTopic, Spool
from dbatch.spec import load_job

COLUMNS = "{'id': 'BIGINT', 'ts': 'TIMESTAMP', 'key': 'VARCHAR', 'amount': 'DOUBLE'}"


@pytest.fixture
def session(mqtt_host):
    """A topic and session id of this test's own; the session ended on the broker afterwards."""
    import paho.mqtt.client as mqtt

    mine = "dbatch-test-" + uuid.uuid4().hex[:10]
    yield f"{mine}/orders", mine
    ending = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=mine, clean_session=True)
    ending.connect(*mqtt_host)
    ending.disconnect()


def write_job(tmp_path: Path, mqtt_host, session, handover="2026-11-28T00:00:00Z") -> Path:
    topic, client_id = session
    live = {
        "type": "mqtt",
        "host": mqtt_host[0],
        "port": mqtt_host[1],
        "topic": topic,
        "client_id": client_id,
        "spool": str(tmp_path / "spool" / "orders.sqlite"),
        "key": "id",
        "quiet": 0.3,
    }
    return write_hybrid_job(tmp_path, live, handover)


class Written:
    """What was written to the landing area and published, as DuckDB reads it back."""

    def __init__(self, tmp_path: Path, mqtt_host, topic: str):
        self.landing, self.kept = tmp_path / "landing", tmp_path / "kept"
        self.published = tmp_path / "published.jsonl"
        self.mqtt_host, self.topic = mqtt_host, topic

    def files(self, rows: list[dict], suffix: str = "") -> None:
        day_files(self.landing, rows, suffix)
        day_files(self.kept, rows, suffix)  # the landing area may be cleared; these stay

    def publish(self, rows: list[dict]) -> None:
        payloads = [json.dumps({**r, "ts": r["ts"].isoformat()}) for r in rows]
        with self.published.open("a") as f:
            f.writelines(p + "\n" for p in payloads)
        publish(*self.mqtt_host, self.topic, [p.encode() for p in payloads])

    def aggregate(self) -> pd.DataFrame:
        """The job's computation over all of it at once, each event once."""
        parts = [f"SELECT * FROM read_csv('{self.kept}/*.csv', header=true, columns={COLUMNS})"]
        if self.published.exists():
            parts.append(
                f"SELECT * FROM read_json('{self.published}', format='newline_delimited', "
                f"columns={COLUMNS})"
            )
        sql = f"""
            SELECT CAST(ts AS DATE) AS day, key, count(*) AS n, sum(amount) AS total
            FROM (SELECT DISTINCT id, ts, key, amount FROM ({" UNION ALL ".join(parts)}))
            GROUP BY ALL ORDER BY day, key
        """
        want = duckdb.sql(sql).df()
        return want.assign(day=pd.to_datetime(want["day"]).dt.date)

    def check(self, tmp_path: Path) -> pd.DataFrame:
        got = job_output(tmp_path)
        pd.testing.assert_frame_equal(got, self.aggregate(), check_dtype=False)
        return got


def per_day(frame: pd.DataFrame, first: date, last: date) -> dict[date, int]:
    days = [first + timedelta(days=i) for i in range((last - first).days + 1)]
    n = frame.groupby("day")["n"].sum()
    return {d: int(n.get(d, 0)) for d in days}


def spooled(path: str) -> tuple[int | None, int, int]:
    """The spool's position, its last offset and how many messages it holds."""
    spool = Spool(path)
    try:
        end, count, _, _ = spool.end()
        return spool.position(), end, count
    finally:
        spool.close()


def test_backfill_then_mqtt_equals_all_the_data_at_once(mqtt_host, session, tmp_path, client):
    data = Written(tmp_path, mqtt_host, session[0])
    # A month of daily files, days 1 to 29; day 5 holds only its first half for now.
    history = events(datetime(2026, 11, 1), datetime(2026, 11, 30))
    late_half = [r for r in history if r["ts"] >= datetime(2026, 11, 5, 12) and r["ts"].day == 5]
    data.files([r for r in history if r not in late_half])
    pipeline = load_job(write_job(tmp_path, mqtt_host, session)).pipeline
    assert isinstance(pipeline.source, Hybrid) and isinstance(pipeline.source.live, MqttTopic)
    spool = pipeline.source.live.spool

    # The backfill. Its plan also opens the persistent session: from here on the broker
    # queues what is published for the job.
    backfill = pipeline.run(client=client)
    assert backfill.ok and backfill.committed >= 1, backfill
    assert spooled(spool) == (None, 0, 0)
    got = job_output(tmp_path)
    before_w = [r for r in history if r not in late_half and r["ts"] < HANDOVER]
    assert got["n"].sum() == len(before_w)
    assert HANDOVER.date() not in set(got["day"])  # day 28's file: all of it is the stream's
    assert per_day(got, date(2026, 11, 26), date(2026, 11, 27)) == dict.fromkeys(
        [date(2026, 11, 26), date(2026, 11, 27)], PER_DAY
    )

    # The topic: copies of the last files' events (from Nov 26 noon), then what is new;
    # the publisher sends the twelve hours around W a second time (its retry).
    live = events(LIVE_FROM, datetime(2026, 12, 1))
    around_w = [r for r in live if abs(r["ts"] - HANDOVER) <= timedelta(hours=12)]
    data.publish(live)
    data.publish(around_w)
    first_live = pipeline.run(client=client)
    assert first_live.ok and first_live.skipped == backfill.committed, first_live
    assert spooled(spool) == (len(live), len(live), len(live))  # each message once, by its key
    files_after_w = sum(1 for r in history if r["ts"] >= HANDOVER)
    stream_before_w = sum(1 for r in live if r["ts"] < HANDOVER)
    assert first_live.rows_filtered == files_after_w + stream_before_w
    got = job_output(tmp_path)
    around = per_day(got, date(2026, 11, 25), date(2026, 11, 30))
    assert around == dict.fromkeys(around, PER_DAY)  # W's day: the event at 00:00 once
    w_bucket = got[(got["day"] == HANDOVER.date()) & (got["key"] == "k0")]
    assert w_bucket["n"].tolist() == [PER_DAY // 4]
    assert per_day(got, date(2026, 11, 5), date(2026, 11, 5)) == {date(2026, 11, 5): 20}

    # Late files: day 5's second half (history: read), a file of day 30 (the stream has it).
    data.files(late_half, suffix="-late")
    data.files([r for r in live if r["ts"].day == 30])
    with_late = pipeline.run(client=client)
    assert with_late.ok and with_late.committed == 1, with_late
    got = data.check(tmp_path)
    month = per_day(got, date(2026, 11, 1), date(2026, 11, 30))
    assert month == dict.fromkeys(month, PER_DAY)

    again = pipeline.run(client=client)
    assert again.status == "nothing_to_do", again
    data.check(tmp_path)

    # Resume: more messages, and a late copy of a history event (ts < W: the files have it).
    more = events(datetime(2026, 12, 1), datetime(2026, 12, 2, 6))
    data.publish([history[3], *more])
    resumed = pipeline.run(client=client)
    assert resumed.ok and resumed.skipped == again.skipped, resumed
    assert resumed.rows_in - again.rows_in == len(more) + 1
    got = data.check(tmp_path)
    assert per_day(got, date(2026, 11, 27), date(2026, 12, 2)) == {
        **dict.fromkeys([date(2026, 11, d) for d in range(27, 31)], PER_DAY),
        date(2026, 12, 1): PER_DAY,
        date(2026, 12, 2): 10,  # 00:00 to 05:24, 36 minutes apart
    }
    total = len(live) + len(more) + 1
    assert spooled(spool) == (total, total, total)

    shutil.rmtree(data.landing)  # the landing area cleared after the backfill
    cleared = pipeline.run(client=client)
    assert cleared.status == "nothing_to_do", cleared
    data.check(tmp_path)

    moved = load_job(write_job(tmp_path, mqtt_host, session, "2026-11-29T00:00:00Z")).pipeline
    with pytest.raises(JobSpecError, match="2026-11-28T00:00:00Z.*2026-11-29T00:00:00Z"):
        moved.plan()
    assert spooled(spool) == (total, total, total)


def test_a_message_dropped_by_its_key_takes_no_offset(tmp_path):
    spool = Spool(tmp_path / "spool.sqlite")
    added = [spool.add("t", b"a", "1"), spool.add("t", b"a", "1"), spool.add("t", b"b", "2")]
    added += [spool.add("t", b"c", None), spool.add("t", b"c", None), spool.add("t", b"b", "2")]
    assert added == [True, False, True, True, True, False]
    assert [offset for offset, _ in spool.read(0, 10)] == [1, 2, 3, 4]
    assert spool.end()[:2] == (4, 4)
    spool.close()
    src = MqttTopic(topic="t", spool=str(tmp_path / "spool.sqlite"), chunk=3)
    ranges, _ = src._ranges(0, None)  # (the first plan's ranges: no subscriber connects)
    assert [(r.lo, r.hi, r.messages) for r in ranges] == [(0, 3, 3), (3, 4, 1)]
