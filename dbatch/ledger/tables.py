"""The ledger's tables, and the engine that holds them (SQLite tuned for several writers)."""

from __future__ import annotations

import os
import threading
import time

import sqlalchemy as sa

from ..database import add_missing_columns, redact_url
from ..errors import LedgerError

__all__ = ["metadata", "runs", "batches", "cuts", "locks", "open_engine", "create_tables"]

metadata = sa.MetaData()

runs = sa.Table(
    "dbatch_runs",
    metadata,
    sa.Column("run_id", sa.String(64), primary_key=True),
    sa.Column("job", sa.String(200), nullable=False, index=True),
    sa.Column("params", sa.Text, nullable=False, default="{}"),
    sa.Column("status", sa.String(32), nullable=False),
    sa.Column("started", sa.Float, nullable=False),
    sa.Column("ended", sa.Float),
    sa.Column("batches_planned", sa.Integer, default=0),
    sa.Column("batches_committed", sa.Integer, default=0),
    sa.Column("batches_skipped", sa.Integer, default=0),
    sa.Column("batches_quarantined", sa.Integer, default=0),
    sa.Column("batches_failed", sa.Integer, default=0),
    sa.Column("rows_in", sa.BigInteger, default=0),
    sa.Column("rows_out", sa.BigInteger, default=0),
    sa.Column("rows_filtered", sa.BigInteger, default=0),
    sa.Column("rows_quarantined", sa.BigInteger, default=0),
    sa.Column("output", sa.Text, default=""),
    sa.Column("message", sa.Text, default=""),
)

batches = sa.Table(
    "dbatch_batches",
    metadata,
    sa.Column("job", sa.String(200), primary_key=True),
    sa.Column("batch_id", sa.String(64), primary_key=True),
    sa.Column("fingerprint", sa.String(64), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("run_id", sa.String(64), nullable=False),
    sa.Column("attempts", sa.Integer, default=0),
    sa.Column("units", sa.Integer, default=0),
    sa.Column("rows_in", sa.BigInteger, default=0),
    sa.Column("rows_out", sa.BigInteger, default=0),
    sa.Column("rows_filtered", sa.BigInteger, default=0),
    sa.Column("rows_quarantined", sa.BigInteger, default=0),
    sa.Column("files_quarantined", sa.Integer, default=0),
    sa.Column("started", sa.Float),
    sa.Column("ended", sa.Float),
    sa.Column("duration", sa.Float),
    sa.Column("error_class", sa.String(200)),
    sa.Column("error_message", sa.Text),
    sa.Column("checksum", sa.String(64)),
    sa.Column("worker", sa.String(200)),
    # Added after the first release: a ledger made before gets them on opening.
    sa.Column("bytes", sa.BigInteger),
    sa.Column("peak_memory", sa.BigInteger),
)

#: The units of each batch a run planned over a positioned source (offset ranges of a
#: stream), written before the batch runs: the next plan repeats them as they were.
cuts = sa.Table(
    "dbatch_cuts",
    metadata,
    sa.Column("job", sa.String(200), primary_key=True),
    sa.Column("batch_id", sa.String(64), primary_key=True),
    sa.Column("seq", sa.Integer, nullable=False),
    sa.Column("units", sa.Text, nullable=False),
    sa.Column("planned", sa.Float, nullable=False),
)

#: Columns added to a table after it first shipped: (table, column).
_ADDED = [(batches, "bytes"), (batches, "peak_memory")]

locks = sa.Table(
    "dbatch_locks",
    metadata,
    sa.Column("job", sa.String(200), primary_key=True),
    sa.Column("run_id", sa.String(64), nullable=False),
    sa.Column("host", sa.String(200), nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("heartbeat", sa.Float, nullable=False),
)


#: One engine per ledger URL in a process: its dialect is set up once and its compiled
#: statements are kept between runs (the SQL of a run's dozen statements costs several
#: milliseconds to compile anew). ``Ledger.close`` closes its connections, not the engine.
_ENGINES: dict[str, sa.Engine] = {}
_ENGINES_LOCK = threading.Lock()


def _forget_engines_in_child() -> None:
    """A forked child opens its own connections and leaves the parent's alone (SQLAlchemy's advice)."""
    for engine in _ENGINES.values():
        engine.dispose(close=False)
    _ENGINES.clear()


os.register_at_fork(after_in_child=_forget_engines_in_child)


def open_engine(url: str) -> sa.Engine:
    """The ledger's engine; a URL SQLAlchemy cannot use is a ``LedgerError`` naming it.

    The same URL gives the same engine; its pool opens connections as needed, so a
    SQLite file deleted and made again between two runs is opened afresh.
    """
    if ":memory:" in url or "mode=memory" in url:
        return _new_engine(url)  # a database of its own each time, as without the cache
    with _ENGINES_LOCK:
        engine = _ENGINES.get(url)
        if engine is None:
            engine = _ENGINES[url] = _new_engine(url)
        return engine


def _new_engine(url: str) -> sa.Engine:
    try:
        engine = sa.create_engine(url, future=True, pool_pre_ping=True)
    except (sa.exc.ArgumentError, ImportError) as e:
        raise LedgerError(
            f"cannot open the ledger {redact_url(url)!r}: {e}; the ledger (the job file's "
            "ledger: key, or dbatch.ledger.url) is a SQLAlchemy URL such as "
            "sqlite:///.dbatch/ledger.sqlite or postgresql+psycopg://user@host:5432/db, "
            "with its driver installed"
        ) from None
    if engine.dialect.name == "sqlite":
        sa.event.listen(engine, "connect", _sqlite_pragmas)
    return engine


_CREATING = threading.Lock()


def create_tables(engine: sa.Engine, attempts: int = 10) -> None:
    """Create the ledger's tables that do not exist yet.

    Another process may be creating them at the same moment (two runs starting
    together on a new ledger); its CREATE TABLE wins and ours fails with "already
    exists". Each attempt gets further, since it skips the tables that exist by then.
    """
    with _CREATING:  # threads of this process, one at a time
        _create_all(engine, attempts)


def _create_all(engine: sa.Engine, attempts: int) -> None:
    for attempt in range(attempts):
        try:
            metadata.create_all(engine)
            add_missing_columns(engine, _ADDED)
            return
        except sa.exc.DatabaseError:
            if attempt == attempts - 1:
                raise
            time.sleep(0.05 * (attempt + 1))


def _sqlite_pragmas(dbapi_con, _record) -> None:
    cur = dbapi_con.cursor()
    cur.execute("PRAGMA busy_timeout=30000")  # first: switching to WAL may wait for a lock
    _switch_to_wal(cur)
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


def _switch_to_wal(cur, seconds: float = 30.0) -> None:
    """``journal_mode=WAL``, waited for: on a new file that others open at the same moment,
    SQLite answers "database is locked" at once rather than through the busy timeout."""
    import sqlite3

    deadline = time.monotonic() + seconds
    pause = 0.005
    while True:
        try:
            cur.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or time.monotonic() > deadline:
                raise
            time.sleep(pause)
            pause = min(pause * 2, 0.1)
