"""The ledger: a durable record of runs and batches, through SQLAlchemy (SQLite by default)."""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from ..core import ROW_COUNTS, Batch, BatchRecord, Event, RunStatus, Unit
from ..database import database_error, redact_url, upsert
from ..errors import LedgerError, RunLockedError
from ..listeners import RunListener
from ..redact import remember
from .tables import batches, create_tables, cuts, locks, open_engine, runs

__all__ = ["Ledger", "BatchRecord"]

#: Locks this process holds, as (ledger URL, job) -> run id: a lock row with our own
#: pid is live while it is listed here (another thread's run), stale otherwise.
_HELD: dict[tuple[str, str], str] = {}


class Ledger(RunListener):
    """Runs and batches of every job, in any SQLAlchemy database.

    The runner feeds it events (``record``); notebooks read it back as
    DataFrames (``runs_frame``, ``batches_frame``).

    Examples
    --------
    >>> ledger = Ledger("sqlite:///.dbatch/ledger.sqlite")  # doctest: +SKIP
    >>> ledger.batches_frame("nightly")  # doctest: +SKIP
    """

    stale_after = 600.0

    def __init__(self, url: str):
        if url.startswith("sqlite:///") and not url.startswith("sqlite:///:memory:"):
            folder = Path(url.removeprefix("sqlite:///")).parent
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise LedgerError(
                    f"cannot create the folder {str(folder)!r} of the SQLite ledger: {e}; "
                    "give a writable place (the job file's ledger: or workdir: key)"
                ) from None
        self.url = url
        self.engine = open_engine(url)
        self._open: sa.Connection | None = None  # the transaction of ``handle_all``
        if self.engine.url.password:
            remember(str(self.engine.url.password))  # hidden from what dbatch writes
        try:
            with self.engine.connect():
                pass  # a wrong login or a server that is down: said once, not retried
            create_tables(self.engine)
        except sa.exc.DBAPIError as e:
            self.engine.dispose()
            raise database_error(e, url, "open the ledger", cls=LedgerError) from None
        except BaseException:
            self.engine.dispose()
            raise

    def __repr__(self) -> str:
        return f"Ledger({redact_url(self.url)!r})"

    def close(self) -> None:
        self.engine.dispose()

    # -- locking ----------------------------------------------------------------

    def acquire(self, job: str, run_id: str) -> None:
        """Take the job's lock, or raise ``RunLockedError`` naming the active run."""
        host, pid, now = socket.gethostname(), os.getpid(), time.time()
        with self.engine.begin() as con:
            row = con.execute(sa.select(locks).where(locks.c.job == job)).mappings().first()
            if row is not None:
                if not self._stale(row, now):
                    raise RunLockedError(
                        f"job {job!r} is already running (run {row['run_id']} on {row['host']}, "
                        f"pid {row['pid']}); wait for it to finish. If that process is gone, "
                        f"run `dbatch unlock` for this job."
                    )
                con.execute(sa.delete(locks).where(locks.c.job == job))
            try:
                con.execute(
                    sa.insert(locks).values(
                        job=job, run_id=run_id, host=host, pid=pid, heartbeat=now
                    )
                )
            except sa.exc.IntegrityError:
                raise RunLockedError(
                    f"job {job!r} was started by another process just now"
                ) from None
            _abandon(con, job, run_id)
        _HELD[(self.url, job)] = run_id

    def _stale(self, row, now: float) -> bool:
        if row["host"] == socket.gethostname():
            if row["pid"] == os.getpid():
                return _HELD.get((self.url, row["job"])) != row["run_id"]
            return not _pid_alive(row["pid"])
        return now - row["heartbeat"] > self.stale_after

    def heartbeat(self, job: str, run_id: str) -> None:
        with self.engine.begin() as con:
            con.execute(
                sa.update(locks)
                .where(locks.c.job == job, locks.c.run_id == run_id)
                .values(heartbeat=time.time())
            )

    def release(self, job: str, run_id: str | None = None) -> None:
        with self.engine.begin() as con:
            q = sa.delete(locks).where(locks.c.job == job)
            if run_id is not None:
                q = q.where(locks.c.run_id == run_id)
            con.execute(q)
        if run_id is None or _HELD.get((self.url, job)) == run_id:
            _HELD.pop((self.url, job), None)

    # -- reading ------------------------------------------------------------------

    def batch(self, job: str, batch_id: str) -> BatchRecord | None:
        with self.engine.connect() as con:
            row = (
                con.execute(
                    sa.select(batches).where(batches.c.job == job, batches.c.batch_id == batch_id)
                )
                .mappings()
                .first()
            )
        return None if row is None else _record(row)

    def batch_states(self, job: str) -> dict[str, BatchRecord]:
        with self.engine.connect() as con:
            rows = con.execute(sa.select(batches).where(batches.c.job == job)).mappings().all()
        return {r["batch_id"]: _record(r) for r in rows}

    def cut(self, job: str) -> list[list[Unit]]:
        """The units of every batch planned over the job's positioned source, in plan order."""
        with self.engine.connect() as con:
            rows = con.execute(
                sa.select(cuts.c.units).where(cuts.c.job == job).order_by(cuts.c.seq)
            ).scalars()
            return [[_unit(u) for u in json.loads(text)] for text in rows]

    def record_cut(self, job: str, planned: list[Batch]) -> None:
        """Keep the units of the batches in ``planned`` that are not recorded yet."""
        with self.engine.begin() as con:
            known = set(con.execute(sa.select(cuts.c.batch_id).where(cuts.c.job == job)).scalars())
            seq = con.execute(sa.select(sa.func.count()).where(cuts.c.job == job)).scalar() or 0
            for batch in planned:
                if batch.id in known:
                    continue
                units = [[u.key, u.size, u.time, list(u.identity)] for u in batch.units]
                con.execute(
                    sa.insert(cuts).values(
                        job=job,
                        batch_id=batch.id,
                        seq=seq,
                        units=json.dumps(units),
                        planned=time.time(),
                    )
                )
                seq += 1

    def history(self, job: str, limit: int = 1000) -> list[dict[str, Any]]:
        """The newest committed batches of ``job`` (at most ``limit``): what they cost.

        Each is ``{units, bytes, duration, peak_memory}`` (``bytes`` and
        ``peak_memory`` are None for batches recorded before the ledger kept them).
        """
        c = batches.c
        q = (
            sa.select(c.units, c.bytes, c.duration, c.peak_memory)
            .where(c.job == job, c.state == "committed", c.duration.is_not(None))
            .order_by(c.ended.desc())
            .limit(limit)
        )
        with self.engine.connect() as con:
            return [dict(r) for r in con.execute(q).mappings()]

    def last_run(self, job: str) -> dict[str, Any] | None:
        with self.engine.connect() as con:
            row = (
                con.execute(
                    sa.select(runs)
                    .where(runs.c.job == job)
                    .order_by(runs.c.started.desc())
                    .limit(1)
                )
                .mappings()
                .first()
            )
        return dict(row) if row else None

    def runs_frame(self, job: str | None = None):
        """Every run (of ``job``), oldest first, with ``started``/``ended`` as UTC timestamps."""
        return self._frame(runs, job)

    def batches_frame(self, job: str | None = None):
        """Every batch's last attempt (of ``job``), in the order they started."""
        return self._frame(batches, job)

    def _frame(self, table: sa.Table, job: str | None):
        import pandas as pd

        q = sa.select(table).order_by(table.c.started)
        if job is not None:
            q = q.where(table.c.job == job)
        with self.engine.connect() as con:
            frame = pd.DataFrame(con.execute(q).mappings().all(), columns=[c.name for c in table.c])
        for col in ("started", "ended"):
            frame[col] = pd.to_datetime(frame[col], unit="s", utc=True)
        return frame

    # -- writing: the ledger is one more consumer of run events --------------------

    def record(self, event: Event) -> None:
        """Write what ``event`` changes (the same as calling the ledger with it)."""
        self(event)

    def on_run_started(self, event: Event) -> None:
        self._write(self._run_started, event)

    def on_batch_started(self, event: Event) -> None:
        self._write(self._batch_started, event)

    def on_batch_committed(self, event: Event) -> None:
        self._write(self._finish_batch, event, "committed")

    def on_batch_quarantined(self, event: Event) -> None:
        self._write(self._finish_batch, event, "quarantined")

    def on_batch_failed(self, event: Event) -> None:
        self._write(self._finish_batch, event, "failed")

    def on_finished(self, event: Event) -> None:
        self._write(self._finished, event)

    def handle_all(self, events: Sequence[Event]) -> None:
        """Write what ``events`` change in one transaction (the batches submitted at once)."""
        with self.engine.begin() as con:
            self._open = con
            try:
                for event in events:
                    self(event)
            finally:
                self._open = None

    def _write(self, handler: Callable[..., None], event: Event, *args: Any) -> None:
        if self._open is not None:
            handler(self._open, event, *args)
            return
        with self.engine.begin() as con:
            handler(con, event, *args)

    def _run_started(self, con, e: Event) -> None:
        values = dict(
            job=e.job,
            params=json.dumps(e.data.get("params", {}), sort_keys=True, default=str),
            status="running",
            started=e.time,
            ended=None,
            batches_planned=e.data.get("batches", 0),
        )
        upsert(con, runs, {"run_id": e.run_id}, values)

    def _upsert_batch(self, con, e: Event, **values) -> None:
        upsert(con, batches, {"job": e.job, "batch_id": e.batch_id}, values)

    def _batch_started(self, con, e: Event) -> None:
        self._upsert_batch(
            con,
            e,
            fingerprint=e.data["fingerprint"],
            state="running",
            run_id=e.run_id,
            attempts=e.data.get("attempt", 1),
            units=e.data.get("units", 0),
            bytes=e.data.get("bytes"),
            started=e.time,
            ended=None,
            error_class=None,
            error_message=None,
        )

    def _finish_batch(self, con, e: Event, state: str) -> None:
        d = e.data
        self._upsert_batch(
            con,
            e,
            fingerprint=d["fingerprint"],
            state=state,
            run_id=e.run_id,
            attempts=d.get("attempt", 1),
            **{k: d.get(k, 0) for k in ROW_COUNTS},
            files_quarantined=d.get("files_quarantined", 0),
            ended=e.time,
            duration=d.get("duration"),
            error_class=d.get("error_class"),
            error_message=d.get("error_message"),
            checksum=d.get("checksum"),
            worker=d.get("worker"),
            peak_memory=d.get("peak_memory"),
        )

    def _finished(self, con, e: Event) -> None:
        d = e.data
        con.execute(
            sa.update(runs)
            .where(runs.c.run_id == e.run_id)
            .values(
                status=d["status"],
                ended=e.time,
                batches_committed=d.get("committed", 0),
                batches_skipped=d.get("skipped", 0),
                batches_quarantined=d.get("quarantined", 0),
                batches_failed=d.get("failed", 0),
                **{k: d.get(k, 0) for k in ROW_COUNTS},
                output=d.get("output", ""),
                message=d.get("message", ""),
            )
        )


def _abandon(con, job: str, run_id: str) -> None:
    """Under the job's lock no other run is live: a ``running`` one lost its driver."""
    con.execute(
        sa.update(runs)
        .where(runs.c.job == job, runs.c.status == RunStatus.RUNNING, runs.c.run_id != run_id)
        .values(
            status=RunStatus.ABANDONED,
            message=f"its driver stopped before the run ended; run {run_id} took over the job",
        )
    )


def _record(row: Any) -> BatchRecord:
    return BatchRecord(
        row["batch_id"], row["fingerprint"], row["state"], row["run_id"], row["attempts"] or 0
    )


def _unit(spec: list[Any]) -> Unit:
    key, size, when, identity = spec
    return Unit(key, size, when, tuple((k, v) for k, v in identity))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        import psutil

        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except Exception:  # noqa: BLE001
        return True
