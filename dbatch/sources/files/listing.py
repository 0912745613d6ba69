"""Listing a source's files: globs and URLs through fsspec, one unit per file, with its time."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import fsspec

from ...core import Unit
from ...errors import SourceError
from ...redact import redact as _redact

if TYPE_CHECKING:
    from .source import Files

__all__ = ["list_units"]


def list_units(source: Files) -> list[Unit]:
    patterns = [source.path] if isinstance(source.path, str) else list(source.path)
    units: dict[str, Unit] = {}
    for pattern in patterns:
        try:
            fs, _, paths = fsspec.get_fs_token_paths(
                pattern, storage_options=dict(source.storage_options)
            )
        except (ImportError, ValueError) as e:
            raise SourceError(
                f"cannot open {_redact(pattern)!r}: {_redact(str(e))}; install the fsspec "
                "implementation for this protocol (s3fs, gcsfs, adlfs...) or fix the URL"
            ) from None
        if not paths and not any(ch in pattern for ch in "*?["):
            raise SourceError(
                f"input file {_redact(pattern)!r} does not exist; check the path "
                "(relative paths are taken from the job file's folder)"
            )
        protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
        for p in sorted(paths):
            try:
                info = fs.info(p)
            except FileNotFoundError:
                raise SourceError(
                    f"input file {_redact(pattern)!r} does not exist; check the path "
                    "(relative paths are taken from the job file's folder)"
                ) from None
            if info.get("type") == "directory":
                continue
            # http(s) paths keep their protocol; others (s3, gcs, memory) drop it.
            local = protocol in ("file", "local") or "://" in p
            key = p if local else f"{protocol}://{p}"
            mtime = _mtime(info)
            units[key] = Unit(
                key=key,
                size=int(info.get("size") or 0),
                time=unit_time(source, key, mtime),
                identity=(("size", int(info.get("size") or 0)), ("mtime", mtime)),
            )
    if not units:
        raise SourceError(
            f"no input files match {_redact(str(source.path))!r}; check the pattern, "
            "or that the landing area has been filled"
        )
    return [units[k] for k in sorted(units)]


def unit_time(source: Files, key: str, mtime: float | None) -> float | None:
    if source.time_pattern:
        m = re.search(source.time_pattern, key)
        if m:
            try:
                stamp = datetime.fromisoformat(m.group(1))
            except ValueError:
                pass
            else:  # a date in a path is a UTC date, whatever this machine's time zone
                if stamp.tzinfo is None:
                    stamp = stamp.replace(tzinfo=UTC)
                return stamp.timestamp()
    return mtime


def _mtime(info: Mapping[str, Any]) -> float | None:
    for k in ("mtime", "LastModified", "last_modified", "updated", "created"):
        v = info.get(k)
        if v is None:
            continue
        if isinstance(v, (int, float)):
            return float(v)
        if isinstance(v, datetime):
            return v.timestamp()
        try:
            return datetime.fromisoformat(str(v)).timestamp()
        except ValueError:
            continue
    return None
