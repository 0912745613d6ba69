"""One exception tree; whether trying again may help is part of each error (``retryable``).

Every class also subclasses the builtin it refines (``ValueError``, ``OSError``...).
An error of dbatch's is retried only when it says so: ``TransientError`` always,
``SourceError`` and ``SinkError`` when the failure behind them was a blip (a
database that did not answer), the rest never. For other exceptions,
``is_transient`` decides from what they are.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass
from typing import Any

__all__ = [
    "DBatchError",
    "JobSpecError",
    "SourceError",
    "BadInputError",
    "TooManyBadRows",
    "SinkError",
    "CommitError",
    "RunLockedError",
    "RunFailedError",
    "TransientError",
    "InsecureConnectionError",
    "SchedulerError",
    "LedgerError",
    "OutputInUseError",
    "PathEscapeError",
    "ModelError",
    "RefusedError",
    "HttpStatus",
    "is_transient",
]


class DBatchError(Exception):
    """Base class of every error dbatch raises on purpose.

    ``retryable``: whether running the same thing again may succeed (a class default
    that one error can override, ``SourceError(msg, retryable=True)``).
    """

    retryable: bool = False

    def __init__(self, *args: Any, retryable: bool | None = None):
        super().__init__(*args)
        if retryable is not None:
            self.retryable = retryable


class JobSpecError(DBatchError, ValueError):
    """A job file or pipeline definition is wrong; the message names the key and the fix.

    ``message`` is the complaint alone, without the file and key that ``str()`` puts
    before it, so a caller that knows better where it sits can raise it again there.
    """

    def __init__(self, message: str, *, key: str | None = None, file: str | None = None):
        where = []
        if file:
            where.append(str(file))
        if key:
            where.append(f"key '{key}'")
        prefix = f"{': '.join(where)}: " if where else ""
        super().__init__(prefix + message)
        self.message = message
        self.key = key
        self.file = file


class SourceError(DBatchError, OSError):
    """A source cannot be listed or read (missing files, a bad URL, a database that refuses).

    Not retried unless the failure behind it was transient (``retryable=True``).
    """


class BadInputError(DBatchError, ValueError):
    """Input that cannot be parsed: a bad file or a bad row. Never retried."""

    def __init__(self, message: str, *, kind: str = "invalid", where: str | None = None):
        super().__init__(f"{where}: {message}" if where else message)
        self.kind = kind
        self.where = where


class TooManyBadRows(BadInputError):
    """A batch with more bad rows than ``max_bad_fraction``: nothing of it is committed.

    ``reasons`` are the most frequent (reason, count); ``staged`` is where the worker
    kept its quarantined rows, which the runner moves into the work area.
    """

    def __init__(
        self,
        message: str,
        *,
        where: str | None = None,
        rows_in: int = 0,
        rows_quarantined: int = 0,
        reasons: list[tuple[str, int]] | None = None,
        staged: str = "",
    ):
        super().__init__(message, kind="too_many_bad_rows", where=where)
        self.rows_in = rows_in
        self.rows_quarantined = rows_quarantined
        self.reasons = list(reasons or [])
        self.staged = staged


class SinkError(DBatchError, OSError):
    """A sink cannot stage, commit or publish (retried only when ``retryable``)."""


class CommitError(SinkError):
    """A commit could not be completed; the previous output is untouched."""


class RunLockedError(DBatchError, RuntimeError):
    """Another run of the same job is active."""


class RunFailedError(DBatchError, RuntimeError):
    """A run finished without committing every batch."""

    def __init__(self, message: str, result: Any = None):
        super().__init__(message)
        self.result = result


class TransientError(DBatchError, OSError):
    """A failure worth retrying (a blip, a timeout, a 5xx or 429 answer)."""

    retryable = True

    def __init__(self, message: str, *, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True)
class HttpStatus:
    """The HTTP status of a refused request, kept on the error (``error.response.status_code``)."""

    status_code: int


class RefusedError(SourceError):
    """A server refused a request (an HTTP 4xx other than 429): not worth retrying.

    ``response.status_code`` holds the status, as on the errors of ``requests``.
    """

    def __init__(self, message: str, status: int = 0):
        super().__init__(message)
        self.response = HttpStatus(status)


class ModelError(DBatchError, RuntimeError):
    """The model cannot be loaded, or fails on every row: a fault of the model, not the data.

    A batch that raises it fails (it is not retried and nothing of it is committed);
    the other batches go on.
    """


class InsecureConnectionError(DBatchError, ConnectionError):
    """A connection to a non-loopback scheduler without TLS was refused."""


class SchedulerError(DBatchError, ConnectionError):
    """The Dask scheduler could not be reached, or what answered was not a scheduler."""


class LedgerError(DBatchError, OSError):
    """The ledger's database cannot be opened: a wrong URL, a refused login, a server down."""


class OutputInUseError(DBatchError, RuntimeError):
    """The sink's output location is already published by another job."""


class PathEscapeError(DBatchError, ValueError):
    """A path built from data would land outside its output root."""


_PERMANENT = (
    FileNotFoundError,
    PermissionError,
    IsADirectoryError,
    NotADirectoryError,
    FileExistsError,
)

#: OS errors that another try may not meet (a busy device, a dropped connection).
_TRANSIENT_ERRNOS = frozenset(
    getattr(errno, name)
    for name in (
        "EAGAIN",
        "EBUSY",
        "EINTR",
        "EIO",
        "ETIMEDOUT",
        "ECONNRESET",
        "ECONNREFUSED",
        "ECONNABORTED",
        "EPIPE",
        "EHOSTUNREACH",
        "ENETUNREACH",
        "ENETDOWN",
        "ENETRESET",
        "ESTALE",
        "ENOLCK",
        "EREMOTEIO",
    )
    if hasattr(errno, name)
)

_DRIVER_BLIPS = {"OperationalError", "InterfaceError", "DisconnectionError"}


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` is worth retrying.

    dbatch's own errors say so themselves (``retryable``). Of the rest, timeouts,
    connection errors, HTTP 5xx and 429 answers, dropped database connections and
    OS errors of a busy or unreachable device are transient; a missing file, a
    permission, a name too long, a full disk, parse, schema, assertion and
    programming errors are not.

    Examples
    --------
    >>> import errno
    >>> is_transient(TimeoutError()), is_transient(OSError(errno.ENAMETOOLONG, "name"))
    (True, False)
    >>> is_transient(SourceError("declare them with dtypes"))
    False
    """
    if isinstance(exc, DBatchError):
        return exc.retryable
    if isinstance(exc, _PERMANENT):
        return False
    status = getattr(getattr(exc, "response", None), "status_code", None)  # requests, httpx
    if status is None and hasattr(exc, "request_info"):  # aiohttp (fsspec's http)
        status = getattr(exc, "status", None)
    if isinstance(status, int):
        return status == 429 or status >= 500
    if isinstance(exc, (TimeoutError, ConnectionError)):
        return True
    if type(exc).__name__ in _DRIVER_BLIPS:
        return True
    if isinstance(exc, OSError):
        # Without an errno it is an I/O failure of unknown cause (a client library's):
        # worth another try. With one, only the errnos of a blip are.
        return exc.errno is None or exc.errno in _TRANSIENT_ERRNOS
    return False
