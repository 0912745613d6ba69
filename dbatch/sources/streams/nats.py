"""NATS JetStream: ranges of stream sequence numbers; a durable pull consumer acknowledged on commit."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from ...core import Unit
from ...errors import JobSpecError, SourceError, TransientError
from ...redact import redact
from .base import Range, StreamSource, bounds
from .decode import Message

__all__ = ["NatsStream"]

_PULL = 10_000  # messages per pull request at most
_SILENT = 5.0  # seconds without a word from the server before a pull request counts as lost
_END = ("404", "408", "409")  # no messages (now), request timeout, conflict: what there was came
_T = TypeVar("_T")


def _run(work: Callable[[], Awaitable[_T]]) -> _T:
    """Run a coroutine in a thread of its own (a notebook's event loop may be running here)."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(lambda: asyncio.run(work())).result()  # type: ignore[arg-type]


@dataclass(frozen=True, kw_only=True)
class NatsStream(StreamSource):
    """A JetStream stream; a durable pull consumer holds the position dbatch has committed.

    Units are ranges of stream sequence numbers ``(lo, hi]`` on a fixed grid of
    ``chunk`` (``(0,10000]``, ``(10000,20000]``...), read on a worker by a
    short-lived ordered pull consumer that starts at ``lo + 1``, so a retried batch
    reads the same messages. After a batch commits, the durable consumer ``durable``
    (headers only, ack all) is acknowledged up to ``hi``: ``nats consumer info``
    shows the job's lag, and a stream with interest retention keeps every message
    until its batch has committed. A job with nothing in its ledger starts at the
    durable consumer's ack floor when it exists.

    Parameters
    ----------
    servers
        ``nats://host:4222`` (credentials in the URL are never shown).
    stream
        The JetStream stream's name.
    subject
        Only messages of this subject (a filter such as ``sensors.>``); default all.
    durable
        The durable consumer's name (default ``dbatch``).

    Examples
    --------
    >>> NatsStream(servers="nats://127.0.0.1:4222", stream="ORDERS")  # doctest: +SKIP
    """

    servers: str = "nats://127.0.0.1:4222"
    stream: str = ""
    subject: str | None = None
    durable: str = "dbatch"

    kind = "nats"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.stream:
            raise JobSpecError("name the JetStream stream", key="source.stream")

    def _name(self) -> str:
        return self.stream

    def _where(self) -> str:
        what = f" subject {self.subject!r}" if self.subject else ""
        return f"{redact(self.servers)} stream {self.stream!r}{what}"

    def __repr__(self) -> str:
        return f"NatsStream({redact(self.servers)!r}, stream={self.stream!r})"

    def _session(self, what: str, work: Callable[[Any, Any], Awaitable[_T]]) -> _T:
        """``work(connection, jetstream)`` on a connection of its own; unreachable -> transient."""
        import nats
        import nats.errors
        import nats.js.errors

        async def go() -> _T:
            nc = await nats.connect(self.servers, connect_timeout=5, max_reconnect_attempts=1)
            try:
                return await work(nc, nc.jetstream())
            finally:
                await nc.close()

        try:
            return _run(go)
        except nats.js.errors.NotFoundError:
            raise SourceError(
                f"{self.describe()}: there is no such stream; create it (nats stream add "
                f"{self.stream} --subjects ...) or check the name"
            ) from None
        except (OSError, nats.errors.NoServersError, nats.errors.TimeoutError) as e:
            raise self._unreachable(e, what) from None

    def _first_position(self) -> Any:
        import nats.js.errors

        async def work(nc: Any, js: Any) -> int:
            try:
                return _acked(await js.consumer_info(self.stream, self.durable))
            except nats.js.errors.NotFoundError:
                state = (await js.stream_info(self.stream)).state
                if self.start == "latest":
                    return int(state.last_seq)
                return max(int(state.first_seq) - 1, 0)  # an empty stream says first_seq 0

        return self._session("read the consumer's position", work)

    def _ranges(self, after: Any, last: Unit | None) -> tuple[list[Range], str | None]:
        async def work(nc: Any, js: Any) -> tuple[Any, float | None, float | None]:
            state = (await js.stream_info(self.stream)).state
            if state.last_seq <= after:
                return state, None, None
            first_seq = max(after + 1, state.first_seq)
            last_seq = max(first_seq, (state.last_seq - 1) // self.chunk * self.chunk + 1)
            return state, await self._time(js, first_seq), await self._time(js, last_seq)

        state, when, last_when = self._session("read the stream's end", work)
        end, first = int(state.last_seq), int(state.first_seq)
        lost = None
        if state.messages and first > after + 1:
            lost = f"messages {after + 1} to {first - 1} are gone (the stream starts at {first})"
        each = max(1, int(state.bytes) // int(state.messages)) if state.messages else 200
        ranges, lo = [], int(after)
        while lo < end:
            hi = min((lo // self.chunk + 1) * self.chunk, end)
            n = hi - max(lo, first - 1)
            age = when if lo == after else (last_when if hi == end else when)
            ranges.append(Range(lo, hi, max(n, 0), max(n, 0) * each, age))
            lo = hi
        return ranges, lost

    async def _time(self, js: Any, seq: int) -> float | None:
        """When message ``seq`` (or the next one held) was stored: the age of a range."""
        try:
            msg = await js.get_msg(self.stream, seq, next=True)
        except Exception:  # noqa: BLE001 - only an age, for max_wait
            return None
        return msg.time.timestamp() if msg.time else None

    def _read(self, unit: Unit) -> tuple[list[Message], str | None]:
        from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

        lo, hi = bounds(unit)

        async def work(nc: Any, js: Any) -> tuple[list[Message], int]:
            first = int((await js.stream_info(self.stream)).state.first_seq)
            config = ConsumerConfig(
                deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
                opt_start_seq=max(lo + 1, first),
                ack_policy=AckPolicy.NONE,
                filter_subject=self.subject,
                inactive_threshold=60.0,
                mem_storage=True,
            )
            info = await js.add_consumer(self.stream, config=config)
            out: list[Message] = []
            try:
                # Never more than the consumer holds: no pull waits for messages that are not there.
                pending, seq = int(info.num_pending), max(lo, first - 1)
                while pending > 0 and seq < hi:
                    batch = await _pull(nc, self.stream, info.name, min(_PULL, hi - seq, pending))
                    if not batch:  # held a moment ago: gone (retention) or a server in trouble
                        raise TransientError(f"{self.describe()}: messages after {seq} went away")
                    for msg in batch:
                        seq, pending = _position(msg)
                        if seq > hi:
                            pending = 0
                            break
                        out.append((seq, msg.data))
            finally:
                await js.delete_consumer(self.stream, info.name)
            return out, first

        messages, first = self._session("read messages", work)
        lost = None
        if first > lo + 1:
            lost = (
                f"messages {lo + 1} to {min(first - 1, hi)} are gone (the stream starts at {first})"
            )
        return messages, lost

    def _move_position(self, upto: Any) -> None:
        self._session(
            "acknowledge the durable consumer", lambda nc, js: self._ack(nc, js, int(upto))
        )

    async def _ack(self, nc: Any, js: Any, upto: int) -> None:
        """Acknowledge the durable consumer up to ``upto``: one ack-all per pull, never a wait.

        JetStream moves a consumer's ack floor only over messages it delivered, so the
        consumer (headers only) is pulled up to ``upto`` and its last message at or
        before ``upto`` acknowledged. A pull never asks for more than ``upto`` leaves
        (what is delivered and not acknowledged comes back only after ``ack_wait``).
        """
        import nats.js.errors
        from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

        try:
            info = await js.consumer_info(self.stream, self.durable)
        except nats.js.errors.NotFoundError:
            config = ConsumerConfig(
                durable_name=self.durable,
                deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
                opt_start_seq=upto + 1,
                ack_policy=AckPolicy.ALL,
                filter_subject=self.subject,
                headers_only=True,
                ack_wait=5.0,
                max_ack_pending=-1,
            )
            await js.add_consumer(self.stream, config=config)
            return
        if info.config.max_ack_pending != -1:  # a limit (1000 by default) would stop each pull
            config = replace(info.config, max_ack_pending=-1)
            info = await js.add_consumer(self.stream, config=config)
        floor, delivered = _acked(info), int(info.delivered.stream_seq)
        pending, unacked = int(info.num_pending), int(info.num_ack_pending)
        while floor < upto:
            if delivered < upto:
                want = min(upto - delivered, pending)
            elif unacked and await self._held(js, floor + 1, upto):
                # Delivered, not acknowledged (a driver stopped): back once ack_wait has passed.
                want, unacked = min(unacked, upto - floor), 0
            else:
                return
            if want <= 0:
                return
            batch = await _pull(nc, self.stream, self.durable, min(_PULL, want))
            last = None
            for msg in batch:
                seq, pending = _position(msg)
                delivered = max(delivered, seq)
                if floor < seq <= upto:
                    last, floor = msg, seq
            if last is None:
                return  # the next acknowledgement goes on from here
            await last.ack_sync()

    async def _held(self, js: Any, seq: int, upto: int) -> bool:
        """Whether the stream holds a message (of the subject) from ``seq`` to ``upto``."""
        import nats.js.errors

        try:
            msg = await js.get_msg(self.stream, seq, subject=self.subject, next=True)
        except nats.js.errors.NotFoundError:
            return False
        return int(msg.seq) <= upto


async def _pull(nc: Any, stream: str, consumer: str, batch: int) -> list[Any]:
    """Up to ``batch`` messages of a pull consumer: what it holds now, without waiting for more.

    One pull request with ``no_wait``: the server sends what the consumer has, up to
    ``batch``, then a status (404 no messages) if that is fewer, so the end of a stream
    costs no wait. A subscription callback takes them in: nats-py's ``fetch`` awaits
    each message with a timeout of its own, several times slower for thousands.
    """
    import nats.errors
    import nats.js.errors

    got: list[Any] = []
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def take(msg: Any) -> None:
        status = None if msg.reply else (msg.headers or {}).get("Status")  # messages have a reply
        if msg.reply:
            got.append(msg)
            if len(got) < batch:
                return
        elif status == "100":
            return  # an idle heartbeat
        if done.done():
            return
        if msg.reply or status in _END:
            done.set_result(None)
        else:
            done.set_exception(nats.js.errors.APIError.from_msg(msg))

    sub = await nc.subscribe(nc.new_inbox(), cb=take, pending_msgs_limit=0, pending_bytes_limit=0)
    try:
        request = json.dumps({"batch": batch, "no_wait": True}).encode()
        await nc.publish(f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}", request, sub.subject)
        heard = -1
        while not done.done():
            await asyncio.wait([done], timeout=_SILENT)
            if len(got) == heard and not done.done():
                raise nats.errors.TimeoutError
            heard = len(got)
        done.result()
    finally:
        await sub.unsubscribe()
    return got


def _position(msg: Any) -> tuple[int, int]:
    """A delivered message's stream sequence and the messages pending after it.

    Read from its reply subject (``$JS.ACK.<stream>.<consumer>.<delivered>.<stream
    seq>.<consumer seq>.<time>.<pending>``, or with a domain and account hash in
    front): cheaper than ``msg.metadata`` for every message of a batch.
    """
    tokens = msg.reply.split(".")
    if len(tokens) == 9:
        return int(tokens[5]), int(tokens[8])
    meta = msg.metadata
    return int(meta.sequence.stream), int(meta.num_pending)


def _acked(info: Any) -> int:
    """The last stream sequence a durable consumer has acknowledged (or starts after)."""
    if info.ack_floor.consumer_seq:
        return int(info.ack_floor.stream_seq)
    return int(info.config.opt_start_seq or 1) - 1 if info.config.opt_start_seq else 0
