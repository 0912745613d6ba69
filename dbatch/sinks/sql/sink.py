"""SqlSink: one transaction per batch into a database table, re-runnable, with commit markers."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from ...arrow import as_arrow
from ...database import (
    absolute_sqlite,
    check_identifier,
    database_error,
    engine,
    redact_url,
    repr_hiding_passwords,
)
from ...errors import CommitError, JobSpecError
from ...watermark import COMMITS, MARKERS, PUBLISHES
from ..base import Part, Sink, file_checksum
from .target import Target, target_table
from .write import insert_rows

__all__ = ["SqlSink"]

_MODES = ("replace", "upsert")


@dataclass(frozen=True)
class SqlSink(Sink):
    """Land each batch in a database table, in one transaction, safe to re-run.

    ``stage`` (on a worker) writes the batch to Parquet in its staging folder;
    ``commit_batch`` (on the driver) reads it back in chunks and, in one
    transaction, removes what an earlier attempt of the same batch wrote,
    inserts the rows and records the batch in ``dbatch_sink_commits``
    (``table_name, batch_id, fingerprint``), which answers ``find_commit``. A
    reader sees all of a batch or none of it, and a re-run never duplicates.

    Parameters
    ----------
    url
        SQLAlchemy URL of the target database (relative SQLite paths are taken
        from the current folder).
    table
        Target table; created from the data's schema when missing.
    mode
        ``replace`` (default): rows carry the batch id in ``batch_column``; a
        batch's earlier rows are deleted before its rows are inserted.
        ``upsert``: insert or update on ``key`` (``ON CONFLICT``, PostgreSQL and
        SQLite); a table created by dbatch gets ``key`` as its primary key.
    key
        Column(s) identifying a row, for ``upsert``.
    db_schema
        Database schema (namespace) of the table, if not the default one.
    chunk_rows
        Rows read from the staged file at a time (one multi-row ``INSERT`` each;
        ``replace`` on PostgreSQL streams them with ``COPY`` instead).
    batch_column
        Name of the column holding the batch id (``_dbatch_batch``).

    With an aggregate, per-batch commits do nothing and ``publish`` replaces
    the table's content with the reduced result in one transaction.

    Examples
    --------
    >>> SqlSink("sqlite:///warehouse.db", table="orders")  # doctest: +SKIP
    >>> SqlSink("postgresql+psycopg://etl@db/dw", table="fx", mode="upsert",
    ...         key="day")  # doctest: +SKIP
    """

    url: str
    table: str
    mode: str = "replace"
    key: str | Sequence[str] | None = None
    db_schema: str | None = None
    chunk_rows: int = 10_000
    batch_column: str = "_dbatch_batch"

    def __post_init__(self):
        object.__setattr__(self, "url", absolute_sqlite(self.url, key="sink.url"))
        check_identifier(self.table, key="sink.table")
        check_identifier(self.batch_column, key="sink.batch_column")
        if self.db_schema is not None:
            check_identifier(self.db_schema, key="sink.db_schema")
        if self.mode not in _MODES:
            raise JobSpecError(f"mode must be one of {list(_MODES)}", key="sink.mode")
        keys = (self.key,) if isinstance(self.key, str) else tuple(self.key or ())
        for k in keys:
            check_identifier(k, key="sink.key")
        object.__setattr__(self, "key", keys or None)
        if self.mode == "upsert" and not keys:
            raise JobSpecError(
                "mode upsert needs key: the column(s) that identify a row", key="sink.key"
            )
        if not isinstance(self.chunk_rows, int) or self.chunk_rows <= 0:
            raise JobSpecError("must be a positive whole number", key="sink.chunk_rows")

    # -- description ----------------------------------------------------------------

    def __repr__(self) -> str:
        return repr_hiding_passwords(self, ("url",))

    @property
    def qualified(self) -> str:
        return self._where.qualified

    @property
    def location(self) -> str:
        return f"{redact_url(self.url)} table {self.qualified}"

    def describe(self) -> str:
        return f"sql {self.location} ({self.mode})"

    def token(self) -> list[Any]:
        return ["SqlSink", self.mode, list(self.key or ()), self.batch_column]

    @property
    def _where(self) -> Target:
        return Target(
            self.url, self.table, self.db_schema, tuple(self.key or ()), self.batch_column
        )

    # -- worker side ------------------------------------------------------------------

    def stage(self, data: Any, directory: Path, name: str) -> dict[str, Any]:
        import pyarrow.parquet as pq

        table = as_arrow(data)
        if self.batch_column in table.column_names:
            raise JobSpecError(
                f"the output already has a column {self.batch_column!r}, which the sink "
                "fills with the batch id; rename it in a step or set batch_column",
                key="sink.batch_column",
            )
        missing = [k for k in self.key or () if k not in table.column_names]
        if missing:
            raise JobSpecError(
                f"key column(s) {missing} are not in the output; it has {table.column_names}",
                key="sink.key",
            )
        out = directory / f"sql-{name}.parquet"
        pq.write_table(table, out)
        return {
            "files": [{"path": out.name, "rows": table.num_rows, "sha256": file_checksum(out)}],
            "rows": table.num_rows,
        }

    # -- driver side ------------------------------------------------------------------

    def commit_batch(self, batch_id: str, fingerprint: str, part: Part) -> None:
        """Land one committed batch in one transaction (a no-op for aggregate partials)."""
        files = sorted(Path(part.directory).glob("sql-*.parquet"))
        if not files:
            if any(Path(part.directory).glob("bucket-*.arrow")):
                return  # an aggregate's partials: the reduced result lands in publish()
            raise CommitError(
                f"batch {batch_id}: no staged output in {part.directory}; the committed "
                "folder was changed by hand. Delete it and run the job again."
            )
        try:
            with engine(self.url, create=True).begin() as con:
                MARKERS.create_all(con, checkfirst=True)
                target = self._target(con, files, keyed=self.mode == "upsert")
                if self.mode == "replace":
                    con.execute(sa.delete(target).where(target.c[self.batch_column] == batch_id))
                self._insert(con, target, files, batch_id, upsert=self.mode == "upsert")
                mine = (COMMITS.c.table_name == self.qualified, COMMITS.c.batch_id == batch_id)
                con.execute(sa.delete(COMMITS).where(*mine))
                con.execute(
                    sa.insert(COMMITS).values(
                        table_name=self.qualified,
                        batch_id=batch_id,
                        fingerprint=fingerprint,
                        published=False,
                        committed_at=time.time(),
                    )
                )
        except sa.exc.SQLAlchemyError as e:
            raise self._error(e, f"commit batch {batch_id} to table {self.qualified!r} in") from e

    def find_commit(self, batch_id: str, fingerprint: str) -> bool:
        try:
            with engine(self.url).connect() as con:
                if not sa.inspect(con).has_table(COMMITS.name):
                    return False
                row = con.execute(
                    sa.select(COMMITS.c.fingerprint).where(
                        COMMITS.c.table_name == self.qualified, COMMITS.c.batch_id == batch_id
                    )
                ).first()
        except sa.exc.SQLAlchemyError as e:
            raise self._error(e, "look up committed batches in") from e
        return row is not None and row[0] == fingerprint

    def publish(
        self, run_id: str, parts: Sequence[Part], summary: dict[str, Any]
    ) -> dict[str, Any]:
        """Mark per-batch commits published, or replace the table with an aggregate's result."""
        manifest = json.dumps({"run_id": run_id, **summary}, default=str, sort_keys=True)
        try:
            with engine(self.url, create=True).begin() as con:
                MARKERS.create_all(con, checkfirst=True)
                landed = self._landed(con, [p.name for p in parts])
                reduced = [p for p in parts if p.name not in landed]
                files = [f for p in reduced for f in sorted(p.directory.glob("sql-*.parquet"))]
                rows = 0
                if reduced:
                    target = self._target(con, files, keyed=False)
                    con.execute(sa.delete(target))
                    rows = self._insert(con, target, files, f"run:{run_id}", upsert=False)
                self._mark_published(con, sorted(landed))
                con.execute(sa.delete(PUBLISHES).where(PUBLISHES.c.table_name == self.qualified))
                con.execute(
                    sa.insert(PUBLISHES).values(
                        table_name=self.qualified,
                        run_id=run_id,
                        published_at=time.time(),
                        manifest=manifest,
                    )
                )
        except sa.exc.SQLAlchemyError as e:
            raise self._error(e, f"publish table {self.qualified!r} in") from e
        info: dict[str, Any] = {"table": self.qualified, "url": redact_url(self.url)}
        if reduced:
            info["rows"] = rows
        else:
            info["batches"] = len(landed)
        return info

    def current_manifest(self) -> dict[str, Any] | None:
        """What the last publish recorded for this table (None before the first one)."""
        try:
            with engine(self.url).connect() as con:
                if not sa.inspect(con).has_table(PUBLISHES.name):
                    return None
                text = con.execute(
                    sa.select(PUBLISHES.c.manifest).where(PUBLISHES.c.table_name == self.qualified)
                ).scalar()
        except sa.exc.SQLAlchemyError as e:
            raise self._error(e, "read the last publication from") from e
        return json.loads(text) if text else None

    # -- helpers ----------------------------------------------------------------------

    def _target(self, con: sa.Connection, files: list[Path], *, keyed: bool) -> sa.Table:
        return target_table(con, self._where, files, keyed=keyed, replace=self.mode == "replace")

    def _insert(
        self, con: sa.Connection, target: sa.Table, files: list[Path], batch_id: str, upsert: bool
    ) -> int:
        return insert_rows(
            con,
            target,
            files,
            batch_column=self.batch_column,
            batch_id=batch_id,
            upsert_key=self.key if upsert else None,
            chunk_rows=self.chunk_rows,
        )

    def _landed(self, con: sa.Connection, names: list[str]) -> set[str]:
        found: set[str] = set()
        for chunk in _chunks(names, 500):
            found.update(
                con.execute(
                    sa.select(COMMITS.c.batch_id).where(
                        COMMITS.c.table_name == self.qualified, COMMITS.c.batch_id.in_(chunk)
                    )
                ).scalars()
            )
        return found

    def _mark_published(self, con: sa.Connection, names: list[str]) -> None:
        for chunk in _chunks(names, 500):
            con.execute(
                sa.update(COMMITS)
                .where(COMMITS.c.table_name == self.qualified, COMMITS.c.batch_id.in_(chunk))
                .values(published=True)
            )

    def _error(self, exc: BaseException, what: str) -> Exception:
        err = database_error(exc, self.url, what, cls=CommitError)
        text = str(err)
        if "ON CONFLICT" in str(exc):
            err = CommitError(
                f"{text} (mode upsert needs a primary key or unique index on "
                f"{list(self.key or ())} in table {self.qualified!r})"
            )
        return err


def _chunks(items: list[str], n: int) -> Iterator[list[str]]:
    for i in range(0, len(items), n):
        yield items[i : i + n]
