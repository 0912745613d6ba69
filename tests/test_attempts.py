"""What becomes of failed attempts, and the runner over each executor (in-process and Dask)."""

from __future__ import annotations

from concurrent.futures import CancelledError
from pathlib import Path

import pandas as pd
import pytest

from dbatch import ByCount, Files, ParquetSink, Pipeline
from dbatch.errors import BadInputError, TransientError
from dbatch.executors import LocalExecutor
from dbatch.retry import KILLED_WORKER, Failure, Next, RetryPolicy, after_failure
from dbatch.testing import EventLog, RaiseOn, SeededFaults

POLICY = RetryPolicy(attempts=3, base=0.0, cap=0.0)


@pytest.mark.parametrize(
    "failure,attempt,stopping,expected",
    [
        (Failure(TimeoutError("slow")), 1, False, (Next.RETRY, "transient error")),
        (Failure(TimeoutError("slow")), 3, False, (Next.FAIL, "persisted after 3 attempts")),
        (Failure(TransientError("503")), 2, False, (Next.RETRY, "transient error")),
        (Failure(ValueError("bug")), 1, False, (Next.FAIL, "deterministic")),
        (Failure(BadInputError("bad")), 1, False, (Next.FAIL, "deterministic")),
        (Failure(CancelledError(), cancelled=True), 1, False, (Next.RETRY, "lost with a worker")),
        (Failure(CancelledError(), cancelled=True), 1, True, (Next.FAIL, "cancelled: fail_fast")),
        (Failure(TimeoutError("slow")), 1, True, (Next.FAIL, "persisted")),
        (Failure(RuntimeError("died"), killed=True), 1, False, (Next.QUARANTINE, KILLED_WORKER)),
    ],
)
def test_the_verdict_on_a_failed_attempt(failure, attempt, stopping, expected):
    verdict = after_failure(failure, attempt, POLICY, stopping=stopping)
    assert verdict.next is expected[0]
    assert expected[1] in verdict.reason


def test_a_server_retry_after_is_honoured_up_to_the_cap():
    policy = RetryPolicy(attempts=3, base=0.1, cap=5.0)
    assert after_failure(Failure(TransientError("429", retry_after=2.0)), 1, policy).delay == 2.0
    assert after_failure(Failure(TransientError("429", retry_after=60)), 1, policy).delay == 5.0


def write_inputs(folder: Path, n: int = 4) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        rows = "\n".join(f"{i}-{k},{k % 3},{k * 1.5}" for k in range(20))
        (folder / f"in-{i}.csv").write_text("id,g,x\n" + rows + "\n")


def pipeline(tmp_path: Path) -> Pipeline:
    return Pipeline(
        Files(
            str(tmp_path / "in" / "*.csv"), schema={"id": "string", "g": "int64", "x": "float64"}
        ),
        ParquetSink(str(tmp_path / "out")),
        batching=ByCount(1),
        name="attempts",
        workdir=str(tmp_path / "work"),
    )


@pytest.fixture(params=["local", "dask"])
def run_kwargs(request):
    """The same runs through the in-process executor and through a Dask cluster."""
    if request.param == "local":
        return {"executor": LocalExecutor()}
    return {"client": request.getfixturevalue("client")}


def test_a_run_a_rerun_and_a_resume_after_a_failure_on_each_executor(tmp_path, run_kwargs):
    write_inputs(tmp_path / "in")
    p = pipeline(tmp_path)
    bad = p.plan()[2].id
    failed = p.run(fault=RaiseOn((bad,)), **run_kwargs)
    assert failed.status == "failed" and failed.committed == 3 and failed.failed == 1
    assert not (tmp_path / "out").exists()  # a failed run publishes nothing
    log = EventLog()
    fixed = p.run(listeners=[log], **run_kwargs)
    assert fixed.status == "succeeded" and fixed.committed == 1 and fixed.skipped == 3
    assert set(log.started()) == {bad}
    assert len(pd.read_parquet(tmp_path / "out")) == 80
    again = p.run(**run_kwargs)
    assert again.status == "nothing_to_do"


def test_transient_faults_are_retried_in_process_too(tmp_path):
    write_inputs(tmp_path / "in")
    log = EventLog()
    faults = SeededFaults(seed=1, rate=1.0, max_failures=2, where=("before",))
    result = pipeline(tmp_path).run(
        executor=LocalExecutor(),
        fault=faults,
        listeners=[log],
        retry=RetryPolicy(attempts=3, base=0.0, cap=0.0),
    )
    assert result.status == "succeeded"
    assert len(log.of("batch_retry")) == sum(faults.failures(i) for i in range(4)) > 0


def test_fail_fast_gives_up_every_batch_not_yet_done(tmp_path):
    write_inputs(tmp_path / "in", n=6)
    p = pipeline(tmp_path).replace(bad_input="fail_fast")
    first = p.plan()[0].id
    log = EventLog()
    result = p.run(executor=LocalExecutor(), fault=RaiseOn((first,)), listeners=[log])
    assert result.status == "failed" and result.committed == 0
    reasons = [e.data["error_message"] for e in log.of("batch_failed")]
    assert len(reasons) == 6
    assert "deterministic" in reasons[0]
    assert all(r == "cancelled: fail_fast" for r in reasons[1:])
