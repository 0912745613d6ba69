"""The real brokers as the stream tests use them: a fresh stream each, publish, the position."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterable

from dbatch.sources.streams.nats import NatsStream
from dbatch.sources.streams.redis import RedisStream


def records(start: int, stop: int) -> list[bytes]:
    return [
        json.dumps({"n": i, "v": i * 0.5, "site": f"s{i % 3}"}).encode() for i in range(start, stop)
    ]


SCHEMA = {"n": "int64", "v": "float64", "site": "string"}


class RedisBroker:
    kind = "redis_stream"

    def __init__(self, url: str):
        import redis

        self.url = url
        self.name = "dbatch-test-" + uuid.uuid4().hex[:10]
        self.client = redis.Redis.from_url(url)

    def source(self, **options) -> RedisStream:
        return RedisStream(url=self.url, stream=self.name, **{"schema": SCHEMA, **options})

    def yaml(self) -> str:
        return f"  type: redis_stream\n  url: {self.url}\n  stream: {self.name}\n"

    def publish(self, payloads: Iterable[bytes]) -> None:
        pipe = self.client.pipeline(transaction=False)
        for p in payloads:
            pipe.xadd(self.name, {"data": p})
        pipe.execute()

    def end(self) -> str:
        return self.client.xinfo_stream(self.name)["last-generated-id"].decode()

    def position(self, group: str = "dbatch") -> str | None:
        for g in self.client.xinfo_groups(self.name):
            if g["name"].decode() == group:
                return g["last-delivered-id"].decode()
        return None

    def drop_oldest(self, keep: int) -> None:
        self.client.xtrim(self.name, maxlen=keep, approximate=False)

    def close(self) -> None:
        self.client.delete(self.name)
        self.client.close()


class NatsBroker:
    kind = "nats"

    def __init__(self, url: str, **limits):
        self.url = url
        self.name = "DBATCH_TEST_" + uuid.uuid4().hex[:10].upper()
        self._do(lambda js: js.add_stream(name=self.name, subjects=[f"{self.name}.>"], **limits))

    def _do(self, work):
        import nats

        async def go():
            nc = await nats.connect(self.url)
            try:
                return await work(nc.jetstream())
            finally:
                await nc.close()

        return asyncio.run(go())

    def source(self, **options) -> NatsStream:
        return NatsStream(servers=self.url, stream=self.name, **{"schema": SCHEMA, **options})

    def yaml(self) -> str:
        return f"  type: nats\n  servers: {self.url}\n  stream: {self.name}\n"

    def publish(self, payloads: Iterable[bytes], subject: str = "data") -> None:
        async def work(js):
            for p in payloads:
                await js.publish(f"{self.name}.{subject}", p)

        self._do(work)

    def end(self) -> int:
        async def work(js):
            return (await js.stream_info(self.name)).state.last_seq

        return self._do(work)

    def position(self, durable: str = "dbatch") -> int | None:
        import nats.js.errors

        async def work(js):
            try:
                info = await js.consumer_info(self.name, durable)
            except nats.js.errors.NotFoundError:
                return None
            if info.ack_floor.consumer_seq:
                return info.ack_floor.stream_seq
            return info.config.opt_start_seq - 1  # made at the first acknowledgement

        return self._do(work)

    def close(self) -> None:
        self._do(lambda js: js.delete_stream(self.name))
