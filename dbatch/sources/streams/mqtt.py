"""MQTT: a persistent QoS 1 session spooled durably by dbatch; the spool's offsets are the units.

An MQTT broker cannot replay: a message it delivered and that was acknowledged is
gone. So dbatch's own subscriber (a persistent session, ``clean_session=False``,
QoS 1, acknowledgements sent by hand) stores every message in a SQLite spool
*before* acknowledging it, and the job reads offset ranges of the spool, as it
reads a Redis or NATS stream. The guarantee, plainly:

* broker -> spool: at-least-once. A message is acknowledged only once it is
  stored; if the subscriber dies between the two, the broker delivers it again.
  With ``key`` (a field of the JSON message that identifies it) the spool keeps
  such a message once; without it, it is stored twice.
* spool -> output: exactly-once, by offset ranges kept in the ledger.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...core import Unit
from ...errors import JobSpecError
from ...faults import crash_point
from .base import Range, StreamSource, bounds
from .decode import Message

__all__ = ["MqttTopic", "Spool"]

_SCHEMA = """
create table if not exists messages (
    offset integer primary key autoincrement,
    topic text not null,
    key text unique,
    payload blob not null,
    received real not null
);
create table if not exists position (id integer primary key check (id = 1), upto integer not null);
"""


class Spool:
    """The durable spool of one subscription: messages with contiguous offsets, and a position."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(
            self.path, timeout=30, isolation_level=None, check_same_thread=False
        )
        self.db.execute("pragma journal_mode=wal")
        self.db.execute("pragma synchronous=full")  # stored means on disk, before the ack
        self.db.executescript(_SCHEMA)

    def close(self) -> None:
        self.db.close()

    def add(self, topic: str, payload: bytes, key: str | None) -> bool:
        """Store one message; False when a message with this key is stored already.

        The key is looked up before the insert, in one transaction: an ``insert or
        ignore`` that is ignored still takes an AUTOINCREMENT offset, which would
        leave a hole in the offsets (and units counting messages that are not there).
        """
        self.db.execute("begin immediate")
        try:
            found = self.db.execute("select 1 from messages where key = ?", (key,))
            seen = key is not None and found.fetchone() is not None
            if not seen:
                self.db.execute(
                    "insert into messages (topic, key, payload, received) values (?, ?, ?, ?)",
                    (topic, key, payload, time.time()),
                )
        except BaseException:
            self.db.execute("rollback")
            raise
        self.db.execute("commit")
        return not seen

    def end(self) -> tuple[int, int, int, float | None]:
        """The last offset, how many messages and bytes the spool holds, and the oldest's time."""
        row = self.db.execute(
            "select coalesce(max(offset), 0), count(*), coalesce(sum(length(payload)), 0) "
            "from messages"
        ).fetchone()
        return int(row[0]), int(row[1]), int(row[2]), None

    def received(self, after: int) -> float | None:
        row = self.db.execute(
            "select received from messages where offset > ? order by offset limit 1", (after,)
        ).fetchone()
        return float(row[0]) if row else None

    def read(self, lo: int, hi: int) -> list[Message]:
        rows = self.db.execute(
            "select offset, payload from messages where offset > ? and offset <= ? order by offset",
            (lo, hi),
        )
        return [(int(o), bytes(p)) for o, p in rows]

    def position(self) -> int | None:
        row = self.db.execute("select upto from position").fetchone()
        return int(row[0]) if row else None

    def move(self, upto: int) -> None:
        self.db.execute(
            "insert into position (id, upto) values (1, ?) on conflict(id) do update set upto = ?",
            (upto, upto),
        )


