"""Stream sources against the real brokers: each message once, positions after commit, gaps, triggers."""

from __future__ import annotations

import io
import json
import threading
import time

import pandas as pd
import pyarrow as pa
import pytest
from streams_brokers import SCHEMA, NatsBroker, RedisBroker, records

from dbatch import ParquetSink, Pipeline
from dbatch.batching import ByCount, ByThreshold
from dbatch.context import BatchContext
from dbatch.core import Batch
from dbatch.errors import JobSpecError
from dbatch.executors import LocalExecutor
from dbatch.schema import Schema
from dbatch.sources.streams import StreamGapError
from dbatch.sources.streams.decode import decode
from dbatch.spec import load_job
from dbatch.testing import RaiseOn
from dbatch.triggers import Poll
from dbatch.watch import watch


def pipeline(broker, tmp_path, batching=None, steps=(), **options) -> Pipeline:
    return Pipeline(
        broker.source(chunk=50, **options),
        ParquetSink(str(tmp_path / "out")),
        steps=steps,
        batching=batching or ByThreshold(count=50, max_wait=0),
        name="stream",
        workdir=str(tmp_path / "work"),
    )


def output(tmp_path) -> pd.DataFrame:
    return pd.read_parquet(tmp_path / "out")


def test_each_message_once_and_the_position_moves_after_commit(broker, tmp_path, client):
    broker.publish(records(0, 230))
    broker.publish([b"{not json"])
    broker.publish(records(230, 260))
    p = pipeline(broker, tmp_path)
    assert broker.position() is None  # planning read the end only and moved nothing
    first = p.run(client=client)
    assert first.ok and first.rows_quarantined == 1, first
    assert sorted(output(tmp_path)["n"]) == list(range(260))
    assert broker.position() == broker.end()
    bad = pd.read_parquet(tmp_path / "work" / "stream" / "quarantine.parquet")
    assert bad["raw"].tolist() == ["{not json"]
    assert "not a JSON object" in bad["reason"][0] and bad["kind"][0] == "json"

    broker.publish(records(260, 400))
    second = p.run(client=client)
    assert second.ok and second.skipped == first.committed
    frame = output(tmp_path)
    assert frame["n"].is_unique and sorted(frame["n"]) == list(range(400))
    assert second.rows_in - first.rows_in == 140  # the run's counts hold the skipped ones too
    assert broker.position() == broker.end()
    assert p.run(client=client).status == "nothing_to_do"


def test_position_stops_before_a_batch_that_failed(broker, tmp_path, client):
    for wave in range(5):  # Redis cuts by the ids' time: the waves are 30 ms apart
        broker.publish(records(wave * 50, wave * 50 + 50))
        time.sleep(0.03)
    p = pipeline(broker, tmp_path, batching=ByCount(1))
    plan = p.plan()
    assert len(plan) >= 4
    result = p.run(client=client, fault=RaiseOn((plan[2].id,)))
    assert result.status == "failed" and result.failed == 1 and result.committed == len(plan) - 1
    before = plan.batches[:2]  # committed; the ones after the failed batch are too
    position = broker.position()
    assert str(position) == str(dict(before[-1].units[-1].identity)["hi"])
    assert position != broker.end()


def test_planning_is_repeatable_and_new_messages_follow(broker, tmp_path, client):
    broker.publish(records(0, 120))
    p = pipeline(broker, tmp_path)
    plan = p.plan()
    assert [b.id for b in plan] == [b.id for b in p.plan()]
    ranges = [dict(u.identity) for b in plan for u in b.units]
    assert all(a["hi"] == b["lo"] for a, b in zip(ranges, ranges[1:], strict=False))
    assert p.run(client=client).ok
    broker.publish(records(120, 180))
    again = p.plan()
    assert [b.id for b in again][: len(plan)] == [b.id for b in plan]  # the ledger's cut
    new = [dict(u.identity) for b in again.batches[len(plan) :] for u in b.units]
    assert new and new[0]["lo"] == ranges[-1]["hi"]


def test_a_partial_batch_waits_for_count_or_max_wait(broker, tmp_path):
    broker.publish(records(0, 30))
    waiting = pipeline(broker, tmp_path, batching=ByThreshold(count=1000, max_wait=3600))
    assert len(waiting.plan()) == 0  # 30 of 1000 messages, and not an hour old
    time.sleep(1.1)
    impatient = pipeline(broker, tmp_path, batching=ByThreshold(count=1000, max_wait=1))
    [batch] = impatient.plan()
    assert sum(dict(u.identity)["messages"] for u in batch.units) >= 30


def test_retention_gap_is_an_error_naming_it_or_kept_in_the_quarantine(redis_url, tmp_path, client):
    broker = RedisBroker(redis_url)
    try:
        broker.publish(records(0, 100))
        p = pipeline(broker, tmp_path)
        assert p.run(client=client).ok
        broker.publish(records(100, 200))
        broker.drop_oldest(keep=40)  # 60 unread messages trimmed away
        with pytest.raises(StreamGapError, match=r"gone.*retention.*on_gap: skip"):
            p.plan()
        skipping = p.replace(source=broker.source(chunk=50, on_gap="skip"))
        result = skipping.run(client=client)
        assert result.ok, result
        frame = output(tmp_path)
        assert sorted(frame["n"]) == list(range(100)) + list(range(160, 200))
    finally:
        broker.close()


