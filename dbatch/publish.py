"""Publishing a run: reduce the buckets, gather the quarantine, let the sink switch its output.

The output readers see changes in one step (the sink's ``publish``); the
quarantine file is put in place right after it, so that it always describes
the published output.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .compile.physical import PhysicalPlan
from .core import Batch, Part, Plan
from .errors import OutputInUseError, SinkError
from .executors.base import Executor
from .faults import crash_point
from .monitor.result import RunSummary
from .protocols import Manifested, Sink
from .tasks import gather_quarantine, write_sorted
from .workarea import WorkArea

__all__ = ["Publication", "refuse_foreign_output"]


def refuse_foreign_output(job: str, sink: Sink) -> None:
    """Refuse to run ``job`` when its sink's output was published by another job.

    The published manifest names its job; two jobs publishing one output would
    replace each other's results. A sink that cannot be read now is left to the
    run, which meets the same error where it commits (and is recorded failed).
    """
    if not isinstance(sink, Manifested):
        return
    try:
        manifest = sink.current_manifest()
    except SinkError:
        return
    other = manifest.get("job") if isinstance(manifest, dict) else None
    if other is not None and other != job:
        raise OutputInUseError(
            f"job {job!r} publishes to {sink.location}, which job {other!r} published; two "
            "jobs publishing one output would replace each other's results. Give one of them "
            f"another sink path or table. If {job!r} is {other!r} renamed, delete the old "
            "output first."
        )


@dataclass
class Publication:
    """What a run publishes: its committed batches, through the sink."""

    job: str
    run_id: str
    plan: Plan
    summary: RunSummary
    work: WorkArea
    physical: PhysicalPlan
    executor: Executor | None
    buckets: Callable[[], int]  # asked only when the reduce runs (the cluster is known then)

    @property
    def sink(self) -> Sink:
        return self.physical.sink

    def committed(self) -> list[Batch]:
        return [b for b in self.plan if self.summary.state.get(b.id) == "committed"]

    def inputs(self) -> list[list[str]]:
        return [[b.id, b.fingerprint] for b in self.committed()]

    def manifest(self) -> dict[str, Any] | None:
        return self.sink.current_manifest() if isinstance(self.sink, Manifested) else None

    def up_to_date(self) -> bool:
        """Whether the sink's current output was published from exactly these committed batches."""
        manifest = self.manifest()
        return manifest is not None and manifest.get("inputs") == self.inputs()

    def confirm(self) -> None:
        """Nothing new to publish: take the output rows from the manifest."""
        self.summary.published = True
        manifest = self.manifest()
        self.summary.output_rows = manifest.get("output_rows") if manifest else None
        # The driver may have died between publishing and gathering the quarantine;
        # when it did not, nothing is written at all.
        if not self._quarantine_current():
            self.gather_quarantine()()

    def _stamp(self) -> str:
        """What the quarantine of these committed batches is made from, as one hash."""
        text = json.dumps([str(self.physical.mode), self.inputs()])
        return hashlib.sha256(text.encode()).hexdigest()[:32]

    def _quarantine_current(self) -> bool:
        """Whether ``quarantine.parquet`` is the one these committed batches make (or none)."""
        stamp = self.work.quarantine_stamp()
        if stamp is not None:
            return stamp == self._stamp()
        if self.work.quarantine.exists():
            return False  # written before it was stamped, or damaged: gather it again
        files_count = str(self.physical.mode) != "drop"
        return not any(
            self.work.has_quarantine_file(b)
            or (files_count and self.work.result(b).files_quarantined)
            for b in self.committed()
        )

    def publish(self) -> dict[str, Any]:
        """Publish the committed batches; return what the sink published."""
        committed = self.committed()
        dirs = [self.work.batch_dir(b) for b in committed]
        # Gathered while the reduce tasks run; put in place once the output is published.
        put_quarantine_in_place = self.gather_quarantine()
        if self.physical.aggregate is not None:
            parts = self._reduce(dirs)
        else:
            parts = [
                Part(b.id, d, self.summary.rows_out_of(b.id))
                for b, d in zip(committed, dirs, strict=True)
            ]
        self.summary.output_rows = sum(p.rows for p in parts)
        crash_point("before_publish")
        manifest = {
            **self.summary.manifest_data(),
            "inputs": self.inputs(),
            "output_rows": self.summary.output_rows,
        }
        info = self.sink.publish(self.run_id, parts, manifest)
        put_quarantine_in_place()
        self.work.collect_garbage(self.plan)
        return info

    def _reduce(self, dirs: list[Path]) -> list[Part]:
        """One reduce task per bucket, each staging its part of the output.

        With ``sort`` the buckets' final rows are written by one more task, in key order.
        """
        assert self.executor is not None
        staging = self.work.staging(self.run_id)
        staging.mkdir(parents=True, exist_ok=True)
        buckets = self.buckets()
        args = [(k, [str(d) for d in dirs], str(staging)) for k in range(buckets)]
        keys = [(f"dbatch-{self.job}-reduce", self.run_id, k) for k in range(buckets)]
        outputs = self.executor.reduce(self.physical, args, keys)
        aggregate = self.physical.aggregate
        if aggregate is not None and aggregate.sort:
            reduced = [o["staging"] for o in outputs]
            key = (f"dbatch-{self.job}-sorted", self.run_id)
            outputs = [
                self.executor.call(key, write_sorted, self.physical, reduced, str(staging))()
            ]
            return [Part("reduce-sorted", Path(outputs[0]["staging"]), outputs[0]["rows"])]
        return [Part(f"reduce-{o['bucket']:03d}", Path(o["staging"]), o["rows"]) for o in outputs]

    def gather_quarantine(self) -> Callable[[], None]:
        """Gather every committed batch's quarantined rows and files into the run's staging.

        A task on the cluster when there is one (the driver never reads the rows);
        the function returned renames the file into place, next to the work area.
        """
        staging = self.work.staging(self.run_id)
        staging.mkdir(parents=True, exist_ok=True)
        pending = staging / "quarantine.parquet"
        args = (
            str(self.physical.mode),
            [(b.id, str(self.work.batch_dir(b))) for b in self.committed()],
            str(pending),
            self._stamp(),
        )
        if self.executor is None:
            rows = gather_quarantine(*args)

            def wait() -> Any:
                return rows

        else:
            key = (f"dbatch-{self.job}-quarantine", self.run_id, uuid.uuid4().hex[:8])
            wait = self.executor.call(key, gather_quarantine, *args)

        def put_in_place() -> None:
            if wait():
                pending.replace(self.work.quarantine)
            else:
                self.work.quarantine.unlink(missing_ok=True)

        return put_in_place
