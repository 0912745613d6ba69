"""docs/streams.md has one runnable example per broker: its job file, fed the message its commands publish.

Each broker's section holds a job file and the shell commands that try it. The
test runs that job file against the real broker, with the stream, subject or
topic renamed to one of the test's own (the shared brokers keep other tests'
messages), and follows the section's commands: it publishes their JSON message,
waits ``max_wait`` (a lone message is a partial batch; the test sets ``max_wait``
to one second rather than sleep ten), and runs the job.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from pathlib import Path

import pandas as pd
import yaml
from streams_brokers import NatsBroker, RedisBroker

from dbatch.sources.streams.mqtt import Spool
from dbatch.spec import load_job

DOC = Path(__file__).resolve().parent.parent / "docs" / "streams.md"
SECTIONS = {"redis_stream": "Redis Streams", "nats": "NATS JetStream", "mqtt": "MQTT"}


def example(title: str) -> tuple[dict, list[str], list[dict]]:
    """The job file, the shell commands and the JSON messages of a section of the page."""
    text = DOC.read_text()
    found = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, re.S | re.M)
    assert found, f"docs/streams.md has no section '## {title}'"
    body = found.group(1)
    jobs = [yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)```", body, re.S)]
    jobs = [j for j in jobs if isinstance(j, dict) and "source" in j]
    assert len(jobs) == 1, f"{title}: expected one job file, found {len(jobs)}"
    commands = [c for b in re.findall(r"```bash\n(.*?)```", body, re.S) for c in b.splitlines()]
    messages = [json.loads(m) for c in commands for m in re.findall(r"'(\{.*\})'", c)]
    assert messages, f"{title}: the commands publish no message"
    assert any(c.startswith("dbatch run ") for c in commands), f"{title}: no `dbatch run`"
    assert any(c.startswith("sleep 10 ") for c in commands), f"{title}: no wait for max_wait"
    return jobs[0], commands, messages


MAX_WAIT = 1.0


def write(job: dict, tmp_path: Path) -> Path:
    """The job file with ``max_wait`` at one second (the page's commands sleep its 10 s)."""
    assert job["batching"]["threshold"]["max_wait"] == "10s"
    job["batching"]["threshold"]["max_wait"] = MAX_WAIT
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(job, sort_keys=False))
    return path


def run(job: dict, tmp_path: Path, client):
    time.sleep(MAX_WAIT + 0.2)  # the commands' `sleep 10`
    spec = load_job(write(job, tmp_path))
    result = spec.pipeline.run(client=client, progress=False)
    assert result.ok and result.rows_out == result.rows_in, result
    return spec.pipeline


def same_rows(frame: pd.DataFrame, messages: list[dict], schema: dict) -> None:
    assert len(frame) == len(messages)
    for column, kind in schema.items():
        wanted = [m[column] for m in messages]
        got = frame[column].tolist()
        if kind == "timestamp":
            got = [pd.Timestamp(v).isoformat() for v in got]
        assert got == wanted, column


def test_every_broker_has_one_example():
    for kind, title in SECTIONS.items():
        job, _, _ = example(title)
        assert job["source"]["type"] == kind, title


def test_the_redis_example_runs(redis_url, tmp_path, client):
    job, commands, messages = example(SECTIONS["redis_stream"])
    assert any(c.startswith(f"redis-cli XADD {job['source']['stream']} ") for c in commands)
    broker = RedisBroker(redis_url)
    try:
        job["source"].update(url=redis_url, stream=broker.name)
        broker.publish(json.dumps(m).encode() for m in messages)
        run(job, tmp_path, client)
        same_rows(
            pd.read_parquet(tmp_path / job["sink"]["path"]), messages, job["source"]["schema"]
        )
        assert broker.position(job["source"]["group"]) == broker.end()
    finally:
        broker.close()


def test_the_nats_example_runs(nats_url, tmp_path, client):
    job, commands, messages = example(SECTIONS["nats"])
    stream, subject = job["source"]["stream"], job["source"]["subject"]
    assert any(c.startswith(f"nats stream add {stream} --subjects '{subject}'") for c in commands)
    published = [c.split()[2] for c in commands if c.startswith("nats pub ")]
    broker = NatsBroker(nats_url)  # subjects <name>.>: the documented ones under a prefix
    try:
        job["source"].update(servers=nats_url, stream=broker.name, subject=f"{broker.name}.>")
        for subj, m in zip(published, messages, strict=True):
            broker.publish([json.dumps(m).encode()], subject=subj)
        pipeline = run(job, tmp_path, client)
        sink = pipeline.sink
        frame = pd.read_sql_table(sink.table, sink.url)
        same_rows(frame, messages, job["source"]["schema"])
        assert broker.position(job["source"]["durable"]) == broker.end()
    finally:
        broker.close()


def test_the_mqtt_example_runs(mqtt_host, tmp_path, client):
    import paho.mqtt.client as mqtt

    job, commands, messages = example(SECTIONS["mqtt"])
    plan = [i for i, c in enumerate(commands) if c.startswith("dbatch plan ")]
    pub = [i for i, c in enumerate(commands) if c.startswith("mosquitto_pub -q 1 ")]
    assert plan and pub and plan[0] < pub[0], "the session must exist before the publisher"
    assert plan[-1] > pub[-1], "a plan spools the message, and max_wait counts from then"
    topics = [re.search(r" -t (\S+)", commands[i]).group(1) for i in pub]
    host, port = mqtt_host
    mine = "dbatch-test-" + uuid.uuid4().hex[:10]
    prefix = job["source"]["topic"].split("/")[0]
    job["source"].update(
        host=host,
        port=port,
        topic=job["source"]["topic"].replace(prefix, mine, 1),
        client_id=mine,
        quiet=0.3,
    )
    path = write(job, tmp_path)
    try:
        assert len(load_job(path).pipeline.plan()) == 0  # what `dbatch plan` does first
        publisher = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=mine + "-pub")
        publisher.connect(host, port)
        publisher.loop_start()
        for topic, m in zip(topics, messages, strict=True):
            topic = topic.replace(prefix, mine, 1)
            publisher.publish(topic, json.dumps(m), qos=1).wait_for_publish(10)
        publisher.disconnect()
        publisher.loop_stop()
        pipeline = load_job(path).pipeline
        assert len(pipeline.plan()) == 0  # the second plan: spooled, a partial batch
        spool = Spool(pipeline.source.spool)
        assert spool.end()[1] == len(messages)
        spool.close()
        time.sleep(MAX_WAIT + 0.2)
        result = pipeline.run(client=client, progress=False)
        assert result.ok and result.rows_out == len(messages), result
        same_rows(
            pd.read_parquet(tmp_path / job["sink"]["path"]), messages, job["source"]["schema"]
        )
    finally:  # a clean connect with the session's id ends it on the broker
        ending = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=mine, clean_session=True)
        ending.connect(host, port)
        ending.disconnect()
