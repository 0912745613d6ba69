"""One exception tree; each class also subclasses the builtin it refines."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "DBatchError",
    "JobSpecError",
    "SourceError",
    "BadInputError",
    "SinkError",
    "CommitError",
    "RunLockedError",
    "RunFailedError",
    "TransientError",
    "InsecureConnectionError",
    "PathEscapeError",
    "ModelError",
    "RefusedError",
    "is_transient",
]


class DBatchError(Exception):
    """Base class of every error dbatch raises on purpose."""


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
    """A source cannot be listed or read (missing files, database down, bad URL)."""


class BadInputError(DBatchError, ValueError):
    """Input that cannot be parsed: a bad file or a bad row. Never retried."""

    def __init__(self, message: str, *, kind: str = "invalid", where: str | None = None):
        super().__init__(f"{where}: {message}" if where else message)
        self.kind = kind
        self.where = where


class SinkError(DBatchError, OSError):
    """A sink cannot stage, commit or publish."""


class CommitError(SinkError):
    """A commit could not be completed; the previous output is untouched."""


class RunLockedError(DBatchError, RuntimeError):
    """Another run of the same job is active."""


class RunFailedError(DBatchError, RuntimeError):
    """A run finished without committing every batch."""

    def __init__(self, message: str, result=None):
        super().__init__(message)
        self.result = result


class TransientError(DBatchError, OSError):
    """A failure worth retrying (a blip, a timeout, a 5xx or 429 answer)."""

    def __init__(self, message: str, *, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class RefusedError(SourceError):
    """A server refused a request (an HTTP 4xx other than 429): not worth retrying.

    ``response.status_code`` holds the status, as on the errors of ``requests``.
    """

    def __init__(self, message: str, status: int = 0):
        super().__init__(message)
        self.response = HttpStatus(status)


@dataclass(frozen=True)
class HttpStatus:
    """The HTTP status of a refused request, kept on the error (``error.response.status_code``)."""

    status_code: int


class ModelError(DBatchError, RuntimeError):
    """The model cannot be loaded, or fails on every row: a fault of the model, not the data.

    A batch that raises it fails (it is not retried and nothing of it is committed);
    the other batches go on.
    """


class InsecureConnectionError(DBatchError, ConnectionError):
    """A connection to a non-loopback scheduler without TLS was refused."""


class PathEscapeError(DBatchError, ValueError):
    """A path built from data would land outside its output root."""


_PERMANENT = (
    BadInputError,
    JobSpecError,
    PathEscapeError,
    FileNotFoundError,
    PermissionError,
    IsADirectoryError,
    NotADirectoryError,
)


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` is worth retrying.

    Timeouts, connection errors, ``OSError`` (other than missing files and
    permissions) and HTTP 5xx/429 answers are transient; parse, schema,
    assertion and programming errors are not.
    """
    if isinstance(exc, TransientError):
        return True
    if isinstance(exc, _PERMANENT):
        return False
    status = getattr(getattr(exc, "response", None), "status_code", None)  # requests, httpx
    if status is None and hasattr(exc, "request_info"):  # aiohttp (fsspec's http)
        status = getattr(exc, "status", None)
    if isinstance(status, int):
        return status == 429 or status >= 500
    if isinstance(exc, (TimeoutError, ConnectionError)):
        return True
    name = type(exc).__name__
    if name in {"OperationalError", "InterfaceError", "DisconnectionError"}:
        return True
    return isinstance(exc, OSError)
