"""The contracts: Source, Step, Sink and Trigger, and the optional capabilities of each.

Built-in components and user code implement the same small protocols. What a
component may do beyond the contract is a capability protocol of its own
(``Scannable``, ``Incremental``, ``CommitsBatches``...), checked with
``isinstance`` where it is used, never probed with ``getattr``. The contract
test suites in ``dbatch.testing`` check an implementation against them.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from .context import BatchContext
    from .core import BadInputMode, Batch, Part, Unit
    from .engine import Relation

__all__ = [
    "Source",
    "Scannable",
    "Described",
    "Incremental",
    "Dimensioned",
    "Positioned",
    "Step",
    "SqlStep",
    "Prepares",
    "Sink",
    "CommitsBatches",
    "Manifested",
    "StagesQueries",
    "RefusesRows",
    "Trigger",
]


# -- sources -----------------------------------------------------------------------


@runtime_checkable
class Source(Protocol):
    """Lists units cheaply on the client; loads one batch's data on a worker."""

    def describe(self) -> str:
        """One line for plans, logs and the ledger (no credentials)."""
        ...

    def token(self) -> list[Any]:
        """What shapes the data of a batch; part of every batch's fingerprint."""
        ...

    def list_units(self) -> list[Unit]:
        """The units there are now, in a stable order."""
        ...

    def load(self, batch: Batch, ctx: BatchContext) -> Any:
        """The batch's data: a pyarrow Table (or pandas DataFrame) or an xarray Dataset.

        Bad files and rows go to ``ctx`` (``quarantine_file``, ``quarantine_rows``);
        every row read is counted with ``ctx.read_rows``.
        """
        ...


@runtime_checkable
class Scannable(Protocol):
    """A source whose batches a query can read in place (DuckDB over local Parquet files)."""

    def scan_obstacle(self, mode: BadInputMode) -> str | None:
        """None when batches may be scanned in ``mode``; else why not (shown by ``explain``)."""
        ...

    def scan(self, batch: Batch, ctx: BatchContext) -> Relation | None:
        """The batch as a relation whose rows are the good ones, already counted in ``ctx``.

        None when this batch must be loaded instead, decided from what the files say
        of themselves (their footers) before a row is read.
        """
        ...

    def damaged_file(self, batch: Batch, error: BaseException) -> str | None:
        """The unit of ``batch`` that ``error`` (raised while a scan read its rows) names
        as unreadable, so that it alone is quarantined; None if it names none."""
        ...


@runtime_checkable
class Described(Protocol):
    """A source that can tell the columns of its batches before loading one."""

    def batch_schema(self, unit: Unit) -> Any:
        """The batches' pyarrow schema: declared, or read cheaply from ``unit``; or None."""
        ...


@runtime_checkable
class Incremental(Protocol):
    """A source that lists only what is new since its committed watermark.

    An empty listing is then "nothing new", not an error.
    """

    incremental: bool


@runtime_checkable
class Dimensioned(Protocol):
    """A source of xarray Datasets; a batch's rows are its points along ``dim``."""

    dim: str


@runtime_checkable
class Positioned(Protocol):
    """A source read from a position on (a stream): a unit is a range of offsets.

    The ledger keeps each batch's units (its offset ranges) from the moment a
    run plans it; the next plan repeats those batches as they were and asks the
    source only for what follows them. The broker's own position (a consumer
    group, a durable consumer) is moved after a batch commits, never before.
    """

    def units_after(self, planned: Sequence[Unit]) -> list[Unit]:
        """The units that follow ``planned`` (the ranges the ledger holds) up to the end now."""
        ...

    def acknowledge(self, done: Sequence[Unit]) -> None:
        """Tell the broker that ``done`` is consumed: the plan's first units, in order, whose
        batches the ledger holds as committed (or quarantined)."""
        ...


# -- steps -------------------------------------------------------------------------


@runtime_checkable
class Step(Protocol):
    """A function from a batch's data to new data; may set bad rows aside in ``ctx``."""

    def apply(self, data: Any, ctx: BatchContext) -> Any: ...

    def token(self) -> list[Any]:
        """What shapes the step's output; part of every batch's fingerprint."""
        ...

    def shared_objects(self) -> list[Any]:
        """Large objects (``SharedObject``) sent to every worker once, not in each task."""
        ...


@runtime_checkable
class Prepares(Protocol):
    """A step with something slow to set up in each worker process (a model to load).

    ``prepare`` is called once per worker when a run starts, in a background thread,
    so the set-up overlaps the driver's start and the first batch's read; it must be
    safe to call again (the first batch waits for it, or does it itself). Errors are
    the first batch's to report.
    """

    def prepare(self) -> None: ...


@runtime_checkable
class SqlStep(Step, Protocol):
    """A step that is a SQL transformation: it says how it extends a relation.

    ``to_relation`` returns None when the step cannot extend ``relation`` (it
    cannot follow the rows an earlier step set aside, say); the compiler then
    ends that query and starts the next one with this step. Running the step
    alone is compiling a list of one.
    """

    def to_relation(self, relation: Relation, index: int, ctx: BatchContext) -> Relation | None: ...


# -- sinks -------------------------------------------------------------------------


@runtime_checkable
class Sink(Protocol):
    """Writes one batch's output to staging (on a worker); publishes a run (on the driver)."""

    def describe(self) -> str: ...

    def token(self) -> list[Any]: ...

    @property
    def location(self) -> str:
        """Where readers find the output (a path, a table)."""
        ...

    def stage(self, data: Any, directory: Path, name: str) -> dict[str, Any]:
        """Write ``data`` below ``directory`` only; return what was written (files, rows)."""
        ...

    def publish(
        self, run_id: str, parts: Sequence[Part], summary: dict[str, Any]
    ) -> dict[str, Any]:
        """Make the run's committed parts visible at once; return what was published."""
        ...


@runtime_checkable
class CommitsBatches(Protocol):
    """A sink that makes each batch visible as it is committed (in a transaction, say)."""

    def commit_batch(self, batch_id: str, fingerprint: str, part: Part) -> None: ...

    def find_commit(self, batch_id: str, fingerprint: str) -> bool:
        """Whether ``commit_batch`` already happened for this batch and fingerprint."""
        ...


@runtime_checkable
class Manifested(Protocol):
    """A sink whose published output names what it was made from."""

    def current_manifest(self) -> dict[str, Any] | None: ...


@runtime_checkable
class StagesQueries(Protocol):
    """A sink that writes a query's result itself (an aggregate's reduce), without Arrow."""

    def stage_query(
        self, sql: str, tables: dict[str, Any], directory: Path, name: str
    ) -> tuple[dict[str, Any], int]: ...


@runtime_checkable
class RefusesRows(Protocol):
    """A table sink that cannot write some rows (a partition value no folder can be named after).

    The batch quarantines them (kind ``path_escape``, with the reason) and stages the rest.
    """

    def refused_rows(self, data: Any) -> list[tuple[int, str]]:
        """(row index, reason) of each row of ``data`` (what the steps returned) that
        cannot be written; ``[]`` at once when the sink refuses none by design."""
        ...


# -- triggers ----------------------------------------------------------------------


@runtime_checkable
class Trigger(Protocol):
    """What starts a run: when to look next, and whether to run then."""

    def next_fire(self, now: datetime, last: datetime | None = None) -> datetime: ...

    def ready(self, pipeline: Any, ledger: Any) -> bool: ...

    def describe(self) -> str: ...
