"""Memory-aware batches: size: auto from the ledger's history, kept stable; the warning before a
run about batches that will not fit a worker, naming them and the fix."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import dask
import pytest

from dbatch import ByCount, BySize, Files, ParquetSink, Pipeline
from dbatch.batching import batcher_from_config
from dbatch.core import Event, EventKind
from dbatch.errors import JobSpecError
from dbatch.ledger import Ledger
from dbatch.sizing import AUTO_FILE


def landing(root: Path, n: int = 6) -> str:
    (root / "in").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (root / "in" / f"f{i}.csv").write_text(
            "id,v\n" + "".join(f"{i}-{j},{j}\n" for j in range(50))
        )
    return str(root / "in" / "*.csv")


def pipeline(root: Path, batching) -> Pipeline:
    return Pipeline(
        Files(landing(root)),
        ParquetSink(str(root / "out")),
        batching=batching,
        name="sized",
        workdir=str(root / "work"),
    )


def record_history(p: Pipeline, *rows: tuple[int, int]) -> None:
    """Committed batches of the job in its ledger: (input bytes, peak memory) each."""
    ledger = Ledger(p.ledger_url())
    try:
        ledger(Event(EventKind.RUN_STARTED, "r-old", p.name, None, {"batches": len(rows)}))
        for i, (size, peak) in enumerate(rows):
            b = f"b-old{i}"
            ledger(
                Event(
                    EventKind.BATCH_STARTED, "r-old", p.name, b, {"fingerprint": "x", "bytes": size}
                )
            )
            ledger(
                Event(
                    EventKind.BATCH_COMMITTED,
                    "r-old",
                    p.name,
                    b,
                    {"fingerprint": "x", "units": 1, "duration": 0.5, "peak_memory": peak},
                )
            )
    finally:
        ledger.close()


def test_size_auto_without_history_takes_the_default_and_keeps_it(tmp_path):
    p = pipeline(tmp_path, BySize("auto"))
    with dask.config.set({"dbatch.batching.target-bytes": 700}):
        first = p.plan()
    kept = json.loads((tmp_path / "work" / "sized" / AUTO_FILE).read_text())
    assert kept["target_bytes"] == 700 and kept["from"] == "default"
    assert [b.size <= 700 or len(b.units) == 1 for b in first].count(True) == len(first)
    record_history(p, (1000, 10**9))  # a history now: the kept size still wins
    assert [b.id for b in p.plan()] == [b.id for b in first]


def test_size_auto_from_history_fits_the_budget(tmp_path):
    p = pipeline(tmp_path, BySize("auto"))
    record_history(p, (1000, 50_000), (2000, 40_000))  # at most 50 bytes of memory per byte
    with dask.config.set(
        {"dbatch.batching.worker-memory": "200MiB", "dbatch.batching.memory-fraction": 0.5}
    ):
        p.plan()
    kept = json.loads((tmp_path / "work" / "sized" / AUTO_FILE).read_text())
    assert kept["from"] == "history"
    assert kept["target_bytes"] == int(100 * 2**20 / 50)


def test_the_job_file_takes_size_auto():
    assert batcher_from_config({"size": "auto"}, file=None).auto
    with pytest.raises(JobSpecError, match="size: auto is chosen when a pipeline plans"):
        BySize("auto").groups([])


def test_a_batch_that_will_not_fit_is_named_before_the_run(tmp_path, client, caplog):
    p = pipeline(tmp_path, ByCount(3))
    record_history(p, (100, 4 * 2**30))  # 4 GiB for 100 bytes: nothing of this job fits
    limit = min(w["memory_limit"] for w in client.scheduler_info()["workers"].values())
    with caplog.at_level(logging.WARNING, logger="dbatch"):
        result = p.run(client=client)
    assert result.status == "succeeded"  # a warning, not a refusal
    warned = [
        r.getMessage()
        for r in caplog.records
        if "will not fit" in r.getMessage() or "estimated to need" in r.getMessage()
    ]
    ids = {b.id for b in p.plan()}
    assert len(warned) == 2 and all(any(i in m for i in ids) for m in warned)
    assert "batching: {size:" in warned[0] and "size: auto" in warned[0]
    assert limit > 0
    again = [r for r in caplog.records if "estimated to need" in r.getMessage()]
    caplog.clear()
    record_history(pipeline(tmp_path / "fits", ByCount(3)), (100, 100))
    with caplog.at_level(logging.WARNING, logger="dbatch"):
        pipeline(tmp_path / "fits", ByCount(3)).run(client=client)
    assert not [r for r in caplog.records if "estimated to need" in r.getMessage()] and again
