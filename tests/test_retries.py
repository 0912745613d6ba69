"""Transient failures are retried with backoff, a bounded number of times; bugs are not retried."""

from __future__ import annotations

import errno
from collections import Counter
from pathlib import Path

import dask
import pandas as pd
import pytest
import requests
import sqlalchemy as sa

import dbatch
from dbatch import ByCount, Files, ParquetSink, Pipeline
from dbatch.errors import BadInputError, JobSpecError, TransientError, is_transient
from dbatch.runner import RetryPolicy
from dbatch.testing import EventLog, FlakySink, FlakySource, RaiseOn, SeededFaults, data_files

N_FILES = 8


@pytest.fixture
def landing(tmp_path) -> Path:
    root = tmp_path / "in"
    root.mkdir()
    for f in range(N_FILES):
        lines = ["id,amount"] + [f"{f}-{i},{i * f}" for i in range(40)]
        (root / f"{f:02d}.csv").write_text("\n".join(lines) + "\n")
    return root


def make_pipeline(landing: Path, out: Path, flaky: bool = False) -> Pipeline:
    source = Files(str(landing / "*.csv"), schema={"id": "string", "amount": "int64"})
    sink = ParquetSink(str(out / "result"))
    return Pipeline(
        FlakySource(source) if flaky else source,
        FlakySink(sink) if flaky else sink,
        batching=ByCount(1),
        name="retries",
        workdir=str(out / "work"),
    )


def test_random_transient_faults_in_reads_and_writes_are_retried(landing, tmp_path, client):
    reference = make_pipeline(landing, tmp_path / "reference").run(client=client)
    assert reference.status == "succeeded"
    want = data_files(tmp_path / "reference" / "result")

    injected: Counter = Counter()
    for seed in (7, 8, 9):
        faults = SeededFaults(seed=seed, rate=0.5, max_failures=2)
        p = make_pipeline(landing, tmp_path / f"seed-{seed}", flaky=True)
        log = EventLog()
        result = p.run(client=client, fault=faults, listeners=[log])
        assert result.status == "succeeded", result
        assert data_files(tmp_path / f"seed-{seed}" / "result") == want

        ledger = dbatch.Ledger(p.ledger_url())
        attempts = ledger.batches_frame(p.name).set_index("batch_id")["attempts"]
        ledger.close()
        for batch in p.plan():
            planned = faults.failures(batch.index)
            # Each injected failure cost exactly one more attempt, never more than allowed.
            assert attempts[batch.id] == planned + 1 <= 3
            assert log.started()[batch.id] == planned + 1
            for n in range(1, planned + 1):
                injected[faults.fault_at(batch.index, n)[0]] += 1
        retries = log.of("batch_retry")
        assert len(retries) == sum(faults.failures(b.index) for b in p.plan())
        assert all(r.data["error_class"] in faults.errors for r in retries)
        assert all(0 <= r.data["delay"] <= 0.05 * 2 ** (r.data["attempt"] - 1) for r in retries)
    # The seeds put faults before the batch, in the read and in the write.
    assert set(injected) == {"before", "read", "write"}, injected


def test_a_deterministic_error_is_attempted_once(landing, tmp_path, client):
    p = make_pipeline(landing, tmp_path)
    victims = tuple(b.id for b in p.plan()[:2])
    log = EventLog()
    result = p.run(client=client, fault=RaiseOn(victims, error="ValueError"), listeners=[log])
    assert result.status == "failed" and result.failed == 2 and result.committed == N_FILES - 2
    assert {v: log.started()[v] for v in victims} == {v: 1 for v in victims}
    assert not log.of("batch_retry")
    ledger = dbatch.Ledger(p.ledger_url())
    frame = ledger.batches_frame(p.name).set_index("batch_id")
    ledger.close()
    for v in victims:
        assert frame.loc[v, "state"] == "failed" and frame.loc[v, "attempts"] == 1
        assert frame.loc[v, "error_class"] == "ValueError"
        assert "deterministic error (not retried)" in frame.loc[v, "error_message"]
    assert not (tmp_path / "result").exists()  # a failed run publishes nothing


@pytest.mark.parametrize("error", ["KeyError", "AssertionError"])
def test_bugs_in_user_code_are_not_retried(error, landing, tmp_path, client):
    p = make_pipeline(landing, tmp_path)
    victim = p.plan()[0].id
    log = EventLog()
    result = p.run(client=client, fault=RaiseOn((victim,), error=error), listeners=[log])
    assert result.failed == 1 and log.started()[victim] == 1


def test_a_transient_error_that_persists_fails_after_the_allowed_attempts(
    landing, tmp_path, client
):
    p = make_pipeline(landing, tmp_path)
    victim = p.plan()[1].id
    log = EventLog()
    with dask.config.set({"dbatch.retry.attempts": 4}):
        result = p.run(
            client=client, fault=RaiseOn((victim,), error="ConnectionError"), listeners=[log]
        )
    assert result.failed == 1 and result.committed == N_FILES - 1
    assert log.started()[victim] == 4
    failed = log.of("batch_failed")[0]
    assert failed.data["attempt"] == 4
    assert "transient error persisted after 4 attempts" in failed.data["error_message"]
    # Fixed (the network is back): the next run does only that batch.
    again = EventLog()
    assert p.run(client=client, listeners=[again]).status == "succeeded"
    assert list(again.started()) == [victim]
    assert len(pd.read_parquet(tmp_path / "result")) == N_FILES * 40


def test_backoff_is_exponential_with_full_jitter_and_honours_retry_after():
    policy = RetryPolicy(attempts=5, base=0.5, cap=3.0)
    for attempt, ceiling in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 3.0), (6, 3.0)]:
        delays = [policy.delay(attempt) for _ in range(300)]
        assert all(0 <= d <= ceiling for d in delays)
        assert max(delays) > ceiling * 0.8 and min(delays) < ceiling * 0.2  # jittered
    assert policy.delay(1, TransientError("slow down", retry_after=2.5)) == 2.5
    assert policy.delay(1, TransientError("slow down", retry_after=99)) == 3.0  # capped
    with dask.config.set({"dbatch.retry.attempts": 7, "dbatch.retry.backoff-base": 0.1}):
        assert RetryPolicy().attempts == 7 and RetryPolicy().base == 0.1


def _http_error(status: int) -> requests.HTTPError:
    response = requests.Response()
    response.status_code = status
    return requests.HTTPError(f"{status}", response=response)


def _aiohttp_error(status: int) -> Exception:
    import aiohttp

    return aiohttp.ClientResponseError(request_info=None, history=(), status=status)


@pytest.mark.parametrize(
    ("exc", "transient"),
    [
        (OSError(errno.EIO, "I/O error"), True),
        (ConnectionResetError(), True),
        (ConnectionRefusedError(), True),
        (TimeoutError(), True),
        (TransientError("blip"), True),
        (_http_error(503), True),
        (_http_error(429), True),
        (_http_error(500), True),
        (sa.exc.OperationalError("SELECT 1", {}, Exception("server closed the connection")), True),
        (_aiohttp_error(503), True),
        (_aiohttp_error(403), False),
        (_http_error(404), False),
        (_http_error(400), False),
        (FileNotFoundError(), False),
        (PermissionError(), False),
        (ValueError("bad"), False),
        (KeyError("col"), False),
        (AssertionError(), False),
        (ZeroDivisionError(), False),
        (BadInputError("row 3", kind="type"), False),
        (JobSpecError("key"), False),
    ],
)
def test_is_transient_tells_a_blip_from_a_bug(exc, transient):
    assert is_transient(exc) is transient