@dataclass(frozen=True, kw_only=True)
class MqttTopic(StreamSource):
    """Messages of an MQTT topic filter, spooled by dbatch's persistent QoS 1 subscriber.

    Each plan first takes what the broker holds for the session (waiting until it
    has been quiet for ``quiet`` seconds, at most ``drain`` seconds), storing each
    message in ``spool`` before acknowledging it; then it cuts the spool's new
    offsets into units. See the module's documentation for the guarantee.

    Parameters
    ----------
    host, port
        The broker (``127.0.0.1``, ``1883``).
    topic
        A topic filter (``sensors/+/temperature``).
    client_id
        The persistent session's id (default ``dbatch-<topic>``); keep it stable.
    spool
        The SQLite file of the spool (a local path every worker can read).
    key
        A field of the JSON messages that identifies each one: a message the broker
        delivers twice is then spooled once.

    Examples
    --------
    >>> MqttTopic(topic="sensors/#", spool="spool/sensors.sqlite")  # doctest: +SKIP
    """

    host: str = "127.0.0.1"
    port: int = 1883
    topic: str = ""
    client_id: str | None = None
    spool: str = ""
    key: str | None = None
    quiet: float = 0.5
    drain: float = 30.0

    kind = "mqtt"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.topic:
            raise JobSpecError("name the topic filter", key="source.topic")
        if not self.spool:
            raise JobSpecError(
                "name the spool file (spool: spool/sensors.sqlite): MQTT cannot replay, so "
                "dbatch keeps every message there before acknowledging it",
                key="source.spool",
            )
        object.__setattr__(self, "spool", str(Path(self.spool).expanduser().absolute()))

    def _name(self) -> str:
        return self.topic

    def _where(self) -> str:
        return f"{self.host}:{self.port} topic {self.topic!r}"

    @property
    def session(self) -> str:
        return self.client_id or f"dbatch-{self.topic}".replace("#", "all").replace("+", "any")

    def _spool(self) -> Spool:
        return Spool(self.spool)

    # -- the subscriber ---------------------------------------------------------------

    def receive(self) -> int:
        """Take what the broker holds for the session into the spool; return how many."""
        import paho.mqtt.client as mqtt

        spool = self._spool()
        stored, last = [0], [time.monotonic()]
        ready, stopping = threading.Event(), threading.Event()
        handling = threading.Lock()  # held while a message is stored and acknowledged
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=self.session,
            clean_session=False,
            manual_ack=True,
        )

        def on_connect(c: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
            c.subscribe(self.topic, qos=1)

        def on_subscribe(*_args: Any) -> None:
            ready.set()

        def on_message(c: Any, _u: Any, msg: Any) -> None:
            with handling:
                if stopping.is_set():
                    return  # neither stored nor acknowledged: the broker delivers it next time
                if spool.add(msg.topic, msg.payload, self._key_of(msg.payload)):
                    stored[0] += 1
                crash_point("spooled")  # stored, not yet acknowledged
                c.ack(msg.mid, msg.qos)
                last[0] = time.monotonic()

        client.on_connect, client.on_subscribe, client.on_message = (
            on_connect,
            on_subscribe,
            on_message,
        )
        try:
            client.connect(self.host, self.port, keepalive=30)
        except OSError as e:
            spool.close()
            raise self._unreachable(e, "connect") from None
        client.loop_start()
        try:
            ready.wait(10)
            start = last[0] = time.monotonic()
            while True:
                with handling:  # a message being stored is not quiet
                    now = time.monotonic()
                    if now - last[0] >= self.quiet or now - start >= self.drain:
                        break
                time.sleep(0.05)
        finally:
            # Not while a message is being stored: its acknowledgement would follow the
            # DISCONNECT and be lost, and the broker would deliver it again.
            with handling:
                stopping.set()
            client.disconnect()
            client.loop_stop()
            spool.close()
        return stored[0]

    def _key_of(self, payload: bytes) -> str | None:
        if self.key is None:
            return None
        try:
            value = json.loads(payload).get(self.key)
        except (ValueError, AttributeError):
            return None
        return None if value is None else str(value)

    # -- the stream contract over the spool ---------------------------------------------

    def _first_position(self) -> Any:
        self.receive()
        spool = self._spool()
        try:
            position = spool.position()
            if position is not None:
                return position
            return spool.end()[0] if self.start == "latest" else 0
        finally:
            spool.close()

    def _ranges(self, after: Any, last: Unit | None) -> tuple[list[Range], str | None]:
        if last is not None:
            self.receive()  # (a first plan took them in _first_position)
        spool = self._spool()
        try:
            end, count, size, _ = spool.end()
            when = spool.received(after)
        finally:
            spool.close()
        each = max(1, size // count) if count else 200
        ranges, lo = [], int(after)
        while lo < end:
            hi = min(lo + self.chunk, end)
            ranges.append(Range(lo, hi, hi - lo, (hi - lo) * each, when))
            lo = hi
        return ranges, None

    def _read(self, unit: Unit) -> tuple[list[Message], str | None]:
        lo, hi = bounds(unit)
        if not os.path.exists(self.spool):
            raise JobSpecError(
                f"{self.describe()}: the spool {self.spool} is not there; workers must see the "
                "driver's files (a local cluster, or a shared folder)",
                key="source.spool",
            )
        spool = self._spool()
        try:
            return spool.read(int(lo), int(hi)), None
        finally:
            spool.close()

    def _move_position(self, upto: Any) -> None:
        spool = self._spool()
        try:
            spool.move(int(upto))
        finally:
            spool.close()
