"""The HTTP client of a source: headers from the environment, a rate limit, patient retries."""

from __future__ import annotations

import email.utils
import re
import threading
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode, urlsplit

from ...errors import JobSpecError, RefusedError, TransientError
from ...redact import expand, redact
from ...retry import RetryPolicy

__all__ = ["Client", "Garbage", "header_variables", "resolve_headers", "url_of"]

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_BACKOFF_BASE = 0.25  # seconds before the second attempt (at most; doubled for each one after)


class Garbage(Exception):
    """An answer that is not the JSON the source expects (quarantined, not retried)."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


def url_of(url: str, params: Mapping[str, Any]) -> str:
    """The URL with its query parameters, as a request sends it.

    Examples
    --------
    >>> url_of("https://api.example.com/v1/orders", {"page": 2})
    'https://api.example.com/v1/orders?page=2'
    """
    if not params:
        return url
    return url + ("&" if "?" in url else "?") + urlencode(list(params.items()))


def resolve_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The headers with each ``${NAME}`` replaced by the environment variable ``NAME``.

    The values are secrets: this process hides them from everything dbatch writes.

    Examples
    --------
    >>> resolve_headers({"Accept": "application/json"})
    {'Accept': 'application/json'}
    """
    if not isinstance(headers, Mapping):
        raise JobSpecError("expected a mapping of header name to value", key="source.headers")
    out = {}
    for name, value in headers.items():
        if not isinstance(value, str):
            raise JobSpecError("header values are strings", key=f"source.headers.{name}")

        def missing(var: str, name: str = name) -> None:
            raise JobSpecError(
                f"the environment variable {var} is not set; export it before the run "
                "(the value is never shown or stored)",
                key=f"source.headers.{name}",
            )

        out[str(name)] = expand(value, missing)
    return out


def header_variables(headers: Mapping[str, str]) -> list[str]:
    """The environment variables the headers name (``${NAME}``), sorted.

    Examples
    --------
    >>> header_variables({"Authorization": "Bearer ${API_TOKEN}"})
    ['API_TOKEN']
    """
    return sorted(set(_ENV.findall(" ".join(str(v) for v in headers.values()))))


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
    key = (urlsplit(url).netloc, rate)
    with _limiters_lock:
        return _limiters.setdefault(key, _Limiter(rate))


class Client:
    """One ``requests`` session: rate limit, retries on 429/5xx honouring Retry-After.

    A request is tried ``retries + 1`` times; the waits between attempts follow
    ``RetryPolicy`` (exponential backoff with full jitter, or the server's
    ``Retry-After``), never longer than ``max_wait``. A ``Retry-After`` beyond
    ``max_wait`` gives up at once: the runner retries the whole batch later.
    ``variables`` names the environment variables the headers came from, for
    the hint of a 401 or 403.
    """

    def __init__(
        self,
        headers: Mapping[str, str],
        *,
        variables: list[str],
        rate_limit: float | None,
        timeout: float,
        retries: int,
        max_wait: float,
    ):
        import requests

        self.session = requests.Session()
        self.session.headers.update(headers)
        self.variables = variables
        self.rate_limit = rate_limit
        self.timeout = timeout
        self.retries = retries
        self.max_wait = max_wait
        self.policy = RetryPolicy(attempts=retries + 1, base=_BACKOFF_BASE, cap=max_wait)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.session.close()

    def get_json(self, url: str, params: Mapping[str, Any]) -> tuple[Any, Any]:
        """The decoded JSON answer and the response; ``Garbage`` when it is not JSON."""
        response = self.get(url, params)
        shown = redact(url_of(url, params))
        try:
            return response.json(), response
        except ValueError as e:
            head = response.text[:200]
            raise Garbage(
                f"GET {shown} answered {response.status_code} with a body that is not JSON "
                f"({e}); it starts with {head!r}. Check the URL and the API's status page; "
                "when it answers JSON again, run `dbatch replay` to read this page."
            ) from None

    def get(self, url: str, params: Mapping[str, Any]) -> Any:
        """The response to ``GET url?params``, after the retries transient failures get."""
        import requests

        shown = redact(url_of(url, params))
        limiter = _limiter(url, self.rate_limit) if self.rate_limit else None
        for attempt in range(self.retries + 1):
            if limiter is not None:
                limiter.wait()
            try:
                response = self.session.get(url, params=dict(params), timeout=self.timeout)
            except requests.Timeout:
                problem, hint = f"got no answer within {self.timeout:g} s", None
            except requests.ConnectionError as e:
                problem, hint = f"could not connect ({_reason(e)})", None
            else:
                status = response.status_code
                if status < 400:
                    return response
                if status != 429 and status < 500:
                    raise self._refused(shown, response)
                problem = f"answered {status} {response.reason}"
                hint = _retry_after(response.headers.get("Retry-After"))
            error = TransientError(
                f"GET {shown} {problem} (after {attempt + 1} attempt(s)); the runner retries "
                "the batch. If this persists, check the API's status, lower rate_limit, or "
                "raise timeout.",
                retry_after=hint,
            )
            if hint is not None and hint > self.max_wait:
                break  # longer than a worker should sleep: let the runner come back later
            if attempt < self.retries:
                time.sleep(self.policy.delay(attempt + 1, error))
        raise error

    def _refused(self, shown: str, response: Any) -> RefusedError:
        status = response.status_code
        if status in (401, 403):
            names = self.variables
            where = f"the environment variable(s) {names}" if names else "the headers of the source"
            hint = f"check the credentials taken from {where} (their values are not shown)"
        elif status == 404:
            hint = "check the URL and the pagination settings"
        else:
            hint = "check the URL, params and pagination settings"
        return RefusedError(f"GET {shown} answered {status} {response.reason}; {hint}", status)


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


def _reason(e: BaseException) -> str:
    text = str(e)
    m = re.search(
        r"\[Errno -?\d+\] ([^'\")]+)|(Connection refused|Name or service not known)", text
    )
    reason = (m.group(1) or m.group(2)) if m else type(e).__name__
    return redact(reason.strip())
