"""SQLAlchemy plumbing shared by the SQL source and sink: engines, identifiers, clear errors."""

from __future__ import annotations

import dataclasses
import functools
import importlib
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from .errors import JobSpecError, SourceError
from .redact import remember

__all__ = [
    "upsert",
    "add_missing_columns",
    "absolute_sqlite",
    "check_identifier",
    "database_error",
    "engine",
    "redact_url",
    "repr_hiding_passwords",
]

_AUTH = re.compile(
    r"authentication failed|password|access denied|role .* does not exist|"
    r"no pg_hba\.conf entry|permission denied",
    re.IGNORECASE,
)
_NO_DATABASE = re.compile(r'database "[^"]*" does not exist|unknown database', re.IGNORECASE)
_DOWN = re.compile(
    r"connection refused|could not connect|connection failed|timeout|timed out|"
    r"could not translate host|name or service not known|server closed|unable to open",
    re.IGNORECASE,
)


def redact_url(url: str) -> str:
    """A SQLAlchemy URL with its password replaced by ``***``.

    Examples
    --------
    >>> redact_url("postgresql+psycopg://me:secret@db:5432/shop")
    'postgresql+psycopg://me:***@db:5432/shop'
    """
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - an unparsable URL is shown as nothing
        return "<unparsable database URL>"


def repr_hiding_passwords(obj: Any, urls: Iterable[str]) -> str:
    """The dataclass ``repr`` of ``obj``, with the passwords of its ``urls`` fields hidden.

    Examples
    --------
    >>> from dataclasses import dataclass
    >>> @dataclass
    ... class Target:
    ...     url: str
    ...     table: str
    >>> repr_hiding_passwords(Target("postgresql://me:secret@db/shop", "t"), ["url"])
    "Target(url='postgresql://me:***@db/shop', table='t')"
    """
    hidden = set(urls)
    shown = []
    for f in dataclasses.fields(obj):
        if not f.repr:
            continue
        value = getattr(obj, f.name)
        if f.name in hidden and isinstance(value, str):
            value = redact_url(value)
        shown.append(f"{f.name}={value!r}")
    return f"{type(obj).__name__}({', '.join(shown)})"


def absolute_sqlite(url: str, *, key: str) -> str:
    """Check a SQLAlchemy URL; make a relative SQLite path absolute (workers run elsewhere).

    Examples
    --------
    >>> absolute_sqlite("sqlite:////data/shop.db", key="source.url")
    'sqlite:////data/shop.db'
    """
    if not isinstance(url, str) or not url:
        raise JobSpecError("expected a SQLAlchemy URL such as sqlite:///shop.db", key=key)
    try:
        parsed = sa.engine.make_url(url)
    except sa.exc.ArgumentError:
        raise JobSpecError(
            f"{redact_url(url)!r} is not a SQLAlchemy URL; write for example "
            "'sqlite:///shop.db' or 'postgresql+psycopg://user@host:5432/db'",
            key=key,
        ) from None
    if parsed.password:
        remember(str(parsed.password))  # hidden from everything dbatch writes
    if parsed.get_backend_name() != "sqlite":
        return url
    database = parsed.database or ""
    if database in ("", ":memory:") or database.startswith("file:"):
        raise JobSpecError(
            "an in-memory SQLite database is private to one process, and batches run in "
            "other processes; give a file path (sqlite:///shop.db)",
            key=key,
        )
    path = Path(database).expanduser()
    if not path.is_absolute():
        parsed = parsed.set(database=str(path.resolve()))
    return parsed.render_as_string(hide_password=False)


def check_identifier(name: Any, *, key: str) -> str:
    """Refuse identifiers that cannot be a table or column name; SQLAlchemy quotes the rest.

    Examples
    --------
    >>> check_identifier("orders", key="source.table")
    'orders'
    """
    if not isinstance(name, str) or not name.strip():
        raise JobSpecError(f"expected a table or column name, got {name!r}", key=key)
    if len(name) > 128 or any(ord(ch) < 32 for ch in name):
        raise JobSpecError(
            f"{name[:40]!r} is not a usable name (control characters, or longer than 128)",
            key=key,
        )
    return name


