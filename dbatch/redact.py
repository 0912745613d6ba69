"""Hide credentials in text that may reach logs, errors, the ledger or the quarantine."""

from __future__ import annotations

import re

__all__ = ["redact"]

_USERINFO = re.compile(r"(://)[^/@\s]+@")
_SECRET_PARAM = re.compile(
    r"((?:api[_-]?key|key|token|access[_-]?token|secret|password|passwd|auth|signature|sig)=)"
    r"[^&\s'\"#]+",
    re.IGNORECASE,
)


def redact(text: str) -> str:
    """Hide ``user:password@`` in URLs and secret-looking query values.

    Examples
    --------
    >>> redact("s3://AKIA:secret@bucket/x.csv?token=abc&page=2")
    's3://***@bucket/x.csv?token=***&page=2'
    """
    return _SECRET_PARAM.sub(r"\1***", _USERINFO.sub(r"\1***@", text))
