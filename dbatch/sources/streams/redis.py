"""Redis Streams: ranges of entry ids, read with XRANGE; the consumer group moved on commit."""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from typing import Any

from ...core import Unit
from ...errors import JobSpecError
from ...redact import redact
from .base import Range, StreamSource, bounds
from .decode import Message

__all__ = ["RedisStream"]

_MAX_SEQ = 18446744073709551615  # the largest sequence part of a stream entry id
_PAGE = 5000  # entries per XRANGE round trip
_clients: dict[tuple[int, str], Any] = {}


def _ms(entry_id: str) -> int:
    return int(entry_id.split("-")[0])


def _key(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


@dataclass(frozen=True, kw_only=True)
class RedisStream(StreamSource):
    """A Redis stream; its consumer group holds the position dbatch has committed.

    Units are ranges of entry ids ``(lo, hi]``, cut by the ids' time so that each
    holds about ``chunk`` entries (the stream's ``entries-added`` counter says how
    many arrived). A worker reads its ranges with ``XRANGE``, so a retried batch
    reads the same entries; after a batch commits, the group's last-delivered id is
    set past it (``XGROUP SETID``), so ``XINFO GROUPS`` shows the job's lag. A job
    with nothing in its ledger starts at the group's position when the group exists.

    Parameters
    ----------
    url
        ``redis://host:6379/0`` (a password in the URL is never shown).
    stream
        The stream's key.
    group
        The consumer group (default ``dbatch``).
    field
        The entry field that holds the message (default ``data``).

    Examples
    --------
    >>> RedisStream(url="redis://127.0.0.1:6379/0", stream="orders", format="json")  # doctest: +SKIP
    """

    url: str = "redis://127.0.0.1:6379/0"
    stream: str = ""
    group: str = "dbatch"
    field: str = "data"

    kind = "redis_stream"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.stream:
            raise JobSpecError("name the stream's key", key="source.stream")

    def _name(self) -> str:
        return self.stream

    def _where(self) -> str:
        return f"{redact(self.url)} stream {self.stream!r}"

    def __repr__(self) -> str:
        return f"RedisStream({redact(self.url)!r}, stream={self.stream!r}, group={self.group!r})"

    def _client(self) -> Any:
        import redis

        ident = (os.getpid(), self.url)
        if ident not in _clients:
            _clients[ident] = redis.Redis.from_url(self.url, decode_responses=False)
        return _clients[ident]

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        import redis

        try:
            return fn(*args, **kwargs)
        except redis.ConnectionError as e:
            raise self._unreachable(e, what) from None

    def _info(self) -> dict[str, Any] | None:
        import redis

        try:
            raw = self._call("read the stream's end", self._client().xinfo_stream, self.stream)
        except redis.ResponseError:
            return None  # no such stream (yet)
        return {k.decode() if isinstance(k, bytes) else k: _text(v) for k, v in raw.items()}

    def _group(self) -> dict[str, Any] | None:
        import redis

        try:
            groups = self._call(
                "read the consumer groups", self._client().xinfo_groups, self.stream
            )
        except redis.ResponseError:
            return None
        for g in groups:
            row = {k.decode() if isinstance(k, bytes) else k: _text(v) for k, v in g.items()}
            if row.get("name") == self.group:
                return row
        return None

    def _first_position(self) -> Any:
        group = self._group()
        if group is not None:
            return str(group["last-delivered-id"])
        info = self._info()
        if self.start == "latest" and info is not None:
            return str(info["last-generated-id"])
        return "0-0"

    def _ranges(self, after: Any, last: Unit | None) -> tuple[list[Range], str | None]:
        info = self._info()
        if info is None:
            return [], None
        end = str(info["last-generated-id"])
        if _key(end) <= _key(after):
            return [], None
        added = int(info.get("entries-added") or info["length"])
        before = dict(last.identity).get("counter") if last is not None else None
        if before is None and after == "0-0":  # from the start: what was removed is not missed
            before = added - int(info["length"])
        lost = self._lost(info, after, before)
        n = added - int(before) if before is not None else int(info["length"])
        n = max(n, 1)
        first = _first_id(info) or end
        begin = max(_ms(after), _ms(first) - 1)  # cut from the first entry held, not from 0
        each = _average(info, self)
        ranges = _slices(after, begin, end, n, self.chunk, added, each)
        if ranges and before is not None:
            ranges[0] = dataclasses.replace(ranges[0], since=int(before))
        return ranges, lost

    def _lost(self, info: dict[str, Any], after: str, since: int | None) -> str | None:
        """How many entries after ``after`` the stream no longer holds (trimmed, deleted).

        ``since`` is the stream's count of entries added up to ``after``; the entries
        removed from the stream are its oldest, so more removed than that are unread.
        """
        if since is None:
            return None
        removed = int(info.get("entries-added") or 0) - int(info["length"])
        if removed <= since:
            return None
        first = info.get("recorded-first-entry-id") or _first_id(info)
        return (
            f"{removed - since} entries after id {after} are gone (the stream now starts at "
            f"id {first})"
        )

    def _read(self, unit: Unit) -> tuple[list[Message], str | None]:
        lo, hi = bounds(unit)
        since = dict(unit.identity).get("since")
        info = self._info() if since is not None else None  # before reading: what is gone now
        lost = self._lost(info, lo, since) if info is not None else None
        client = self._client()
        out: list[Message] = []
        start = f"({lo}"
        while True:
            page = self._call("read entries", client.xrange, self.stream, start, hi, count=_PAGE)
            for entry_id, fields in page:
                ident = entry_id.decode()
                out.append((ident, fields.get(self.field.encode(), b"")))
            if len(page) < _PAGE:
                break
            start = f"({out[-1][0]}"
        return out, lost

    def _move_position(self, upto: Any) -> None:
        import redis

        client = self._client()
        try:
            self._call("move the group", client.xgroup_setid, self.stream, self.group, upto)
        except redis.ResponseError:  # no group yet: make it there
            self._call(
                "make the group", client.xgroup_create, self.stream, self.group, upto, mkstream=True
            )


def _text(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode()
    return value


def _first_id(info: dict[str, Any]) -> str | None:
    first = info.get("first-entry")
    if not first:
        return None
    entry_id = first[0]
    return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)


def _average(info: dict[str, Any], source: RedisStream) -> int:
    """Bytes per entry: the stream's memory over its length (200 when it cannot tell)."""
    try:
        used = source._client().memory_usage(source.stream) or 0
    except Exception:  # noqa: BLE001 - only an estimate for size-based batching
        used = 0
    length = int(info.get("length") or 0)
    return max(1, used // length) if length and used else 200


def _slices(
    after: str, begin: int, end: str, n: int, chunk: int, added: int, each: int
) -> list[Range]:
    """``(after, end]`` cut by the ids' milliseconds (from ``begin``) into about ``n / chunk``."""
    lo_ms, hi_ms = begin, _ms(end)
    k = max(1, min(math.ceil(n / chunk), hi_ms - lo_ms))
    cuts = sorted({lo_ms + (hi_ms - lo_ms) * i // k for i in range(1, k)} - {lo_ms, hi_ms})
    highs = [f"{t}-{_MAX_SEQ}" for t in cuts] + [end]
    ranges, lo, share = [], after, max(1, n // len(highs))
    for i, hi in enumerate(highs):
        last = i == len(highs) - 1
        count = n - share * (len(highs) - 1) if last else share
        when = max(_ms(lo), begin) / 1000  # no older than the first entry the stream holds
        ranges.append(Range(lo, hi, count, count * each, when, added if last else None))
        lo = hi
    return ranges
