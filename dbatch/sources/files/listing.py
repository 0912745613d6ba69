"""Listing a source's files: globs and URLs through fsspec, one unit per file, with its time.

Glob patterns take ``*``, ``?``, ``[...]`` and ``**`` locally and on any fsspec
file system (an ``http(s)`` URL's ``?`` starts its query, so only ``*`` is a
wildcard there). A unit's time is the date or timestamp its path holds
(``time_pattern``) or, without a pattern, the file's modification time.
"""

from __future__ import annotations

import glob
import os
import re
import stat
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

from ...core import Unit
from ...errors import JobSpecError, SourceError
from ...redact import redact as _redact

if TYPE_CHECKING:
    from .source import Files

__all__ = ["list_units", "unit_time", "check_time_pattern", "path_time"]

_MAGIC = re.compile(r"[*?\[]")


def list_units(source: Files) -> list[Unit]:
    """One unit per file the source's paths and patterns match, sorted by key."""
    patterns = [source.path] if isinstance(source.path, str) else list(source.path)
    units: dict[str, Unit] = {}
    for pattern in patterns:
        fs, paths = _expand(pattern, source.storage_options)
        protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
        for p, info in _infos(fs, paths, pattern):
            if info.get("type") == "directory":
                continue
            # http(s) paths keep their protocol; others (s3, gcs, memory) drop it.
            local = protocol in ("file", "local") or "://" in p
            key = p if local else f"{protocol}://{p}"
            mtime = _mtime(info)
            size = int(info.get("size") or 0)
            units[key] = Unit(
                key=key,
                size=size,
                time=unit_time(source, key, mtime),
                identity=(("size", size), ("mtime", mtime)),
            )
    if not units:
        raise SourceError(
            f"no input files match {_redact(str(source.path))!r}; check the pattern, "
            "or that the landing area has been filled"
        )
    return [units[k] for k in sorted(units)]


def _infos(fs: Any, paths: list[str], pattern: str) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """(path, info) of each path, sorted; a local file's from one ``os.stat``.

    fsspec's ``info`` of a local file costs several times a ``stat`` (its path
    handling), which counts when a landing area holds 10^5 files.
    """
    local = isinstance(fs, LocalFileSystem)
    for p in sorted(paths):
        try:
            if local:
                st = os.stat(p)
                kind = "directory" if stat.S_ISDIR(st.st_mode) else "file"
                yield p, {"type": kind, "size": st.st_size, "mtime": st.st_mtime}
            else:
                yield p, fs.info(p)
        except FileNotFoundError:
            raise SourceError(_missing(pattern)) from None


def _local_glob(path: str) -> list[str]:
    """A local glob as fsspec's (hidden files included, ``**`` any depth), without its cost."""
    found = glob.glob(path, recursive=True, include_hidden=True)
    return [p.replace(os.sep, "/") for p in found]


def _expand(pattern: str, storage_options: Mapping[str, Any]) -> tuple[Any, list[str]]:
    """The file system of ``pattern`` and the paths it names (a glob expanded)."""
    try:
        fs, path = fsspec.core.url_to_fs(pattern, **dict(storage_options))
    except (ImportError, ValueError) as e:
        raise SourceError(
            f"cannot open {_redact(pattern)!r}: {_redact(str(e))}; install the fsspec "
            "implementation for this protocol (s3fs, gcsfs, adlfs...) or fix the URL"
        ) from None
    web = pattern.startswith(("http://", "https://"))
    magic = "*" in pattern if web else bool(_MAGIC.search(pattern))
    if not magic:
        return fs, [path]  # list_units asks for its info, which a missing file fails
    if isinstance(fs, LocalFileSystem) and os.path.isabs(path):
        return fs, _local_glob(path)
    found = fs.glob(path)
    return fs, [p for p in found if isinstance(p, str)]


def _missing(pattern: str) -> str:
    where = ""
    if "://" not in pattern and not os.path.isabs(pattern):
        where = f" (looked for {os.path.abspath(pattern)!r})"
    return f"input file {_redact(pattern)!r} does not exist{where}; check the path"


def check_time_pattern(pattern: str | None) -> None:
    """A ``time_pattern`` must compile and hold exactly one group, the date or time."""
    if pattern is None:
        return
    try:
        compiled = re.compile(pattern)
    except re.error as e:
        raise JobSpecError(f"not a regular expression: {e}", key="source.time_pattern") from None
    if compiled.groups != 1:
        raise JobSpecError(
            f"{pattern!r} has {compiled.groups} groups; it needs exactly one, around the date "
            r"or time in the path, such as '(\d{4}-\d{2}-\d{2})' (use (?:...) for others)",
            key="source.time_pattern",
        )


def unit_time(source: Files, key: str, mtime: float | None) -> float | None:
    """The unit's time: the one its path holds, else its modification time."""
    if not source.time_pattern:
        return mtime
    return path_time(source.time_pattern, key)


_YEAR_MONTH = re.compile(r"^(\d{4})-?(\d{2})$")


def path_time(pattern: str, key: str) -> float:
    """Seconds since the epoch of the date or timestamp ``pattern``'s group finds in ``key``.

    ISO 8601 dates and timestamps (``2026-11-01``, ``20261101``, ``2026-11-01T06:00``),
    year-months (``2026-11``, ``202611``) and years (``2026``) are read; a date in a
    path is a UTC date, whatever this machine's time zone. A path the pattern does
    not match, or whose match is not a date, is an error naming the file.

    Examples
    --------
    >>> path_time(r"(\\d{4}-\\d{2})", "landing/flights-2013-02.csv")
    1359676800.0
    """
    m = re.search(pattern, key)
    if m is None:
        raise JobSpecError(
            f"time_pattern {pattern!r} does not match {_redact(key)!r}; every file needs the "
            "date in its path (or remove time_pattern to use modification times)",
            key="source.time_pattern",
        )
    text = m.group(1)
    stamp: datetime | None = None
    month = _YEAR_MONTH.match(text)
    try:
        if month:
            stamp = datetime(int(month.group(1)), int(month.group(2)), 1)
        elif re.fullmatch(r"\d{4}", text):
            stamp = datetime(int(text), 1, 1)
        else:
            stamp = datetime.fromisoformat(text)
    except ValueError:
        stamp = None
    if stamp is None:
        raise JobSpecError(
            f"time_pattern {pattern!r} found {text!r} in {_redact(key)!r}, which is not a date "
            "or time (ISO 8601 such as 2026-11-01, a year-month 2026-11, or a year 2026)",
            key="source.time_pattern",
        )
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)
    return stamp.timestamp()


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
