"""Pagination of a JSON API: the parameters of a page, its records, page ranges as units."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from ...context import BatchContext
from ...core import Unit, digest
from ...errors import SourceError
from ...redact import redact
from .client import Client, Garbage, url_of

__all__ = ["PAGINATIONS", "Pager", "as_count", "dig", "records_of"]

PAGINATIONS = ("page", "offset", "cursor")
_RECORD_BYTES = 200


@dataclass(frozen=True)
class Pager:
    """How the pages of ``url`` are asked for and read (see ``HttpSource`` for the fields).

    Examples
    --------
    >>> Pager("https://api.example.com/v1/orders", page_size=50).page_params(2)
    {'per_page': 50, 'page': 3}
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
    params: Mapping[str, Any] = field(default_factory=dict)

    def page_params(self, page: int | None = None, cursor: Any = None) -> dict[str, Any]:
        """The query parameters of page number ``page`` (from 0), or of the page at ``cursor``."""
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

    def units(self, n: int, pages_per_unit: int) -> list[Unit]:
        """Units of ``pages_per_unit`` pages each, for ``n`` records (page and offset APIs)."""
        pages = math.ceil(n / self.page_size)
        units = []
        for start in range(0, pages, pages_per_unit):
            end = min(start + pages_per_unit, pages)
            in_unit = min(n, end * self.page_size) - start * self.page_size
            if self.pagination == "page":
                a = self.first_page + start
                key = f"pages:{a}-{a + pages_per_unit - 1}"
            else:
                a = start * self.page_size
                key = f"offsets:{a}-{a + pages_per_unit * self.page_size - 1}"
            units.append(
                Unit(
                    key=key,
                    size=in_unit * _RECORD_BYTES,
                    identity=(("first", start), ("end", end), ("records", in_unit)),
                )
            )
        return units

    def cursor_unit(self, client: Client, total: str | None) -> list[Unit]:
        """The one unit of a cursor API, named by its first page (and the total, if given)."""
        body, _ = client.get_json(self.url, self.page_params(cursor=None))
        records = records_of(body, self.records, self.url)
        if not records:
            return []
        identity: list[tuple[str, Any]] = [("first_page", digest(body))]
        if total:
            identity.append(("total", dig(body, total)))
        return [Unit(key="cursor:all", size=len(records) * _RECORD_BYTES, identity=tuple(identity))]

    def probe(self, client: Client) -> int:
        """The number of records, from the last non-empty page found by doubling, then bisecting."""

        def size(page: int) -> int:
            body, _ = client.get_json(self.url, self.page_params(page))
            return len(records_of(body, self.records, self.url))

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

    def pages(self, client: Client, unit: Unit, ctx: BatchContext) -> Iterator[list[Any]]:
        """The records of each page of ``unit``, in order; a page not JSON is quarantined."""
        ident = dict(unit.identity)
        for page in range(ident["first"], ident["end"]):
            params = self.page_params(page)
            try:
                body, _ = client.get_json(self.url, params)
                records = records_of(body, self.records, self.url)
            except Garbage as g:
                ctx.quarantine_file(redact(url_of(self.url, params)), "bad_response", g.message)
                continue
            if not records:
                return  # the API has fewer pages now than when planned
            yield records

    def cursor_pages(self, client: Client, ctx: BatchContext, what: str) -> Iterator[list[Any]]:
        """The records of each page of a cursor walk; ``what`` names the source in errors."""
        cursor, seen = None, set()
        while True:
            params = self.page_params(cursor=cursor)
            try:
                body, _ = client.get_json(self.url, params)
                records = records_of(body, self.records, self.url)
            except Garbage as g:
                ctx.quarantine_file(
                    redact(url_of(self.url, params)),
                    "bad_response",
                    g.message + " The rest of the cursor walk could not be read.",
                )
                return
            if records:
                yield records
            nxt = dig(body, self.next_cursor) if isinstance(body, dict) else None
            if not records or nxt in (None, ""):
                return
            if nxt in seen:
                raise SourceError(
                    f"{what}: the API returned cursor {str(nxt)[:40]!r} twice; "
                    "the walk would never end. Check next_cursor and cursor_param."
                )
            seen.add(nxt)
            cursor = nxt


def records_of(body: Any, path: str, url: str) -> list[Any]:
    """The list of records at ``path`` in an answer (the answer itself when ``path`` is empty).

    Examples
    --------
    >>> records_of({"data": [{"id": 1}]}, "data", "https://api.example.com/v1/orders")
    [{'id': 1}]
    """
    found = dig(body, path) if path else body
    if not isinstance(found, list):
        what = f"at {path!r}" if path else "as the whole answer"
        raise Garbage(
            f"the answer of {redact(url)} holds no list of records {what} (found "
            f"{type(found).__name__}: {json.dumps(found, default=str)[:120]}). Check the "
            "source's records path, or the API's status."
        )
    return found


def dig(body: Any, path: str) -> Any:
    """The value at a dotted ``path`` in a JSON answer, or None.

    Examples
    --------
    >>> dig({"meta": {"total": 95}}, "meta.total")
    95
    """
    for part in path.split(".") if path else []:
        if isinstance(body, dict):
            body = body.get(part)
        elif isinstance(body, list) and part.isdigit() and int(part) < len(body):
            body = body[int(part)]
        else:
            return None
    return body


def as_count(value: Any, url: str, path: str | None = None) -> int:
    """A record count found in an answer, checked.

    Examples
    --------
    >>> as_count("95", "https://api.example.com/v1/count")
    95
    """
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    where = f" at {path!r}" if path else ""
    raise SourceError(
        f"the answer of {redact(url)} holds no record count{where} (found {value!r}); "
        "check the total / count_url settings, or leave both out to find the last page by probing"
    )
