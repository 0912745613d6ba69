"""A paginated JSON API as a source: page ranges as units, polite and patient requests."""

from __future__ import annotations

import email.utils
import json
import math
import os
import random
import re
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import pyarrow as pa

from ..context import BatchContext
from ..core import Batch, Unit, digest
from ..errors import HttpStatus, JobSpecError, RefusedError, SourceError, TransientError
from ..redact import redact
from ..schema import Schema

__all__ = ["HttpSource", "HttpStatus", "RefusedError", "redact_text"]

_PAGINATIONS = ("page", "offset", "cursor")
_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_RECORD_BYTES = 200


redact_text = redact  # kept under its old name for callers of this module


@dataclass(frozen=True)
class HttpSource:
    """Records of a paginated JSON API; each unit is a range of pages.

    Parameters
    ----------
    url
        The endpoint that returns one page (``https://api.example.com/v1/orders``).
    pagination
        ``page`` (``?page=3&per_page=100``), ``offset`` (``?offset=200&limit=100``)
        or ``cursor`` (``?cursor=<next>`` taken from each answer).
    records
        Dotted path to the list of records in an answer (``data``, ``result.items``);
        empty when the answer itself is the list.
    page_size, size_param
        Records per page, and the query parameter that asks for it (None: not sent).
    page_param, first_page, offset_param
        Parameter names (and the number of the first page) for page and offset APIs.
    cursor_param, next_cursor
        For cursor APIs: the parameter to send, and the dotted path of the next
        cursor in an answer (the walk ends when it is missing or null).
    total, count_url
        How the client learns how many records there are: a dotted path in the
        first page's answer (``meta.total``), or an endpoint that answers the count
        (a number, or an object holding it at ``total``). Without either, the client
        finds the last page by probing (about 2 log2(pages) requests).
    pages_per_unit
        Pages per unit (page and offset APIs). A cursor API is one unit: its pages
        can only be walked in order.
    params, headers
        Fixed query parameters and headers. ``${NAME}`` in a header is replaced by
        the environment variable ``NAME`` (``Authorization: "Bearer ${API_TOKEN}"``).
        Header values are never logged nor shown in errors, the plan or the ledger;
        secret-looking query values (``token=``, ``api_key=``...) are masked too.
    rate_limit
        Requests per second, per worker process (None: as fast as answered).
    timeout
        Seconds to wait for an answer.
    retries, max_wait
        Retries of one request on 429, 5xx, timeouts and refused connections,
        honouring ``Retry-After`` up to ``max_wait`` seconds; after that a
        ``TransientError`` lets the runner retry the whole batch later.
    schema
        Declared columns, as for files; values that do not fit are quarantined.

    Examples
    --------
    >>> HttpSource("https://api.example.com/v1/orders", records="data", total="meta.total",
    ...            headers={"Authorization": "Bearer ${API_TOKEN}"}, rate_limit=5)  # doctest: +SKIP
    """

    url: str
    pagination: str = "page"
    records: str = ""
    page_size: int = 100
    size_param: str | None = "per_page"
    page_param: str = "page"
    first_page: int = 1
    offset_param: str = "offset"
    cursor_param: str = "cursor"
    next_cursor: str = "next"
    total: str | None = None
    count_url: str | None = None
    pages_per_unit: int = 10
    params: Mapping[str, Any] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    rate_limit: float | None = None
    timeout: float = 30.0
    retries: int = 4
    max_wait: float = 60.0
    schema: Schema | Mapping[str, Any] | None = None
    _resolved: dict[str, str] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self):
        for name in ("url", "count_url"):
            value = getattr(self, name)
            if value is not None and not re.match(r"https?://", str(value)):
                raise JobSpecError(
                    f"expected an http:// or https:// URL, got {redact_text(str(value))!r}",
                    key=f"source.{name}",
                )
        if self.pagination not in _PAGINATIONS:
            raise JobSpecError(
                f"pagination must be one of {list(_PAGINATIONS)}", key="source.pagination"
            )
        for name in ("page_size", "pages_per_unit", "timeout"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise JobSpecError("must be a positive number", key=f"source.{name}")
        if self.rate_limit is not None and not self.rate_limit > 0:
            raise JobSpecError(
                "must be a positive number of requests per second", key="source.rate_limit"
            )
        if not isinstance(self.retries, int) or isinstance(self.retries, bool) or self.retries < 0:
            raise JobSpecError("must be a whole number >= 0", key="source.retries")
        object.__setattr__(self, "schema", Schema.from_mapping(self.schema))
        object.__setattr__(self, "_resolved", _resolve_headers(self.headers))

    # -- description ------------------------------------------------------------------

    def __repr__(self) -> str:
        return (
            f"HttpSource({self.where!r}, pagination={self.pagination!r}, "
            f"records={self.records!r}, params={self._shown_params!r}, "
            f"headers={sorted(self.headers)})"
        )

    @property
    def _shown_params(self) -> str:
        """The fixed query parameters as a query string, secret-looking values masked."""
        return redact_text(urlencode(sorted((k, str(v)) for k, v in self.params.items())))

    @property
    def where(self) -> str:
        return redact_text(self.url)

    @property
    def declared(self) -> Schema | None:
        """The declared columns (a mapping given as ``schema`` was turned into a ``Schema``)."""
        return Schema.from_mapping(self.schema)

    def describe(self) -> str:
        return f"http {self.where} ({self.pagination} pagination)"

    def token(self) -> list[Any]:
        return [
            "http",
            self.where,
            self.pagination,
            self.records,
            self.page_size,
            self.pages_per_unit,
            self._shown_params,
            sorted(self.headers),
            self.declared.token() if self.declared else None,
        ]

    # -- planning, on the client ------------------------------------------------------

    def list_units(self) -> list[Unit]:
        """Page ranges from the record count (given, counted or probed); one unit for cursors."""
        try:
            with _Client(self) as client:
                if self.pagination == "cursor":
                    return self._cursor_unit(client)
                n = self._count(client)
        except _Garbage as g:
            raise SourceError(f"{self.describe()}: cannot plan: {g.message}") from None
        if n == 0:
            return []
        pages = math.ceil(n / self.page_size)
        units = []
        for start in range(0, pages, self.pages_per_unit):
            end = min(start + self.pages_per_unit, pages)
            in_unit = min(n, end * self.page_size) - start * self.page_size
            if self.pagination == "page":
                a = self.first_page + start
                key = f"pages:{a}-{a + self.pages_per_unit - 1}"
            else:
                a = start * self.page_size
                key = f"offsets:{a}-{a + self.pages_per_unit * self.page_size - 1}"
            units.append(
                Unit(
                    key=key,
                    size=in_unit * _RECORD_BYTES,
                    identity=(("first", start), ("end", end), ("records", in_unit)),
                )
            )
        return units

    def _cursor_unit(self, client: _Client) -> list[Unit]:
        body, _ = client.get_json(self.url, self._page_params(cursor=None))
        records = _records(body, self.records, self.url)
        if not records:
            return []
        identity: list[tuple[str, Any]] = [("first_page", digest(body))]
        if self.total:
            identity.append(("total", _dig(body, self.total)))
        return [Unit(key="cursor:all", size=len(records) * _RECORD_BYTES, identity=tuple(identity))]

    def _count(self, client: _Client) -> int:
        if self.count_url:
            body, _ = client.get_json(self.count_url, dict(self.params))
            value = body if not isinstance(body, dict) else _dig(body, self.total or "count")
            return _as_count(value, self.count_url)
        if self.total:
            body, _ = client.get_json(self.url, self._page_params(0))
            return _as_count(_dig(body, self.total), self.url, path=self.total)
        return self._probe(client)

    def _probe(self, client: _Client) -> int:
        """Find the last non-empty page by doubling, then bisecting."""

        def size(page: int) -> int:
            body, _ = client.get_json(self.url, self._page_params(page))
            return len(_records(body, self.records, self.url))

        first = size(0)
        if first < self.page_size:
            return first
        good, bad = 0, 1
        while (n := size(bad)) == self.page_size:
            good, bad = bad, bad * 2
        if n:  # a short page: the last one
            return bad * self.page_size + n
        while bad - good > 1:
            mid = (good + bad) // 2
            n = size(mid)
            if n == 0:
                bad = mid
            elif n < self.page_size:
                return mid * self.page_size + n
            else:
                good = mid
        return bad * self.page_size  # pages up to `good` are full, `bad` (= good + 1) is empty

    # -- loading, on a worker ---------------------------------------------------------

    def load(self, batch: Batch, ctx: BatchContext) -> pa.Table:
        """Fetch each unit's pages in order; a page that is not JSON is quarantined."""
        tables = []
        with _Client(self) as client:
            for unit in batch.units:
                records: list[Any] = []
                for page in self._pages(client, unit, ctx):
                    ctx.read_rows(len(page))
                    records.extend(page)
                tables.append(self._table(records, ctx, f"{self.where} {unit.key}"))
        tables = [t for t in tables if t.num_columns or t.num_rows]
        if not tables:
            return self.declared.arrow().empty_table() if self.declared else pa.table({})
        try:
            return pa.concat_tables(tables, promote_options="permissive")
        except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
            raise SourceError(
                f"{self.describe()}: records of different pages have different types ({e}); "
                "declare a schema in the source"
            ) from None

    def _pages(self, client: _Client, unit: Unit, ctx: BatchContext) -> Iterator[list[Any]]:
        if self.pagination == "cursor":
            yield from self._cursor_pages(client, ctx)
            return
        ident = dict(unit.identity)
        for page in range(ident["first"], ident["end"]):
            params = self._page_params(page)
            url = client.url_of(self.url, params)
            try:
                body, _ = client.get_json(self.url, params)
                records = _records(body, self.records, self.url)
            except _Garbage as g:
                ctx.quarantine_file(redact_text(url), "bad_response", g.message)
                continue
            if not records:
                return  # the API has fewer pages now than when planned
            yield records

    def _cursor_pages(self, client: _Client, ctx: BatchContext) -> Iterator[list[Any]]:
        cursor, seen = None, set()
        while True:
            params = self._page_params(cursor=cursor)
            url = client.url_of(self.url, params)
            try:
                body, _ = client.get_json(self.url, params)
                records = _records(body, self.records, self.url)
            except _Garbage as g:
                ctx.quarantine_file(
                    redact_text(url),
                    "bad_response",
                    g.message + " The rest of the cursor walk could not be read.",
                )
                return
            if records:
                yield records
            nxt = _dig(body, self.next_cursor) if isinstance(body, dict) else None
            if not records or nxt in (None, ""):
                return
            if nxt in seen:
                raise SourceError(
                    f"{self.describe()}: the API returned cursor {str(nxt)[:40]!r} twice; "
                    "the walk would never end. Check next_cursor and cursor_param."
                )
            seen.add(nxt)
            cursor = nxt

    def _page_params(self, page: int | None = None, cursor: Any = None) -> dict[str, Any]:
        params = dict(self.params)
        if self.size_param:
            params[self.size_param] = self.page_size
        if self.pagination == "page":
            params[self.page_param] = self.first_page + (page or 0)
        elif self.pagination == "offset":
            params[self.offset_param] = (page or 0) * self.page_size
        elif cursor is not None:
            params[self.cursor_param] = cursor
        return params

    def _table(self, records: list[Any], ctx: BatchContext, where: str) -> pa.Table:
        good = [r for r in records if isinstance(r, dict)]
        if len(good) != len(records):
            lines = [i + 1 for i, r in enumerate(records) if not isinstance(r, dict)]
            ctx.quarantine_rows(
                where,
                "json",
                "a record must be a JSON object",
                [json.dumps(records[i - 1]) for i in lines],
                lines,
            )
        schema = self.declared
        if schema is None:
            try:
                return pa.Table.from_pylist(good)
            except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
                raise SourceError(
                    f"{self.describe()}: records of {where} mix value types ({e}); declare a "
                    "schema in the source"
                ) from None
        numbers = [i + 1 for i, r in enumerate(records) if isinstance(r, dict)]
        by_number = dict(zip(numbers, good, strict=True))
        text = pa.table(
            {n: pa.array([_as_text(r.get(n)) for r in good], pa.string()) for n in schema.names}
        )

        def raw_of(nums: list) -> list:
            return [json.dumps(by_number.get(k), default=str) for k in nums]

        lines = pa.array(numbers, pa.int64())
        table, lines = schema.cast_strings(text, ctx, where, raw_of, lines)
        return schema.check_constraints(table, ctx, where, raw_of, lines)


class _Garbage(Exception):
    """An answer that is not the JSON the source expects (quarantined, not retried)."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class _Limiter:
    """At most ``rate`` requests per second from this process (shared by its threads)."""

    def __init__(self, rate: float):
        self.interval = 1.0 / rate
        self.next = 0.0
        self.lock = threading.Lock()

    def wait(self) -> None:
        with self.lock:
            now = time.monotonic()
            start = max(now, self.next)
            self.next = start + self.interval
        if start > now:
            time.sleep(start - now)


_limiters: dict[tuple[str, float], _Limiter] = {}
_limiters_lock = threading.Lock()


def _limiter(url: str, rate: float) -> _Limiter:
    from urllib.parse import urlsplit

    key = (urlsplit(url).netloc, rate)
    with _limiters_lock:
        return _limiters.setdefault(key, _Limiter(rate))


class _Client:
    """One ``requests`` session: rate limit, retries on 429/5xx honouring Retry-After."""

    def __init__(self, source: HttpSource):
        import requests

        self.source = source
        self.session = requests.Session()
        self.session.headers.update(source._resolved)

    def __enter__(self) -> _Client:
        return self

    def __exit__(self, *exc) -> None:
        self.session.close()

    @staticmethod
    def url_of(url: str, params: Mapping[str, Any]) -> str:
        if not params:
            return url
        return url + ("&" if "?" in url else "?") + urlencode(list(params.items()))

    def get_json(self, url: str, params: Mapping[str, Any]) -> tuple[Any, Any]:
        response = self.get(url, params)
        shown = redact_text(self.url_of(url, params))
        try:
            return response.json(), response
        except ValueError as e:
            head = response.text[:200]
            raise _Garbage(
                f"GET {shown} answered {response.status_code} with a body that is not JSON "
                f"({e}); it starts with {head!r}. Check the URL and the API's status page; "
                "when it answers JSON again, run `dbatch replay` to read this page."
            ) from None

    def get(self, url: str, params: Mapping[str, Any]):
        import requests

        src = self.source
        shown = redact_text(self.url_of(url, params))
        limiter = _limiter(url, src.rate_limit) if src.rate_limit else None
        hint: float | None = None
        problem = ""
        for attempt in range(src.retries + 1):
            if limiter is not None:
                limiter.wait()
            try:
                response = self.session.get(url, params=dict(params), timeout=src.timeout)
            except requests.Timeout:
                problem, hint = f"got no answer within {src.timeout:g} s", None
            except requests.ConnectionError as e:
                problem, hint = f"could not connect ({_reason(e)})", None
            else:
                status = response.status_code
                if status < 400:
                    return response
                if status != 429 and status < 500:
                    raise _refused(src, shown, response)
                problem = f"answered {status} {response.reason}"
                hint = _retry_after(response.headers.get("Retry-After"))
                if hint is not None and hint > src.max_wait:
                    break  # longer than a worker should sleep: let the runner come back later
            if attempt < src.retries:
                time.sleep(hint if hint is not None else _backoff(attempt))
        raise TransientError(
            f"GET {shown} {problem} (after {attempt + 1} attempt(s)); the runner retries the "
            "batch. If this persists, check the API's status, lower rate_limit, or raise "
            "timeout.",
            retry_after=hint,
        )


def _refused(src: HttpSource, shown: str, response) -> RefusedError:
    status = response.status_code
    if status in (401, 403):
        names = sorted(set(_ENV.findall(" ".join(str(v) for v in src.headers.values()))))
        where = f"the environment variable(s) {names}" if names else "the headers of the source"
        hint = f"check the credentials taken from {where} (their values are not shown)"
    elif status == 404:
        hint = "check the URL and the pagination settings"
    else:
        hint = "check the URL, params and pagination settings"
    return RefusedError(f"GET {shown} answered {status} {response.reason}; {hint}", status)


def _resolve_headers(headers: Mapping[str, str]) -> dict[str, str]:
    if not isinstance(headers, Mapping):
        raise JobSpecError("expected a mapping of header name to value", key="source.headers")
    out = {}
    for name, value in headers.items():
        if not isinstance(value, str):
            raise JobSpecError("header values are strings", key=f"source.headers.{name}")

        def env(m: re.Match, name=name) -> str:
            var = m.group(1)
            if var not in os.environ:
                raise JobSpecError(
                    f"the environment variable {var} is not set; export it before the run "
                    "(the value is never shown or stored)",
                    key=f"source.headers.{name}",
                )
            return os.environ[var]

        out[str(name)] = _ENV.sub(env, value)
    return out


def _records(body: Any, path: str, url: str) -> list[Any]:
    found = _dig(body, path) if path else body
    if not isinstance(found, list):
        what = f"at {path!r}" if path else "as the whole answer"
        raise _Garbage(
            f"the answer of {redact_text(url)} holds no list of records {what} (found "
            f"{type(found).__name__}: {json.dumps(found, default=str)[:120]}). Check the "
            "source's records path, or the API's status."
        )
    return found


def _dig(body: Any, path: str) -> Any:
    for part in path.split(".") if path else []:
        if isinstance(body, dict):
            body = body.get(part)
        elif isinstance(body, list) and part.isdigit() and int(part) < len(body):
            body = body[int(part)]
        else:
            return None
    return body


def _as_count(value: Any, url: str, path: str | None = None) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    where = f" at {path!r}" if path else ""
    raise SourceError(
        f"the answer of {redact_text(url)} holds no record count{where} (found {value!r}); "
        "check the total / count_url settings, or leave both out to find the last page by probing"
    )


def _as_text(v: Any) -> str | None:
    if v is None:
        return None
    return v if isinstance(v, str) else json.dumps(v)


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _backoff(attempt: int) -> float:
    return random.uniform(0, min(10.0, 0.25 * 2**attempt))


def _reason(e: BaseException) -> str:
    text = str(e)
    m = re.search(
        r"\[Errno -?\d+\] ([^'\")]+)|(Connection refused|Name or service not known)", text
    )
    reason = (m.group(1) or m.group(2)) if m else type(e).__name__
    return redact_text(reason.strip())
