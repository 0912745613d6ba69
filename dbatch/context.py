"""The per-batch context handed to sources and steps: counters, quarantine, shared objects."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from .arrow import empty_table
from .core import Batch, QuarantinedFile
from .errors import BadInputError
from .redact import any_known, redact, scrub_all

__all__ = ["BatchContext", "QUARANTINE_SCHEMA"]

QUARANTINE_SCHEMA = pa.schema(
    [
        ("source", pa.string()),
        ("line", pa.int64()),
        ("kind", pa.string()),
        ("reason", pa.string()),
        ("raw", pa.string()),
    ]
)


@dataclass
class BatchContext:
    """Collects what happens to one batch's rows while sources and steps run.

    ``mode`` decides what bad input does: ``quarantine`` keeps it with its
    reason, ``drop`` only counts it, ``fail_fast`` raises at the first bad
    file or row. ``sample``: the rows are read only to look at (the
    partial-aggregates estimate), so nobody reads the counts: a source may leave
    bad rows out without finding or counting them.
    """

    batch: Batch
    run_id: str = "preview"
    mode: str = "quarantine"
    sample: bool = False
    shared: Mapping[str, Any] = field(default_factory=dict)
    rows_in: int = 0
    rows_filtered: int = 0
    rows_quarantined: int = 0
    rows_by_kind: dict[str, int] = field(default_factory=dict)
    files: list[QuarantinedFile] = field(default_factory=list)
    _rows: list[pa.Table] = field(default_factory=list)

    def read_rows(self, n: int) -> None:
        """Count rows that entered the batch (good and bad)."""
        self.rows_in += int(n)

    def filtered(self, n: int) -> None:
        self.rows_filtered += int(n)

    def drop_rows(self, n: int) -> None:
        """Count bad rows a source found without reading them (``drop`` mode only)."""
        if self.mode != "drop":
            raise RuntimeError("drop_rows is for bad_input='drop'; use quarantine_rows")
        self.rows_quarantined += int(n)
        self.rows_by_kind["dropped"] = self.rows_by_kind.get("dropped", 0) + int(n)

    def quarantine_file(self, key: str, kind: str, message: str) -> None:
        """Set a whole unit aside. Its rows were never counted as read."""
        key, message = redact(key), redact(message)
        if self.mode == "fail_fast":
            raise BadInputError(message, kind=kind, where=key)
        self.files.append(QuarantinedFile(key=key, kind=kind, message=message))

    def quarantine_rows(
        self,
        source: str,
        kind: str,
        reasons: Sequence[str] | str,
        raw: Sequence[str | None],
        lines: Sequence[int | None] | None = None,
    ) -> None:
        """Set bad rows aside with their location, kind, reason and raw text."""
        source = redact(source)
        n = len(raw)
        if n == 0:
            return
        if isinstance(reasons, str):
            reasons = [reasons] * n
        if any_known():  # a server may echo a request's credentials into a body kept here
            reasons, raw = scrub_all(list(reasons)), scrub_all(list(raw))
        if self.mode == "fail_fast":
            where = f"{source}, line {lines[0]}" if lines and lines[0] is not None else source
            raise BadInputError(reasons[0], kind=kind, where=where)
        self.rows_quarantined += n
        self.rows_by_kind[kind] = self.rows_by_kind.get(kind, 0) + n
        if self.mode == "drop":
            return
        self._rows.append(
            pa.table(
                {
                    "source": pa.array([source] * n, pa.string()),
                    "line": pa.array(lines if lines is not None else [None] * n, pa.int64()),
                    "kind": pa.array([kind] * n, pa.string()),
                    "reason": pa.array(reasons, pa.string()),
                    "raw": pa.array(raw, pa.string()),
                },
                schema=QUARANTINE_SCHEMA,
            )
        )

    def quarantined_rows(self) -> pa.Table:
        if not self._rows:
            return empty_table(QUARANTINE_SCHEMA)
        return pa.concat_tables(self._rows)
