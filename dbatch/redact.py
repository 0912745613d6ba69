"""Hide credentials in text that may reach logs, errors, the ledger or the quarantine.

Two kinds of hiding: by shape (``user:password@`` in URLs, secret-looking query
values) and by value. The values are those of every ``${NAME}`` expanded into a
secret-looking place (an HTTP header) and the passwords and tokens of URLs the
job names: once known to this process (``remember``), they are replaced by
``***`` wherever they appear, also where a server echoed them back into a body
that dbatch keeps. Every process that sees a secret remembers it: the driver
when the job is built, a worker when a source opens its connection.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlsplit

__all__ = [
    "MASK",
    "any_known",
    "expand",
    "known",
    "redact",
    "remember",
    "secret_name",
    "url_secrets",
    "scrub",
    "scrub_all",
]

MASK = "***"
_MIN_LENGTH = 4  # shorter values ("1", "yes") would mask ordinary text; they are no secrets
_USERINFO = re.compile(r"(://)[^/@\s]+@")
_SECRET_NAMES = r"api[_-]?key|key|token|access[_-]?token|secret|password|passwd|auth|signature|sig"
_SECRET_PARAM = re.compile(rf"((?:{_SECRET_NAMES})=)[^&\s'\"#]+", re.IGNORECASE)
_SECRET_NAME = re.compile(rf"^(?:{_SECRET_NAMES})$", re.IGNORECASE)
_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")

_known: set[str] = set()
_pattern: re.Pattern[str] | None = None
_lock = threading.Lock()


def remember(*values: str) -> None:
    """Hide these values (and their URL-encoded forms) from now on, in this process."""
    global _pattern
    fresh = set()
    for value in values:
        if isinstance(value, str) and len(value) >= _MIN_LENGTH:
            fresh |= {value, quote(value, safe=""), unquote(value)}
    fresh = {v for v in fresh if len(v) >= _MIN_LENGTH}
    with _lock:
        if fresh <= _known:
            return
        _known.update(fresh)
        ordered = sorted(_known, key=len, reverse=True)  # a longer secret before its prefix
        first = _pattern is None
        _pattern = re.compile("|".join(re.escape(v) for v in ordered))
    if first:
        _scrub_log_records()


def _scrub_log_records() -> None:
    """From now on, log records of this process carry their message with secrets hidden."""
    make = logging.getLogRecordFactory()

    def scrubbed(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = make(*args, **kwargs)
        try:
            text = record.getMessage()
        except (TypeError, ValueError):  # a malformed call: left for logging to report
            return record
        if scrub(text) == text:
            return record
        # Each argument scrubbed, so that filters reading them (a task's key) still can.
        if isinstance(record.args, tuple):
            record.msg = scrub(str(record.msg))
            record.args = tuple(_scrub_argument(a) for a in record.args)
            if scrub(record.getMessage()) == record.getMessage():
                return record
        record.msg, record.args = scrub(text), ()
        return record

    logging.setLogRecordFactory(scrubbed)


def secret_name(name: str) -> bool:
    """Whether a query parameter or field called ``name`` holds a secret (``token``, ``api_key``)."""
    return bool(_SECRET_NAME.match(str(name)))


def url_secrets(url: Any) -> list[str]:
    """The password of ``scheme://user:password@host`` and the secret-looking query values.

    Examples
    --------
    >>> url_secrets("https://me:pw-1234@api.example.com/v1?page=2&token=abcd1234")
    ['pw-1234', 'abcd1234']
    """
    try:
        parts = urlsplit(str(url))
        password = parts.password
    except ValueError:
        return []
    found = [password] if password else []
    return found + [v for k, v in parse_qsl(parts.query) if secret_name(k)]


def _scrub_argument(value: Any) -> Any:
    shown = str(value)
    hidden = scrub(shown)
    return value if hidden == shown else hidden


def scrub(text: str) -> str:
    """``text`` with every remembered secret value replaced by ``***``.

    Examples
    --------
    >>> remember("s3cr3t-token")
    >>> scrub("echo: Authorization: Bearer s3cr3t-token")
    'echo: Authorization: Bearer ***'
    """
    pattern = _pattern
    if pattern is None or not isinstance(text, str):
        return text
    return pattern.sub(MASK, text)


def scrub_all(value: Any) -> Any:
    """``value`` (text, or lists and dicts of it) with remembered secrets replaced."""
    if _pattern is None:
        return value
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {k: scrub_all(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(scrub_all(v) for v in value)
    return value


def expand(text: str, on_missing: Any) -> str:
    """``text`` with each ``${NAME}`` replaced by the environment variable ``NAME``.

    The values are remembered as secrets. ``on_missing(name)`` is called for a
    variable that is not set, and should raise.
    """

    def value(m: re.Match[str]) -> str:
        name = m.group(1)
        if name not in os.environ:
            on_missing(name)
        found = os.environ.get(name, "")
        remember(found)
        return found

    return _ENV.sub(value, text)


def known() -> Iterable[str]:
    """The values being hidden."""
    return frozenset(_known)


def any_known() -> bool:
    """Whether this process knows a secret value to hide (if not, ``scrub`` changes nothing)."""
    return _pattern is not None


def redact(text: str) -> str:
    """Hide remembered secrets, ``user:password@`` in URLs and secret-looking query values.

    Examples
    --------
    >>> redact("s3://AKIA:secret@bucket/x.csv?token=abc&page=2")
    's3://***@bucket/x.csv?token=***&page=2'
    """
    return _SECRET_PARAM.sub(r"\1***", _USERINFO.sub(r"\1***@", scrub(text)))