def engine(url: str, *, create: bool = False) -> sa.Engine:
    """One engine per URL and process; no pool, so no idle connection outlives a batch.

    With ``create``, the folder of a SQLite file is made first (for sinks).
    """
    if create:
        parsed = sa.engine.make_url(url)
        if parsed.get_backend_name() == "sqlite" and parsed.database:
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    return _engine(url)


@functools.lru_cache(maxsize=32)
def _engine(url: str) -> sa.Engine:
    eng = sa.create_engine(url, poolclass=NullPool)
    if eng.url.password:
        remember(str(eng.url.password))  # on a worker too: hidden from what it writes
    if eng.dialect.name == "sqlite":
        sa.event.listen(eng, "connect", _sqlite_busy_timeout)
    return eng


def _sqlite_busy_timeout(dbapi_con, _record) -> None:
    dbapi_con.execute("PRAGMA busy_timeout = 30000")


def database_error(
    exc: BaseException, url: str, what: str, *, cls: type[Exception] = SourceError
) -> Exception:
    """Turn a driver error into a message naming the database (password hidden) and the fix.

    Examples
    --------
    >>> err = database_error(OSError("Connection refused"), "postgresql://u:pw@h/db", "read")
    >>> "pw" in str(err), "running" in str(err)
    (False, True)
    """
    where = redact_url(url)
    detail = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    reason = " ".join(line.strip() for line in detail[:2]) or type(exc).__name__
    password = _password(url)
    if password:
        reason = reason.replace(password, "***")
    if where.startswith("sqlite"):
        hint = (
            "check that the SQLite file's folder exists and is writable, and that no other "
            "program holds a lock on it"
        )
    elif _NO_DATABASE.search(reason):
        hint = "create the database, or fix its name in the URL"
    elif _AUTH.search(reason):
        hint = (
            "check the user name and password in the URL (keep the password out of job "
            "files: read it from an environment variable when you build the URL)"
        )
    elif _DOWN.search(reason):
        hint = (
            "is the database server running and reachable from this machine and from the "
            "workers? Start it or fix host and port, then run the job again (committed "
            "batches are kept)"
        )
    else:
        hint = "fix the cause named above, then run the job again (committed batches are kept)"
    return cls(f"cannot {what} {where}: {reason}; {hint}")


def _password(url: str) -> str | None:
    try:
        return sa.engine.make_url(url).password
    except Exception:  # noqa: BLE001
        return None


#: Prepared upserts by (dialect, table, columns): built once, so that SQLAlchemy's
#: compiled cache serves every batch of a run (10^4 batches, two writes each).
_UPSERTS: dict[tuple[str, str, tuple[str, ...]], Any] = {}


def upsert(con, table: sa.Table, key: dict[str, Any], values: dict[str, Any]) -> None:
    """Update the row of ``table`` with this primary ``key``, or insert it.

    One ``INSERT ... ON CONFLICT DO UPDATE`` on SQLite and PostgreSQL; a select then an
    update or insert elsewhere.
    """
    dialect = con.dialect.name
    if dialect in ("sqlite", "postgresql"):
        ident = (dialect, table.name, tuple(sorted(values)))
        statement = _UPSERTS.get(ident)
        if statement is None:
            module = importlib.import_module(f"sqlalchemy.dialects.{dialect}")
            insert = module.insert(table)
            statement = insert.on_conflict_do_update(
                index_elements=list(key), set_={c: insert.excluded[c] for c in ident[2]}
            )
            _UPSERTS[ident] = statement
        con.execute(statement, {**key, **values})
        return
    where = sa.and_(*(table.c[k] == v for k, v in key.items()))
    if con.execute(sa.select(*(table.c[k] for k in key)).where(where)).first():
        con.execute(sa.update(table).where(where).values(**values))
    else:
        con.execute(sa.insert(table).values(**key, **values))


def add_missing_columns(engine: sa.Engine, added: Iterable[tuple[sa.Table, str]]) -> None:
    """Add the ``(table, column)`` pairs a database made by an earlier dbatch lacks (nullable)."""
    for table, name in added:
        present = {c["name"] for c in sa.inspect(engine).get_columns(table.name)}
        if name in present:
            continue
        column = table.c[name]
        kind = column.type.compile(dialect=engine.dialect)
        with engine.begin() as con:
            con.execute(sa.text(f"ALTER TABLE {table.name} ADD COLUMN {name} {kind}"))
