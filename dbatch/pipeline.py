"""Pipeline: source + batcher + steps + sink (+ aggregate), and what one does with it.

A pipeline is a frozen definition. ``plan`` lists its batches, ``explain``
shows the physical plan every batch follows, ``preview`` runs one batch in this
process, and ``run`` runs the plan minus what the ledger says is done.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import config
from .batching import Batcher, BySize, make_batches
from .compile import PhysicalPlan, optimize
from .context import BatchContext
from .core import BadInputMode, Batch, Plan, digest
from .errors import JobSpecError, SourceError
from .protocols import Described, Incremental, Positioned, Sink, Source, Step
from .steps.aggregate import Aggregate

if TYPE_CHECKING:
    from .executors.base import Executor
    from .listeners import Listener
    from .monitor.debug import DebugResult
    from .monitor.result import RunResult
    from .retry import RetryPolicy

__all__ = ["Pipeline", "BAD_INPUT_MODES"]

#: What bad files and rows do: kept aside with their reason, only counted, or stop the run.
#: What a job's name may hold (it names folders of the work area and rows of the ledger).
NAME_PATTERN = r"[A-Za-z0-9_.-]{1,200}"
BAD_INPUT_MODES = tuple(m.value for m in BadInputMode)


@dataclass(frozen=True)
class Pipeline:
    """An immutable batch job: where data comes from, what happens to it, where it lands.

    Parameters
    ----------
    source
        Lists units on the client and loads a batch on a worker (``Files``, ``SqlSource``...).
    sink
        Stages a batch's output and publishes it (``ParquetSink``, ``CsvSink``...).
    steps
        Applied in order to each batch (``Filter``, ``Derive``, ``Enrich``, ``Map``...).
    batching
        How units form batches (``BySize``, ``ByCount``, ``ByWindow``, ``ByThreshold``).
    aggregate
        An optional ``Aggregate`` across all batches, applied after the steps.
    name
        The job's name in the ledger.
    bad_input
        ``quarantine`` (default), ``drop`` or ``fail_fast``.
    max_bad_fraction
        A batch with a larger share of bad rows fails before anything is committed.
    workdir, ledger
        Where staging and committed batches live, and the ledger's SQLAlchemy URL
        (defaults: ``dbatch.workdir`` and a SQLite file in it).

    Examples
    --------
    >>> from dbatch import Pipeline, Files, ParquetSink, Filter
    >>> p = Pipeline(Files("landing/*.csv"), ParquetSink("out/clean"), steps=[Filter("amount > 0")])
    """

    source: Source
    sink: Sink
    steps: Sequence[Step] = ()
    batching: Batcher = field(default_factory=lambda: BySize(config.get("batching.target-bytes")))
    aggregate: Aggregate | None = None
    name: str = "job"
    bad_input: BadInputMode = field(default_factory=lambda: config.get("bad-input.mode"))
    max_bad_fraction: float = field(
        default_factory=lambda: float(config.get("bad-input.max-bad-fraction"))
    )
    workdir: str | None = None
    ledger: str | None = field(default=None, repr=False)  # a URL may hold a password

    def __post_init__(self) -> None:
        object.__setattr__(self, "steps", tuple(self.steps))
        if self.bad_input not in BAD_INPUT_MODES:
            raise JobSpecError(f"bad_input must be one of {BAD_INPUT_MODES}", key="bad_input")
        object.__setattr__(self, "bad_input", BadInputMode(self.bad_input))
        if not 0 <= float(self.max_bad_fraction) <= 1:
            raise JobSpecError("max_bad_fraction must be between 0 and 1", key="max_bad_fraction")
        for s in self.steps:
            if isinstance(s, Aggregate):
                raise JobSpecError("pass Aggregate as aggregate=..., not as a step", key="steps")
            if not isinstance(s, Step):
                raise JobSpecError(f"{s!r} is not a step (it has no apply method)", key="steps")
        if not _safe_name(self.name):
            raise JobSpecError(
                f"job name {self.name!r} may hold letters, digits, '-', '_' and '.' only",
                key="name",
            )

    # -- derived ------------------------------------------------------------------

    def replace(self, **changes: Any) -> Pipeline:
        return dataclasses.replace(self, **changes)

    @property
    def definition_token(self) -> str:
        """Changes when anything that shapes a batch's output changes."""
        return digest(
            _token(self.source),
            [_token(s) for s in self.steps],
            _token(self.aggregate) if self.aggregate else None,
            _token(self.sink),
            str(self.bad_input),
        )

    def work_area(self) -> Path:
        return self._workdir() / self.name

    def _workdir(self) -> Path:
        return Path(self.workdir).expanduser() if self.workdir else config.workdir()

    def ledger_url(self) -> str:
        if self.ledger:
            return self.ledger
        url = config.get("ledger.url")
        if url:
            return str(url)
        return f"sqlite:///{(self._workdir() / 'ledger.sqlite').resolve()}"

    # -- what it consists of -----------------------------------------------------------

    def plan(self) -> Plan:
        """The batches this pipeline consists of (no cluster needed).

        An empty input is an error, except for an incremental source with nothing
        new since the last committed watermark: that plan is empty and its run
        does nothing.
        """
        if isinstance(self.source, Positioned):
            return self._positioned_plan()
        units = self.source.list_units()
        if not units and not (isinstance(self.source, Incremental) and self.source.incremental):
            raise SourceError(f"{self.source.describe()}: no input; nothing to plan")
        batching = self.batching
        if isinstance(batching, BySize) and batching.auto:
            from .sizing import auto_target

            batching = BySize(auto_target(self.work_area(), self.ledger_url(), self.name))
        batches = make_batches(units, batching, salt=self.definition_token)
        return Plan(
            job=self.name,
            batches=tuple(batches),
            source=self.source.describe(),
            sink=self.sink.describe(),
        )

    def _positioned_plan(self) -> Plan:
        """The batches the ledger holds for this job, as they were cut, then what follows."""
        from .ledger import Ledger

        assert isinstance(self.source, Positioned)
        ledger = Ledger(self.ledger_url())
        try:
            recorded = ledger.cut(self.name)
        finally:
            ledger.close()
        salt = self.definition_token
        old = [Batch.from_units(units, index=i, salt=salt) for i, units in enumerate(recorded)]
        new = make_batches(
            self.source.units_after([u for b in old for u in b.units]), self.batching, salt=salt
        )
        batches = old + [dataclasses.replace(b, index=len(old) + i) for i, b in enumerate(new)]
        return Plan(
            job=self.name,
            batches=tuple(batches),
            source=self.source.describe(),
            sink=self.sink.describe(),
        )

    def physical(self, *, aggregate: bool = True, plan: Plan | None = None) -> PhysicalPlan:
        """What every batch does: the optimizer's physical plan (see ``explain``).

        ``aggregate=False``: the plan up to the steps' output, as ``preview`` shows it.
        ``plan``: the batches; with an aggregate, the steps run over the first unit
        of the first batch here, to decide whether batches write partial aggregates.
        """
        sample = plan.batches[0] if plan is not None and plan.batches else None
        return optimize(
            job=self.name,
            source=self.source,
            steps=self.steps,
            sink=self.sink,
            aggregate=self.aggregate if aggregate else None,
            mode=self.bad_input,
            max_bad_fraction=float(self.max_bad_fraction),
            sample=sample if aggregate else None,
        )

    def explain(self) -> str:
        """The physical plan as text: read path, fused SQL stages, handoff, reduce, sink.

        Examples
        --------
        >>> print(pipeline.explain())  # doctest: +SKIP
        physical plan of 'nightly'  (bad_input: quarantine)
          read     files 'landing/*.parquet'  [scan: read by the first query; ...]
          stage 1  SQL  Filter -> Derive -> Enrich -> Derive
          ...
        """
        plan: Plan | None = None
        if self.aggregate is not None:
            try:
                plan = self.plan()  # the partial-aggregates estimate samples its first batch
            except SourceError:
                plan = None
        return self.physical(plan=plan).explain()

    def check(self, plan: Plan | None = None) -> list[str]:
        """Compile every SQL step over the batches' columns, before any batch runs.

        The columns are the source's declared schema, or those of the plan's first
        unit (a Parquet footer, the first block of a text file). A step DuckDB cannot
        compile raises ``JobSpecError`` naming the step (``steps[i]``) and DuckDB's
        message. Returns notes on what could not be checked.

        Examples
        --------
        >>> Pipeline(Files("in/*.csv", schema={"status": "string"}), ParquetSink("o"),
        ...          steps=[Filter("stat = 'settled'")]).check()  # doctest: +SKIP
        Traceback (most recent call last):
        JobSpecError: key 'steps[0]': Filter(where="stat = 'settled'") cannot run on ...
        """
        from .compile.check import check_batch

        if plan is None and isinstance(self.source, Described):
            plan = self.plan()
        first = plan.batches[0] if plan is not None and plan.batches else None
        return check_batch(self.physical(), first)

    # -- running it --------------------------------------------------------------------

    def preview(self, batch: int = 0, rows: int | None = 1000) -> Any:
        """Run one batch in this process and return its data after the steps.

        Bad rows are quarantined as in a run; they are on ``result.attrs['quarantine']``.
        Nothing is written. For an xarray source the Dataset is returned.
        """
        plan = self.plan()
        if not 0 <= batch < len(plan):
            raise IndexError(f"the plan has {len(plan)} batches; batch={batch} is out of range")
        ctx = BatchContext(batch=plan[batch], run_id="preview", mode=self.bad_input)
        data = self.physical(aggregate=False).run(plan[batch], ctx)
        if hasattr(data, "to_pandas") and hasattr(data, "num_rows"):
            frame = (data.slice(0, rows) if rows else data).to_pandas()
            frame.attrs["quarantine"] = ctx.quarantined_rows().to_pandas()
            frame.attrs["counts"] = {
                "rows_in": ctx.rows_in,
                "rows_out": data.num_rows,
                "rows_filtered": ctx.rows_filtered,
                "rows_quarantined": ctx.rows_quarantined,
                "files_quarantined": [f.__dict__ for f in ctx.files],
            }
            return frame
        return data

    def debug(self, batch: str | int = 0) -> DebugResult:
        """Re-run one batch in this process, step by step, and return what each step made.

        ``batch`` is a batch id (as ``dbatch status`` and the run's summary show it)
        or the batch's place in the plan. The steps run one at a time, unfused, on the
        batch's current inputs; nothing is written. A step that raises ends the walk:
        ``result.failed`` names it, with the error and traceback.

        Examples
        --------
        >>> trace = pipeline.debug("b-3f1c2a9e0d11")  # doctest: +SKIP
        >>> trace.failed.name, trace.failed.error  # doctest: +SKIP
        >>> trace.steps[1].head()  # doctest: +SKIP
        """
        from .monitor.debug import debug_batch

        plan = self.plan()
        if isinstance(batch, int):
            if not 0 <= batch < len(plan):
                raise IndexError(f"the plan has {len(plan)} batches; batch={batch} is out of range")
            chosen = plan[batch]
        else:
            found = [b for b in plan if b.id == batch]
            if not found:
                raise KeyError(
                    f"no batch {batch!r} in the plan of {self.name!r} (its inputs may have "
                    "changed); `dbatch plan` lists the batches"
                )
            chosen = found[0]
        return debug_batch(self.source, self.steps, chosen, self.bad_input)

    def run(
        self,
        client: Any = None,
        *,
        progress: bool | str | None = None,
        listeners: Sequence[Listener] = (),
        replay: bool = False,
        run_id: str | None = None,
        params: Mapping[str, Any] | None = None,
        raise_on_failure: bool = False,
        retry: RetryPolicy | None = None,
        select: Callable[[Batch], bool] | None = None,
        force: bool = False,
        fault: Callable[[Batch, int], None] | None = None,
        executor: Executor | None = None,
    ) -> RunResult:
        """Run the plan minus what the ledger says is done.

        Parameters
        ----------
        client
            Anything ``dbatch.connect`` accepts; default: the active client or a new
            LocalCluster (closed again at the end), made only when there is work.
        progress
            ``True``/``"auto"`` for a widget in Jupyter or a bar in a terminal, ``False`` for none.
        listeners
            ``RunListener`` objects or callables that receive every run ``Event``.
        replay
            Also re-run committed batches that have quarantined rows or files, after a fix.
        run_id
            Reuse an unfinished run's id (``dbatch resume`` does this).
        params
            Recorded with the run in the ledger (a job file's path, a backfill's range).
        raise_on_failure
            Raise ``RunFailedError`` instead of returning a failed result.
        retry
            The retry policy for transient failures (default: the ``dbatch.retry`` config).
        select
            Run only the batches it returns True for (a backfill's range); batches
            already committed stay in the published output, the others wait.
        force
            Re-run the selected batches (all without ``select``) even when committed.
        fault
            A callable ``(batch, attempt)`` run before each batch on the worker; for fault tests.
        executor
            Where tasks run (``dbatch.executors.LocalExecutor()`` runs them in this process).

        Returns
        -------
        RunResult
            Counts per batch and for the run, the output location and the status.
        """
        from .runner import RunOptions, run

        options = RunOptions(
            run_id=run_id,
            replay=replay,
            select=select,
            force=force,
            retry=retry,
            fault=fault,
            params=dict(params or {}),
            progress=progress,
            listeners=tuple(listeners),
            raise_on_failure=raise_on_failure,
        )
        return run(self, client, executor=executor, options=options)


def _token(obj: Any) -> Any:
    return obj.token()


def _safe_name(name: str) -> bool:
    return bool(re.fullmatch(NAME_PATTERN, name)) and name not in (".", "..")
