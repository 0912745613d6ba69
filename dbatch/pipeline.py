"""Pipeline: source + batcher + steps + sink (+ aggregate); plan, preview and run."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import config
from .batching import Batcher, BySize, make_batches
from .context import BatchContext
from .core import Plan, digest
from .errors import JobSpecError, SourceError
from .execute import run_steps
from .steps.aggregate import Aggregate
from .steps.base import Step

__all__ = ["Pipeline", "BAD_INPUT_MODES"]

#: What bad files and rows do: kept aside with their reason, only counted, or stop the run.
BAD_INPUT_MODES = ("quarantine", "drop", "fail_fast")


@dataclass(frozen=True)
class Pipeline:
    """An immutable batch job: where data comes from, what happens to it, where it lands.

    Parameters
    ----------
    source
        Lists units on the client and loads a batch on a worker (``Files``, ``SqlTable``...).
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

    source: Any
    sink: Any
    steps: Sequence[Step] = ()
    batching: Batcher = field(default_factory=lambda: BySize(config.get("batching.target-bytes")))
    aggregate: Aggregate | None = None
    name: str = "job"
    bad_input: str = field(default_factory=lambda: config.get("bad-input.mode"))
    max_bad_fraction: float = field(
        default_factory=lambda: float(config.get("bad-input.max-bad-fraction"))
    )
    workdir: str | None = None
    ledger: str | None = field(default=None, repr=False)  # a URL may hold a password
    buckets_for_run: int = 1

    def __post_init__(self):
        object.__setattr__(self, "steps", tuple(self.steps))
        if self.bad_input not in BAD_INPUT_MODES:
            raise JobSpecError(f"bad_input must be one of {BAD_INPUT_MODES}", key="bad_input")
        if not 0 <= float(self.max_bad_fraction) <= 1:
            raise JobSpecError("max_bad_fraction must be between 0 and 1", key="max_bad_fraction")
        for s in self.steps:
            if not hasattr(s, "apply"):
                raise JobSpecError(f"{s!r} is not a step (it has no apply method)", key="steps")
            if isinstance(s, Aggregate):
                raise JobSpecError("pass Aggregate as aggregate=..., not as a step", key="steps")
        if not _safe_name(self.name):
            raise JobSpecError(
                f"job name {self.name!r} may hold letters, digits, '-', '_' and '.' only",
                key="name",
            )

    # -- derived ------------------------------------------------------------------

    def replace(self, **changes) -> Pipeline:
        return dataclasses.replace(self, **changes)

    @property
    def definition_token(self) -> str:
        """Changes when anything that shapes a batch's output changes."""
        return digest(
            _token(self.source),
            [_token(s) for s in self.steps],
            _token(self.aggregate) if self.aggregate else None,
            _token(self.sink),
            self.bad_input,
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
            return url
        return f"sqlite:///{(self._workdir() / 'ledger.sqlite').resolve()}"

    def shared_objects(self):
        return [obj for s in self.steps for obj in s.shared_objects()]

    # -- the three verbs ------------------------------------------------------------

    def plan(self) -> Plan:
        """The batches this pipeline consists of (no cluster needed).

        An empty input is an error, except for an incremental source with nothing
        new since the last committed watermark: that plan is empty and its run
        does nothing.
        """
        units = self.source.list_units()
        if not units and not getattr(self.source, "incremental", False):
            raise SourceError(f"{self.source.describe()}: no input; nothing to plan")
        batches = make_batches(units, self.batching, salt=self.definition_token)
        return Plan(
            job=self.name,
            batches=tuple(batches),
            source=self.source.describe(),
            sink=self.sink.describe(),
        )

    def preview(self, batch: int = 0, rows: int | None = 1000):
        """Run one batch in this process and return its data after the steps.

        Bad rows are quarantined as in a run; they are on ``result.attrs['quarantine']``.
        Nothing is written. For an xarray source the Dataset is returned.
        """
        plan = self.plan()
        if not 0 <= batch < len(plan):
            raise IndexError(f"the plan has {len(plan)} batches; batch={batch} is out of range")
        ctx = BatchContext(batch=plan[batch], run_id="preview", mode=self.bad_input)
        data = run_steps(self, plan[batch], ctx)
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

    def run(self, client=None, **options):
        """Run the plan minus what the ledger says is done; see ``dbatch.runner.run``."""
        from .runner import run

        return run(self, client=client, **options)


def _token(obj: Any) -> Any:
    tok = getattr(obj, "token", None)
    if callable(tok):
        return tok()
    from dask.base import tokenize

    return tokenize(obj)


def _safe_name(name: str) -> bool:
    import re

    return bool(re.fullmatch(r"[A-Za-z0-9_.-]{1,200}", name)) and name not in (".", "..")
