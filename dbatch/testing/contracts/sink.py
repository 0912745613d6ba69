"""The sink contract: idempotent re-runs and re-commits, and crash safety around the promote."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ...core import Batch, Part
from ...protocols import CommitsBatches
from ..faults import FlakySink, RaiseOn, SeededFaults
from ..observe import EventLog
from .inputs import ContractInput, TableInput

__all__ = ["SinkContract", "SinkCase"]


@dataclass(frozen=True)
class SinkCase:
    """One test's sink, input and cluster, and the moves the sink contract makes with them."""

    root: Path
    client: Any
    make_sink: Callable[[Path], Any]
    read_output: Callable[[Any], Any]
    assert_same: Callable[[Any, Any], None]
    input: ContractInput
    n: int

    @property
    def folder(self) -> Path:
        return self.root / "input"

    def write_inputs(self, n: int | None = None) -> None:
        for i in range(self.n if n is None else n):
            self.input.write(self.folder, i)

    def pipeline(self, sink: Any, name: str = "contract") -> Any:
        """One batch per input, in a work area of its own."""
        from ... import ByCount, Pipeline

        return Pipeline(
            self.input.source(self.folder),
            sink,
            batching=ByCount(1),
            name=name,
            workdir=str(self.root / f"work-{name}"),
        )

    def subject(self) -> tuple[Any, Any]:
        """The sink under test and a pipeline over the current input into it."""
        sink = self.make_sink(self.root / "subject")
        return sink, self.pipeline(sink)

    def assert_output(self, sink: Any, want: Any) -> None:
        self.assert_same(self.read_output(sink), want)

    def reference(self) -> Any:
        """The output of a fault-free run over the current input, into a sink of its own."""
        root = self.root / f"reference-{len(list(self.root.glob('reference-*')))}"
        root.mkdir()
        sink = self.make_sink(root)
        pipeline = self.pipeline(sink, name="reference").replace(workdir=str(root / "work"))
        result = pipeline.run(client=self.client)
        assert result.status == "succeeded", result
        return self.read_output(sink)

    def batch_of(self, plan: Any, index: int) -> Batch:
        """The batch that holds input number ``index``."""
        found = [b for b in plan if any(self.input.is_unit(u.key, index) for u in b.units)]
        assert len(found) == 1, f"input {index} is in {len(found)} batches of {plan}"
        return found[0]

    def one_more_input(self) -> tuple[Any, Any, Any, Batch]:
        """Run over all inputs but the last, then add it.

        Returns the sink, a fresh pipeline over every input, the output before the
        new input, and the batch the new input makes.
        """
        self.write_inputs(self.n - 1)
        sink, first = self.subject()
        result = first.run(client=self.client)
        assert result.status == "succeeded", result
        before = self.read_output(sink)
        self.input.write(self.folder, self.n - 1)
        pipeline = self.pipeline(sink)
        return sink, pipeline, before, self.batch_of(pipeline.plan(), self.n - 1)

    def stage_as_dead_driver(self, pipeline: Any, batch: Batch, run_id: str) -> tuple[Any, Any]:
        """Do what a run does for ``batch`` up to the promote, in this process."""
        from ...tasks import BatchTask, process_batch
        from ...workarea import WorkArea

        work = WorkArea(pipeline.work_area())
        work.staging(run_id).mkdir(parents=True, exist_ok=True)  # as the run makes it
        task = BatchTask(batch, run_id, str(work.staging(run_id)))
        return work, process_batch(pipeline.physical(), task)

    def promote_as_dead_driver(self, pipeline: Any, batch: Batch, commit: bool) -> None:
        """Stage ``batch`` and rename it into place (and commit it to the sink, if asked),
        then stop, as a driver that died before recording it would."""
        work, staged = self.stage_as_dead_driver(pipeline, batch, "dead-run")
        target = work.batch_dir(batch)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.rename(staged.staging, target)
        sink = pipeline.sink
        if commit and isinstance(sink, CommitsBatches):
            sink.commit_batch(batch.id, batch.fingerprint, Part(batch.id, target, staged.rows_out))

    @staticmethod
    def staging_runs(pipeline: Any) -> list[str]:
        staging = pipeline.work_area() / "staging"
        return sorted(p.name for p in staging.iterdir()) if staging.exists() else []

    def forget_batch_records(self, pipeline: Any) -> None:
        """Delete the ledger's batch records of the pipeline's job, as if they were lost."""
        from ...ledger import Ledger, batches

        ledger = Ledger(pipeline.ledger_url())
        try:
            with ledger.engine.begin() as con:
                con.execute(batches.delete().where(batches.c.job == pipeline.name))
        finally:
            ledger.close()