def test_nats_retention_gap_names_the_sequences(nats_url, tmp_path):
    broker = NatsBroker(nats_url, max_msgs=20)
    try:
        broker.publish(records(0, 20))
        p = pipeline(broker, tmp_path)
        assert p.run(executor=LocalExecutor()).ok
        broker.publish(records(20, 120))  # the stream keeps 101..120; 21..100 were not read
        with pytest.raises(StreamGapError, match="messages 21 to 100 are gone"):
            p.plan()
    finally:
        broker.close()


def test_watch_keeps_consuming(broker, tmp_path, client):
    p = pipeline(broker, tmp_path, batching=ByThreshold(count=40, max_wait=0.5))
    stop = threading.Event()
    results = []
    thread = threading.Thread(
        target=watch,
        args=(p, Poll(0.2)),
        kwargs={"client": client, "stop": stop, "on_result": results.append},
    )
    broker.publish(records(0, 10))  # the stream exists before the first look
    thread.start()
    try:
        for wave in range(1, 5):
            broker.publish(records(wave * 50, wave * 50 + 45))
            time.sleep(0.3)
        expected = list(range(10)) + [n for w in range(1, 5) for n in range(w * 50, w * 50 + 45)]
        deadline = time.time() + 60
        while time.time() < deadline:
            if (tmp_path / "out").exists() and sorted(output(tmp_path)["n"]) == expected:
                break
            time.sleep(0.2)
    finally:
        stop.set()
        thread.join(60)
    frame = output(tmp_path)
    assert frame["n"].is_unique and sorted(frame["n"]) == expected
    assert len(results) >= 2 and all(r.ok for r in results)


def test_job_files_name_the_brokers(broker, tmp_path, client):
    broker.publish(records(0, 75))
    job = tmp_path / "job.yaml"
    job.write_text(
        "name: stream\nsource:\n"
        + broker.yaml()
        + "  schema: {n: int64, v: float64, site: string}\n  chunk: 25\n"
        + "batching: {threshold: {count: 25, max_wait: 10s}}\n"
        + "sink: {type: parquet, path: out}\nworkdir: work\n"
    )
    spec = load_job(job)
    assert type(spec.pipeline.source).__name__ in ("RedisStream", "NatsStream")
    assert spec.pipeline.run(client=client).ok
    assert sorted(output(tmp_path)["n"]) == list(range(75))


def test_options_are_checked():
    from dbatch.sources.streams.redis import RedisStream

    with pytest.raises(JobSpecError, match="source.stream"):
        RedisStream(url="redis://127.0.0.1:6379/0")
    with pytest.raises(JobSpecError, match="CSV messages need a schema"):
        RedisStream(stream="s", format="csv")
    with pytest.raises(JobSpecError, match="source.on_gap"):
        RedisStream(stream="s", on_gap="ignore")
    assert "secret" not in repr(RedisStream(url="redis://:secret@h:6379/0", stream="s"))


# -- decoding, without a broker -----------------------------------------------------------------


def ctx() -> BatchContext:
    return BatchContext(batch=Batch("b", (), "f"))


def test_json_messages_bad_ones_kept_with_offset_and_raw():
    c = ctx()
    msgs = [(1, b'{"n": 1, "v": 0.5, "site": "a"}'), (2, b"\xff\xfe"), (3, b'{"n": "x", "v": 1}')]
    table = decode(msgs, "json", Schema.from_mapping(SCHEMA), c, "nats stream S")
    assert table.column("n").to_pylist() == [1]
    q = c.quarantined_rows().to_pylist()
    assert [r["line"] for r in q] == [2, 3]
    assert q[0]["raw"] == "base64://4=" and "message 2" in q[0]["reason"]
    assert q[1]["kind"] == "type" and q[1]["raw"] == '{"n": "x", "v": 1}'
    assert c.rows_in == 3


def test_csv_and_arrow_messages():
    schema = Schema.from_mapping({"n": "int64", "site": "string"})
    c = ctx()
    table = decode([("1-0", b"1,a"), ("2-0", b"2,b,extra"), ("3-0", b"x,c")], "csv", schema, c, "s")
    assert table.column("n").to_pylist() == [1]
    assert sorted(r["kind"] for r in c.quarantined_rows().to_pylist()) == ["csv", "type"]

    sink = io.BytesIO()
    data = pa.table({"n": pa.array([5, 6], pa.int64()), "site": ["p", "q"]})
    with pa.ipc.new_stream(sink, data.schema) as w:
        w.write_table(data)
    c = ctx()
    table = decode([(7, sink.getvalue()), (8, b"not arrow")], "arrow", schema, c, "s")
    assert table.to_pylist() == data.to_pylist()
    [bad] = c.quarantined_rows().to_pylist()
    assert bad["line"] == 8 and bad["kind"] == "arrow"
    assert c.rows_in == 3
    assert json.loads(json.dumps(table.to_pylist()))  # plain values
