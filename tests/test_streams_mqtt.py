"""MQTT through dbatch's spool, against the real Mosquitto: what the guarantee says, and only that.

Broker -> spool is at-least-once (a message is acknowledged after it is stored);
with ``key`` a message delivered twice is spooled once. Spool -> output is
exactly-once, as for the replayable streams.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid

import pandas as pd
import pytest

from dbatch import ParquetSink, Pipeline
from dbatch.batching import ByThreshold
from dbatch.errors import JobSpecError
from dbatch.sources.streams.mqtt import MqttTopic, Spool


def publish(host, port, topic, payloads) -> None:
    import paho.mqtt.client as mqtt

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="pub-" + uuid.uuid4().hex)
    client.connect(host, port)
    client.loop_start()
    try:
        for p in payloads:
            client.publish(topic, p, qos=1).wait_for_publish(10)
    finally:
        client.disconnect()
        client.loop_stop()


def readings(start, stop) -> list[bytes]:
    return [json.dumps({"id": f"r{i}", "n": i, "v": i / 4}).encode() for i in range(start, stop)]


@pytest.fixture
def topic():
    return f"dbatch-test/{uuid.uuid4().hex[:10]}/readings"


def source(mqtt_host, topic, tmp_path, **options) -> MqttTopic:
    host, port = mqtt_host
    return MqttTopic(
        host=host,
        port=port,
        topic=topic,
        client_id="dbatch-" + topic.split("/")[1],
        spool=str(tmp_path / "spool" / "readings.sqlite"),
        schema={"id": "string", "n": "int64", "v": "float64"},
        chunk=30,
        quiet=0.3,
        **options,
    )


def test_messages_queued_for_the_session_land_once(mqtt_host, topic, tmp_path, client):
    src = source(mqtt_host, topic, tmp_path)
    p = Pipeline(
        src,
        ParquetSink(str(tmp_path / "out")),
        batching=ByThreshold(count=30, max_wait=0),
        name="mqtt",
        workdir=str(tmp_path / "work"),
    )
    assert len(p.plan()) == 0  # the persistent session exists from here on
    publish(*mqtt_host, topic, readings(0, 100))  # while no dbatch subscriber is connected
    assert p.run(client=client).ok
    publish(*mqtt_host, topic, readings(100, 130))
    again = p.run(client=client)
    assert again.ok and again.skipped >= 1
    frame = pd.read_parquet(tmp_path / "out")
    assert sorted(frame["n"]) == list(range(130))
    spool = Spool(src.spool)
    assert spool.position() == spool.end()[0] == 130  # the spool's position moved on commit
    spool.close()


def receive_and_die(src: MqttTopic, at: int) -> int:
    """The subscriber in a process of its own, killed after storing message ``at``, unacknowledged."""
    code = "import pickle, sys; src = pickle.loads(sys.stdin.buffer.read()); src.receive()"
    import pickle

    env = {**os.environ, "DBATCH_CRASH_AT": f"spooled:{at}"}
    proc = subprocess.run(
        [sys.executable, "-c", code], input=pickle.dumps(src), env=env, timeout=60
    )
    return proc.returncode


@pytest.mark.parametrize("keyed", [True, False])
def test_subscriber_killed_between_storing_and_acknowledging(mqtt_host, topic, tmp_path, keyed):
    src = source(mqtt_host, topic, tmp_path, key="id" if keyed else None)
    src.receive()  # the session and its subscription
    publish(*mqtt_host, topic, readings(0, 20))
    assert receive_and_die(src, at=5) == -signal.SIGKILL
    src.receive()  # the broker delivers message 5 (r4) again, and the rest
    spool = Spool(src.spool)
    stored = [json.loads(p)["id"] for _, p in spool.read(0, spool.end()[0])]
    spool.close()
    if keyed:
        assert sorted(stored, key=lambda s: int(s[1:])) == [f"r{i}" for i in range(20)]
        assert len(stored) == 20  # exactly once in the spool, by the key
    else:
        assert set(stored) == {f"r{i}" for i in range(20)}  # none lost
        # At-least-once: r4 was stored and never acknowledged, so it came again; so may the
        # ones before it whose acknowledgement was still in the dead subscriber's buffer.
        twice = {s for s in stored if stored.count(s) > 1}
        assert "r4" in twice and all(int(s[1:]) <= 4 for s in twice)


def test_a_slow_store_is_acknowledged_before_the_subscriber_leaves(
    mqtt_host, topic, tmp_path, monkeypatch
):
    """Storing a message for longer than ``quiet`` (a slow disk) is no reason to stop: the
    subscriber leaves after that message's acknowledgement, so nothing comes twice."""
    import time

    src = source(mqtt_host, topic, tmp_path)  # no key: a message delivered again is kept twice
    src.receive()
    publish(*mqtt_host, topic, readings(0, 100))  # the broker sends some after the SUBACK
    add, calls = Spool.add, []

    def slow_add(spool, *args):
        calls.append(1)
        if len(calls) == 60:
            time.sleep(src.quiet + 0.5)
        return add(spool, *args)

    monkeypatch.setattr(Spool, "add", slow_add)
    first = src.receive()
    monkeypatch.setattr(Spool, "add", add)
    second = src.receive()
    spool = Spool(src.spool)
    stored = [json.loads(p)["n"] for _, p in spool.read(0, spool.end()[0])]
    spool.close()
    assert len(calls) >= 60 and first + second == 100, (first, second)
    assert sorted(stored) == list(range(100))


def test_mqtt_options_are_checked(tmp_path):
    with pytest.raises(JobSpecError, match="source.spool"):
        MqttTopic(topic="a/b")
    with pytest.raises(JobSpecError, match="source.topic"):
        MqttTopic(spool=str(tmp_path / "s.sqlite"))
