"""HttpSource: a paginated JSON API as a source, page ranges as units, polite requests."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import pyarrow as pa

from ...arrow import empty_table
from ...context import BatchContext
from ...core import Batch, Unit
from ...errors import JobSpecError, SourceError
from ...redact import redact, remember, secret_name, url_secrets
from ...schema import Schema
from .client import Client, Garbage, header_variables, resolve_headers
from .pages import PAGINATIONS, Pager, as_count, dig
from .table import records_table

__all__ = ["HttpSource"]


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
        ``TransientError`` lets the runner retry the whole batch later. The waits
        between attempts follow ``dbatch.retry.RetryPolicy`` (exponential backoff
        from 0.25 s with full jitter, or the server's ``Retry-After``).
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
    _secrets: tuple[str, ...] = field(default=(), init=False, repr=False, compare=False)

    def __post_init__(self):
        for name, value in (("url", self.url), ("count_url", self.count_url)):
            if value is not None and not re.match(r"https?://", str(value)):
                raise JobSpecError(
                    f"expected an http:// or https:// URL, got {redact(str(value))!r}",
                    key=f"source.{name}",
                )
        if self.pagination not in PAGINATIONS:
            raise JobSpecError(
                f"pagination must be one of {list(PAGINATIONS)}", key="source.pagination"
            )
        for name, value in (
            ("page_size", self.page_size),
            ("pages_per_unit", self.pages_per_unit),
            ("timeout", self.timeout),
        ):
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise JobSpecError("must be a positive number", key=f"source.{name}")
        if self.rate_limit is not None and not self.rate_limit > 0:
            raise JobSpecError(
                "must be a positive number of requests per second", key="source.rate_limit"
            )
        if not isinstance(self.retries, int) or isinstance(self.retries, bool) or self.retries < 0:
            raise JobSpecError("must be a whole number >= 0", key="source.retries")
        object.__setattr__(self, "schema", Schema.from_mapping(self.schema))
        object.__setattr__(self, "_resolved", resolve_headers(self.headers))
        object.__setattr__(self, "_secrets", self._secret_values())

    def _secret_values(self) -> tuple[str, ...]:
        """What a worker must hide too: the headers' variables, URL passwords, secret params."""
        values = [os.environ[v] for v in header_variables(self.headers)]
        values += [str(v) for k, v in self.params.items() if secret_name(k)]
        for url in (self.url, self.count_url):
            values += url_secrets(url) if url is not None else []
        remember(*values)
        return tuple(values)

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
        return redact(urlencode(sorted((k, str(v)) for k, v in self.params.items())))

    @property
    def where(self) -> str:
        return redact(self.url)

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

    @property
    def _pager(self) -> Pager:
        return Pager(
            url=self.url,
            pagination=self.pagination,
            records=self.records,
            page_size=self.page_size,
            size_param=self.size_param,
            page_param=self.page_param,
            first_page=self.first_page,
            offset_param=self.offset_param,
            cursor_param=self.cursor_param,
            next_cursor=self.next_cursor,
            params=self.params,
        )

    def _client(self) -> Client:
        remember(*self._secrets)  # on a worker, before the first request
        return Client(
            self._resolved,
            variables=header_variables(self.headers),
            rate_limit=self.rate_limit,
            timeout=self.timeout,
            retries=self.retries,
            max_wait=self.max_wait,
        )

    # -- planning, on the client ------------------------------------------------------

    def list_units(self) -> list[Unit]:
        """Page ranges from the record count (given, counted or probed); one unit for cursors."""
        pager = self._pager
        try:
            with self._client() as client:
                if self.pagination == "cursor":
                    return pager.cursor_unit(client, self.total)
                n = self._count(client, pager)
        except Garbage as g:
            raise SourceError(f"{self.describe()}: cannot plan: {g.message}") from None
        if n == 0:
            return []
        return pager.units(n, self.pages_per_unit)

    def _count(self, client: Client, pager: Pager) -> int:
        if self.count_url:
            body, _ = client.get_json(self.count_url, dict(self.params))
            value = body if not isinstance(body, dict) else dig(body, self.total or "count")
            return as_count(value, self.count_url)
        if self.total:
            body, _ = client.get_json(self.url, pager.page_params(0))
            return as_count(dig(body, self.total), self.url, path=self.total)
        return pager.probe(client)

    # -- loading, on a worker ---------------------------------------------------------

    def load(self, batch: Batch, ctx: BatchContext) -> pa.Table:
        """Fetch each unit's pages in order; a page that is not JSON is quarantined."""
        tables = []
        with self._client() as client:
            for unit in batch.units:
                records: list[Any] = []
                for page in self._pages(client, unit, ctx):
                    ctx.read_rows(len(page))
                    records.extend(page)
                where = f"{self.where} {unit.key}"
                tables.append(records_table(records, self.declared, ctx, where, self.describe()))
        tables = [t for t in tables if t.num_columns or t.num_rows]
        if not tables:
            return empty_table(self.declared.arrow()) if self.declared else pa.table({})
        try:
            return pa.concat_tables(tables, promote_options="permissive")
        except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
            raise SourceError(
                f"{self.describe()}: records of different pages have different types ({e}); "
                "declare a schema in the source"
            ) from None

    def _pages(self, client: Client, unit: Unit, ctx: BatchContext) -> Iterator[list[Any]]:
        if self.pagination == "cursor":
            return self._pager.cursor_pages(client, ctx, self.describe())
        return self._pager.pages(client, unit, ctx)
