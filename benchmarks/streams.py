"""Streams into Parquet: dbatch against a hand-written consumer loop with the same client.

For Redis Streams and NATS JetStream: publish N JSON messages to a fresh stream,
then consume them all into Parquet, once with dbatch (``dbatch run`` semantics:
what is there now, in micro-batches of ``--batch`` messages, exactly-once through
the ledger) and once with a loop written by hand: the same client library reading
``--batch`` messages at a time (Redis: ``XREADGROUP`` + ``XACK``; NATS: a durable
pull consumer, ``fetch`` + ack), parsed with pyarrow's JSON reader and written as
one Parquet file per batch. The ratio is dbatch's throughput over the loop's, in
the same round. Latency: the time from publishing one micro-batch of ``--batch``
messages to its Parquet output being in place.

    python benchmarks/streams.py --messages 100000 --batch 10000 --repeat 3
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import shutil
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.json as pj
import pyarrow.parquet as pq

SCHEMA = {"n": "int64", "sensor": "string", "value": "float64", "ts": "int64"}
ARROW = pa.schema(
    [("n", pa.int64()), ("sensor", pa.string()), ("value", pa.float64()), ("ts", pa.int64())]
)


def payloads(start: int, stop: int) -> list[bytes]:
    return [
        json.dumps(
            {"n": i, "sensor": f"s{i % 50}", "value": i * 0.25, "ts": 1_700_000_000 + i}
        ).encode()
        for i in range(start, stop)
    ]


def to_table(batch: list[bytes]) -> pa.Table:
    options = pj.ParseOptions(explicit_schema=ARROW, unexpected_field_behavior="ignore")
    return pj.read_json(io.BytesIO(b"\n".join(batch)), parse_options=options)


# -- the brokers ------------------------------------------------------------------------------


class Redis:
    name = "redis"

    def __init__(self, url: str):
        import redis

        self.url, self.client = url, redis.Redis.from_url(url)
        self.stream = "bench-" + uuid.uuid4().hex[:8]

    def publish(self, items: list[bytes]) -> None:
        pipe = self.client.pipeline(transaction=False)
        for i, p in enumerate(items):
            pipe.xadd(self.stream, {"data": p})
            if i % 5000 == 4999:
                pipe.execute()
        pipe.execute()

    def source(self, batch: int):
        from dbatch.sources.streams.redis import RedisStream

        return RedisStream(url=self.url, stream=self.stream, schema=SCHEMA, chunk=batch)

    def loop(self, out: Path, batch: int, total: int) -> None:
        """The hand-written consumer: XREADGROUP, parse, write Parquet, XACK."""
        group = "loop-" + uuid.uuid4().hex[:6]
        self.client.xgroup_create(self.stream, group, "0")
        seen, k = 0, 0
        while seen < total:
            reply = self.client.xreadgroup(group, "c", {self.stream: ">"}, count=batch)
            entries = reply[0][1] if reply else []
            if not entries:
                break
            pq.write_table(
                to_table([f[b"data"] for _, f in entries]), out / f"part-{k:05d}.parquet"
            )
            self.client.xack(self.stream, group, *[i for i, _ in entries])
            seen, k = seen + len(entries), k + 1

    def close(self) -> None:
        self.client.delete(self.stream)


class Nats:
    name = "nats"

    def __init__(self, url: str):
        self.url = url
        self.stream = "BENCH_" + uuid.uuid4().hex[:8].upper()
        self._do(lambda js: js.add_stream(name=self.stream, subjects=[f"{self.stream}.>"]))

    def _do(self, work):
        import nats

        async def go():
            nc = await nats.connect(self.url)
            try:
                return await work(nc.jetstream())
            finally:
                await nc.close()

        return asyncio.run(go())

    def publish(self, items: list[bytes]) -> None:
        async def work(js):
            for k in range(0, len(items), 1000):
                await asyncio.gather(
                    *(js.publish(f"{self.stream}.d", p) for p in items[k : k + 1000])
                )

        self._do(work)

    def source(self, batch: int):
        from dbatch.sources.streams.nats import NatsStream

        return NatsStream(servers=self.url, stream=self.stream, schema=SCHEMA, chunk=batch)

    def loop(self, out: Path, batch: int, total: int) -> None:
        """The hand-written consumer: a durable pull consumer, fetch, parse, write, ack."""

        from nats.js.api import AckPolicy, ConsumerConfig

        async def work(js):
            config = ConsumerConfig(ack_policy=AckPolicy.ALL, max_ack_pending=-1)
            durable = "loop-" + uuid.uuid4().hex[:6]
            sub = await js.pull_subscribe(f"{self.stream}.>", durable=durable, config=config)
            seen, k = 0, 0
            while seen < total:
                got: list = []
                while len(got) < batch and seen + len(got) < total:
                    got += await sub.fetch(batch=min(1000, batch - len(got)), timeout=5)
                pq.write_table(to_table([m.data for m in got]), out / f"part-{k:05d}.parquet")
                await got[-1].ack()  # ack policy all: the last one acknowledges the batch
                seen, k = seen + len(got), k + 1

        self._do(work)

    def close(self) -> None:
        self._do(lambda js: js.delete_stream(self.stream))


# -- the measurements ---------------------------------------------------------------------------


def dbatch_run(broker, root: Path, batch: int, client) -> tuple[float, int]:
    from dbatch import ParquetSink, Pipeline
    from dbatch.batching import ByThreshold

    pipeline = Pipeline(
        broker.source(batch),
        ParquetSink(str(root / "out")),
        batching=ByThreshold(count=batch, max_wait=0),
        name="bench",
        workdir=str(root / "work"),
    )
    t0 = time.perf_counter()
    result = pipeline.run(client=client)
    seconds = time.perf_counter() - t0
    assert result.ok, result
    return seconds, pq.read_table(root / "out").num_rows


def loop_run(broker, root: Path, batch: int, total: int) -> tuple[float, int]:
    out = root / "loop"
    out.mkdir()
    t0 = time.perf_counter()
    broker.loop(out, batch, total)
    seconds = time.perf_counter() - t0
    return seconds, pq.read_table(out).num_rows


def latency(broker, root: Path, batch: int, client) -> float:
    """From publishing one micro-batch to its Parquet output in place (a second run)."""
    broker.publish(payloads(10_000_000, 10_000_000 + batch))
    t0 = time.perf_counter()
    dbatch_run(broker, root, batch, client)
    return time.perf_counter() - t0


def one_round(kind: str, url: str, messages: int, batch: int, client) -> dict:
    broker = Redis(url) if kind == "redis" else Nats(url)
    root = Path(tempfile.mkdtemp(prefix="dbatch-bench-streams-"))
    try:
        broker.publish(payloads(0, messages))
        d_s, d_rows = dbatch_run(broker, root, batch, client)
        l_s, l_rows = loop_run(broker, root, batch, messages)
        assert d_rows == l_rows == messages, (d_rows, l_rows)
        lat = latency(broker, root, batch, client)
        return {"dbatch": messages / d_s, "loop": messages / l_s, "latency": lat}
    finally:
        broker.close()
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--brokers", default="redis,nats")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--nats", default="nats://127.0.0.1:4222")
    args = parser.parse_args()

    from distributed import Client, LocalCluster

    with (
        LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        print(
            f"{args.messages:,} JSON messages, micro-batches of {args.batch:,}, {args.repeat} rounds"
        )
        print(
            "| broker | dbatch (msg/s) | hand-written loop (msg/s) | dbatch / loop | latency of one micro-batch (s) |"
        )
        print("| --- | ---: | ---: | ---: | ---: |")
        for kind in args.brokers.split(","):
            url = args.redis if kind == "redis" else args.nats
            rounds = [
                one_round(kind, url, args.messages, args.batch, client) for _ in range(args.repeat)
            ]
            d = statistics.median(r["dbatch"] for r in rounds)
            lp = statistics.median(r["loop"] for r in rounds)
            ratio = statistics.median(r["dbatch"] / r["loop"] for r in rounds)
            lat = statistics.median(r["latency"] for r in rounds)
            print(f"| {kind} | {d:,.0f} | {lp:,.0f} | {ratio:.2f} | {lat:.2f} |")


if __name__ == "__main__":
    main()