class SinkContract:
    """The tests every sink passes. Subclass it in a test module and override a few fixtures.

    Fixtures to override:

    ``make_sink``
        A function ``root -> sink``: a new sink writing below (or named after) the
        folder ``root``. Required.
    ``read_output``
        A function ``sink -> data``: what a reader of the sink's output sees now.
        Required.
    ``sink_input``
        The input (a ``ContractInput``): how each input is written, which unit is
        input number ``i``, the source that reads them, how outputs compare.
        Default: ``TableInput()``, small CSV tables read by ``Files``.
    ``assert_same_output``
        ``(got, want) -> None``, raising when two outputs differ. Default: the
        input's ``assert_same``.

    The tests also take pytest's ``tmp_path`` and a ``client`` fixture (a
    ``distributed.Client``), which the test suite provides.

    What is checked: a re-run and a re-commit are idempotent; a driver that died
    before the promote leaves nothing visible and its staging is cleaned; one
    that died after the promote (before or after ``commit_batch``) is adopted,
    not redone, and never duplicated; a failed run leaves the previous output
    as it was; failed attempts leave no staging behind.

    Examples
    --------
    >>> class TestParquetSink(SinkContract):  # doctest: +SKIP
    ...     @pytest.fixture
    ...     def make_sink(self):
    ...         return lambda root: ParquetSink(str(root / "out"))
    ...     @pytest.fixture
    ...     def read_output(self):
    ...         return lambda sink: pd.read_parquet(sink.path)
    """

    #: How many inputs (one batch each) the tests write.
    n_inputs = 4

    # -- fixtures an implementation overrides -------------------------------------------

    @pytest.fixture
    def make_sink(self) -> Callable[[Path], Any]:
        raise NotImplementedError("return a function root -> a new sink writing below root")

    @pytest.fixture
    def read_output(self) -> Callable[[Any], Any]:
        raise NotImplementedError("return a function sink -> what a reader of its output sees")

    @pytest.fixture
    def sink_input(self) -> ContractInput:
        return TableInput()

    @pytest.fixture
    def assert_same_output(self, sink_input: ContractInput) -> Callable[[Any, Any], None]:
        return sink_input.assert_same

    # -- what the tests use ---------------------------------------------------------------

    @pytest.fixture
    def sink_case(
        self, tmp_path, client, make_sink, read_output, assert_same_output, sink_input
    ) -> SinkCase:
        return SinkCase(
            tmp_path, client, make_sink, read_output, assert_same_output, sink_input, self.n_inputs
        )

    # -- the contract ------------------------------------------------------------------

    def test_rerun_and_recommit_are_idempotent(self, sink_case: SinkCase):
        case = sink_case
        case.write_inputs()
        want = case.reference()
        sink, pipeline = case.subject()
        first = pipeline.run(client=case.client)
        assert first.status == "succeeded", first
        case.assert_output(sink, want)

        again = pipeline.run(client=case.client)
        assert again.status == "nothing_to_do" and again.committed == 0, again
        case.assert_output(sink, want)

        # The ledger lost every batch record: each committed batch is found and adopted,
        # committed to the sink again (idempotently), and nothing is recomputed.
        case.forget_batch_records(pipeline)
        log = EventLog()
        third = pipeline.run(client=case.client, listeners=[log])
        assert third.ok and third.recovered == case.n, third
        assert log.started() == Counter(), "a committed batch was recomputed"
        case.assert_output(sink, want)

    def test_driver_died_before_promote(self, sink_case: SinkCase):
        case = sink_case
        sink, pipeline, before, new = case.one_more_input()
        case.stage_as_dead_driver(pipeline, new, "dead-run")
        assert case.staging_runs(pipeline) == ["dead-run"]
        case.assert_output(sink, before)  # what was staged is not visible

        log = EventLog()
        result = pipeline.run(client=case.client, listeners=[log])
        assert result.status == "succeeded", result
        assert case.staging_runs(pipeline) == []
        assert log.started() == Counter({new.id: 1})
        case.assert_output(sink, case.reference())

    def test_driver_died_after_promote(self, sink_case: SinkCase):
        case = sink_case
        case.write_inputs()
        want = case.reference()
        sink, pipeline = case.subject()
        plan = pipeline.plan()
        # Batch 0: renamed into place, then the driver died. Batch 1: also committed to
        # the sink (a sink that publishes per batch), then the driver died before recording.
        case.promote_as_dead_driver(pipeline, plan[0], commit=False)
        case.promote_as_dead_driver(pipeline, plan[1], commit=True)

        log = EventLog()
        result = pipeline.run(client=case.client, listeners=[log])
        assert result.status == "succeeded", result
        assert result.recovered == 2, result
        assert plan[0].id not in log.started() and plan[1].id not in log.started()
        assert sum(log.started().values()) == len(plan) - 2
        case.assert_output(sink, want)

    def test_failed_run_keeps_previous_output(self, sink_case: SinkCase):
        case = sink_case
        sink, pipeline, before, new = case.one_more_input()
        failed = pipeline.run(client=case.client, fault=RaiseOn((new.id,)))
        assert failed.status == "failed" and failed.failed == 1, failed
        case.assert_output(sink, before)
        assert case.staging_runs(pipeline) == []

        fixed = pipeline.run(client=case.client)
        assert fixed.status == "succeeded" and fixed.committed == 1, fixed
        case.assert_output(sink, case.reference())

    def test_failed_attempts_leave_no_staging(self, sink_case: SinkCase):
        case = sink_case
        case.write_inputs()
        want = case.reference()
        sink, _ = case.subject()
        pipeline = case.pipeline(FlakySink(sink))
        # Every batch's first write fails after its files reached the staging folder.
        faults = SeededFaults(seed=0, rate=1.0, max_failures=1, where=("write",))
        log = EventLog()
        result = pipeline.run(client=case.client, fault=faults, listeners=[log])
        assert result.status == "succeeded", result
        assert len(log.of("batch_retry")) == case.n
        assert case.staging_runs(pipeline) == []
        case.assert_output(sink, want)
