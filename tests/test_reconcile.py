"""Plan minus ledger, without a cluster: every batch gets exactly one decision, and the right one."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from dbatch.core import Batch, BatchRecord, Plan, Unit
from dbatch.reconcile import Action, reconcile, select

STATES = ["running", "committed", "quarantined", "failed"]


def batch(i: int, fingerprint: str) -> Batch:
    return Batch(f"b-{i}", (Unit(f"u{i}"),), fingerprint, index=i)


@st.composite
def situations(draw):
    """A plan, a ledger and a work area in any combination of states."""
    n = draw(st.integers(0, 12))
    batches = [batch(i, draw(st.sampled_from(["f1", "f2"]))) for i in range(n)]
    records, committed = {}, {}
    for b in batches:
        if draw(st.booleans()):
            fingerprint = draw(st.sampled_from(["f1", "f2"]))
            state = draw(st.sampled_from(STATES))
            records[b.id] = BatchRecord(b.id, fingerprint, state, "r0", draw(st.integers(1, 3)))
        if draw(st.booleans()):
            committed[(b.id, b.fingerprint)] = draw(st.booleans())  # has a quarantine
    rerun = {b.id for b in batches if draw(st.booleans()) and draw(st.booleans())}
    return Plan("job", tuple(batches)), records, committed, draw(st.booleans()), rerun


@settings(max_examples=300, deadline=None)
@given(situations())
def test_every_batch_gets_exactly_one_decision_in_plan_order(situation):
    plan, records, committed, replay, rerun = situation
    decisions = reconcile(plan, records, committed, replay=replay, rerun=rerun)
    assert [d.batch for d in decisions] == list(plan)


@settings(max_examples=300, deadline=None)
@given(situations())
def test_nothing_committed_with_the_same_fingerprint_runs_again(situation):
    """Unless asked to: a forced rerun, or a replay of a batch with quarantined rows."""
    plan, records, committed, replay, rerun = situation
    for d in reconcile(plan, records, committed, replay=replay, rerun=rerun):
        here = (d.batch.id, d.batch.fingerprint)
        if here in committed and d.action is Action.RUN:
            assert d.batch.id in rerun or (replay and committed[here])
        if d.action is Action.SKIP:
            assert here in committed and records[d.batch.id].state == "committed"


@settings(max_examples=300, deadline=None)
@given(situations())
def test_a_commit_the_ledger_lost_is_adopted_never_redone(situation):
    plan, records, committed, _, _ = situation
    for d in reconcile(plan, records, committed):
        here = (d.batch.id, d.batch.fingerprint)
        record = records.get(d.batch.id)
        recorded = record is not None and record.fingerprint == d.batch.fingerprint
        if here in committed and not recorded:
            assert d.action is Action.ADOPT
        if d.action is Action.ADOPT:
            assert here in committed


def test_each_rule_in_turn():
    b = batch(0, "f1")
    plan = Plan("job", (b,))
    done = {("b-0", "f1"): False}
    with_bad_rows = {("b-0", "f1"): True}
    committed = {"b-0": BatchRecord("b-0", "f1", "committed", "r0", 1)}
    quarantined = {"b-0": BatchRecord("b-0", "f1", "quarantined", "r0", 2)}
    changed = {"b-0": BatchRecord("b-0", "f0", "committed", "r0", 1)}

    def action(records, here, **kw):
        [d] = reconcile(plan, records, here, **kw)
        return d.action

    assert action({}, {}) is Action.RUN
    assert action(committed, done) is Action.SKIP
    assert action(committed, {}) is Action.RUN  # recorded, but its files are gone
    assert action({}, done) is Action.ADOPT
    assert action(changed, {}) is Action.RUN  # the input changed since
    assert action(quarantined, {}) is Action.KEEP_QUARANTINED
    assert action(quarantined, {}, replay=True) is Action.RUN
    assert action(committed, with_bad_rows, replay=True) is Action.RUN
    assert action(committed, done, replay=True) is Action.SKIP  # nothing to replay
    assert action(committed, done, rerun={"b-0"}) is Action.RUN
    [d] = reconcile(plan, quarantined, {})
    assert d.attempts == 2


def test_a_selection_keeps_what_is_settled_so_publishing_keeps_it():
    batches = tuple(batch(i, "f1") for i in range(4))
    plan = Plan("job", batches)
    records = {"b-1": BatchRecord("b-1", "f1", "quarantined", "r0", 1)}
    committed = {("b-2", "f1"): False}
    chosen = select(plan, lambda b: b.id == "b-0", records, committed)
    assert [b.id for b in chosen] == ["b-0", "b-1", "b-2"]
