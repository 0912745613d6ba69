"""NATS JetStream's reads and acknowledgements against the real server: no pull waits.

Every pull request asks for at most what its consumer holds, so it comes back full
and at once: the end of a range or of the stream, a subject filter, a durable
consumer made with a limit of unacknowledged messages. A request for more would
wait for messages that never come.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from streams_brokers import NatsBroker, records

from dbatch.core import Unit
from dbatch.sources.streams import nats as nats_source


@pytest.fixture
def stream(nats_url):
    b = NatsBroker(nats_url)
    yield b
    b.close()


@pytest.fixture
def pulls(monkeypatch):
    """Each pull request the source makes in this process: (messages asked, messages got)."""
    seen: list[tuple[int, int]] = []
    pull = nats_source._pull

    async def counted(nc, stream, consumer, batch):
        got = await pull(nc, stream, consumer, batch)
        seen.append((batch, len(got)))
        return got

    monkeypatch.setattr(nats_source, "_pull", counted)
    return seen


def unit(lo: int, hi: int) -> Unit:
    return Unit(key=f"({lo},{hi}]", size=0, identity=(("lo", lo), ("hi", hi)))


def numbers(messages) -> list[int]:
    import json

    return [json.loads(data)["n"] for _, data in messages]


def test_a_range_at_the_end_of_the_stream_is_one_full_pull(stream, pulls):
    stream.publish(records(0, 120))
    source = stream.source(chunk=50)
    units = source.list_units()
    assert [u.key.split(":")[1] for u in units] == ["(0,50]", "(50,100]", "(100,120]"]
    got = [numbers(source._read(u)[0]) for u in units]
    assert got == [list(range(50)), list(range(50, 100)), list(range(100, 120))]
    assert pulls == [(50, 50), (50, 50), (20, 20)]  # each asked for what was there, no more


def test_a_subject_filter_never_asks_for_more_than_the_consumer_holds(stream, pulls):
    for k in range(0, 90, 30):  # 30 of subject a, 30 of b, ... : the filter takes every other run
        stream.publish(records(k, k + 30), subject="a" if k % 60 == 0 else "b")
    source = stream.source(chunk=40, subject=f"{stream.name}.a")
    read = [numbers(source._read(u)[0]) for u in source.list_units()]
    assert read == [list(range(30)), list(range(60, 80)), list(range(80, 90))]
    assert pulls == [(40, 40), (30, 30), (10, 10)]  # (0,40] asked for 40 of the 60 held


def test_a_read_of_nothing_left_makes_no_pull(stream, pulls):
    stream.publish(records(0, 10))
    source = stream.source(chunk=50, subject=f"{stream.name}.other")
    assert source._read(unit(0, 10))[0] == [] and pulls == []


def old_durable(stream: NatsBroker, ack_wait: float = 5.0) -> None:
    """The durable consumer as an earlier dbatch made it: at most 1000 unacknowledged."""
    from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

    config = ConsumerConfig(
        durable_name="dbatch",
        deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
        opt_start_seq=1,
        ack_policy=AckPolicy.ALL,
        headers_only=True,
        ack_wait=ack_wait,
    )
    stream._do(lambda js: js.add_consumer(stream.name, config=config))


def durable(stream: NatsBroker):
    return stream._do(lambda js: js.consumer_info(stream.name, "dbatch"))


def test_the_acknowledgement_pulls_once_up_to_the_commit(stream, pulls):
    stream.publish(records(0, 3000))
    old_durable(stream)
    assert durable(stream).config.max_ack_pending == 1000
    source = stream.source(chunk=1000)
    source.acknowledge([unit(0, 1000), unit(1000, 2500)])
    assert stream.position() == 2500 and pulls == [(2500, 2500)]
    info = durable(stream)
    assert info.config.max_ack_pending == -1 and info.num_ack_pending == 0
    assert info.config.headers_only and info.num_pending == 500
    source.acknowledge([unit(2500, 3000)])
    assert stream.position() == 3000 and pulls[1:] == [(500, 500)]
    source.acknowledge([unit(2500, 3000)])  # nothing more to do: no pull
    assert len(pulls) == 2


def test_what_a_stopped_driver_left_unacknowledged_is_acknowledged_later(stream):
    stream.publish(records(0, 40))
    old_durable(stream, ack_wait=0.5)

    async def deliver_and_stop(js):  # a driver that pulled the durable and died before its ack
        sub = await js.pull_subscribe_bind("dbatch", stream.name)
        return len(await sub.fetch(batch=40, timeout=2))

    assert stream._do(deliver_and_stop) == 40
    info = durable(stream)
    assert info.delivered.stream_seq == 40 and stream.position() == 0
    source = stream.source(chunk=40)
    for _ in range(40):  # redelivered once ack_wait has passed; each try asks without waiting
        source.acknowledge([unit(0, 40)])
        if stream.position() == 40:
            break
        time.sleep(0.25)
    assert stream.position() == 40


def test_a_pull_for_more_than_there_is_comes_back_with_what_there_is(stream):
    """The request says no_wait: the server answers at once when the consumer holds fewer
    (a request that waited for more would end in a timeout error here)."""
    import nats
    from nats.js.api import AckPolicy, ConsumerConfig

    stream.publish(records(0, 5))

    async def ask() -> int:
        nc = await nats.connect(stream.url)
        try:
            js = nc.jetstream()
            info = await js.add_consumer(
                stream.name, config=ConsumerConfig(ack_policy=AckPolicy.NONE)
            )
            return len(await nats_source._pull(nc, stream.name, info.name, 1000))
        finally:
            await nc.close()

    assert asyncio.run(ask()) == 5


def test_no_pull_when_what_is_unacknowledged_is_past_the_commit(stream, pulls):
    stream.publish(records(0, 10), subject="a.x")  # 1..10
    stream.publish(records(10, 20), subject="b.x")  # 11..20, not of the filter
    stream.publish(records(20, 30), subject="a.x")  # 21..30
    source = stream.source(chunk=10, subject=f"{stream.name}.a.*")
    source.acknowledge([unit(0, 10)])  # makes the durable consumer, after 10
    assert stream.position() == 10 and pulls == []

    async def deliver_and_stop(js):  # 21..30 delivered to a driver that died before its ack
        sub = await js.pull_subscribe_bind("dbatch", stream.name)
        return [m.metadata.sequence.stream for m in await sub.fetch(batch=10, timeout=2)]

    assert stream._do(deliver_and_stop) == list(range(21, 31))
    source.acknowledge([unit(10, 20)])  # nothing of the filter in 11..20: nothing to pull
    assert pulls == [] and durable(stream).num_ack_pending == 10
