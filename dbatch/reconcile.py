"""Plan minus ledger, as a pure function: what happens to each batch of a run.

``reconcile`` takes the plan, what the ledger says of each batch, and what the
work area holds committed, all plain data, and gives every batch exactly one
``Decision``. The runner carries the decisions out; nothing here touches a file,
a database or a cluster.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass

from .core import Batch, BatchRecord, BatchState, Plan

__all__ = ["Action", "Decision", "reconcile", "select"]

#: (batch id, fingerprint) -> whether that committed batch has quarantined rows or files.
Committed = Mapping[tuple[str, str], bool]


class Action(enum.StrEnum):
    SKIP = "skip"  # committed with this fingerprint and recorded: nothing to do
    ADOPT = "adopt"  # committed by a driver that died before recording it: record it
    KEEP_QUARANTINED = "keep_quarantined"  # an earlier run quarantined it; replay tries again
    RUN = "run"


@dataclass(frozen=True)
class Decision:
    batch: Batch
    action: Action
    attempts: int = 0  # the ledger's attempts of the batch so far (0: none recorded)


def reconcile(
    plan: Plan,
    records: Mapping[str, BatchRecord],
    committed: Committed,
    *,
    replay: bool = False,
    rerun: Collection[str] = frozenset(),
) -> list[Decision]:
    """One decision per batch of ``plan``, in plan order.

    - ``rerun`` (batch ids, a forced backfill): run, whatever is recorded;
    - ``replay``: committed batches with quarantined rows or files run again;
    - committed here and recorded as committed with the same fingerprint: skip;
    - recorded as quarantined with the same fingerprint (not a replay): keep it so;
    - committed here but not recorded (the driver died in between): adopt, not redo;
    - anything else runs.

    Examples
    --------
    >>> from dbatch.core import Batch, Plan
    >>> b = Batch("b-1", (), "f1")
    >>> [d.action for d in reconcile(Plan("job", (b,)), {}, {})]
    [<Action.RUN: 'run'>]
    >>> [d.action for d in reconcile(Plan("job", (b,)), {}, {("b-1", "f1"): False})]
    [<Action.ADOPT: 'adopt'>]
    """
    return [_decide(b, records.get(b.id), committed, replay, rerun) for b in plan]


def _decide(
    batch: Batch,
    record: BatchRecord | None,
    committed: Committed,
    replay: bool,
    rerun: Collection[str],
) -> Decision:
    attempts = record.attempts if record is not None else 0
    here = (batch.id, batch.fingerprint)
    same = record is not None and record.fingerprint == batch.fingerprint
    if batch.id in rerun:
        return Decision(batch, Action.RUN, attempts)
    if replay and committed.get(here):
        return Decision(batch, Action.RUN, attempts)
    if same and record is not None and record.state == BatchState.COMMITTED and here in committed:
        return Decision(batch, Action.SKIP, attempts)
    if same and record is not None and record.state == BatchState.QUARANTINED and not replay:
        return Decision(batch, Action.KEEP_QUARANTINED, attempts)
    if here in committed:
        return Decision(batch, Action.ADOPT, attempts)
    return Decision(batch, Action.RUN, attempts)


def select(
    plan: Plan,
    wanted: Callable[[Batch], bool],
    records: Mapping[str, BatchRecord],
    committed: Committed,
) -> Plan:
    """The batches ``wanted`` picks (a backfill's range) plus those already settled.

    Settled batches (committed here, or quarantined with the same fingerprint) stay
    in the plan so that publishing keeps the rest of the output; the others wait.
    """

    def settled(b: Batch) -> bool:
        rec = records.get(b.id)
        quarantined = (
            rec is not None
            and rec.state == BatchState.QUARANTINED
            and rec.fingerprint == b.fingerprint
        )
        return quarantined or (b.id, b.fingerprint) in committed

    return plan.only(b for b in plan if wanted(b) or settled(b))
