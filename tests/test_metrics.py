"""dbatch's Prometheus metrics: scraped from the scheduler's /metrics, and in a textfile."""

from __future__ import annotations

import json
import time
import urllib.request

import pytest
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families
from test_cli import write_job
from test_dashboard import base_url, make_pipeline, run_messages

from dbatch.cli import main
from dbatch.monitor.board.metrics import write_textfile
from dbatch.monitor.board.state import Board
from dbatch.testing import SeededFaults


def samples(text: str, job: str) -> dict[tuple[str, tuple], float]:
    """{(sample name, sorted labels but job): value} of ``job``'s dbatch samples."""
    found = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name.startswith("dbatch_") and s.labels.get("job") == job:
                labels = tuple(sorted((k, v) for k, v in s.labels.items() if k != "job"))
                found[(s.name, labels)] = s.value
    return found


def scrape(client) -> str:
    with urllib.request.urlopen(base_url(client) + "/metrics", timeout=30) as r:
        return r.read().decode()


def test_the_scheduler_exports_dbatch_metrics_next_to_dasks(tmp_path, client):
    p = make_pipeline(tmp_path, name="scraped", n=4)
    result = p.run(client=client)
    assert result.ok
    text = scrape(client)
    assert "dask_scheduler_workers" in text  # Dask's own metrics are still there
    got = samples(text, "scraped")
    assert got[("dbatch_batches_total", (("state", "committed"),))] == 4
    assert got[("dbatch_run_batches", (("state", "committed"),))] == 4
    assert got[("dbatch_run_batches", (("state", "planned"),))] == 0
    assert got[("dbatch_rows_total", (("kind", "in"),))] == 40
    assert got[("dbatch_rows_total", (("kind", "out"),))] == 36
    assert got[("dbatch_rows_total", (("kind", "quarantined"),))] == 4
    assert got[("dbatch_batch_duration_seconds_count", ())] == 4
    assert got[("dbatch_batch_duration_seconds_bucket", (("le", "+Inf"),))] == 4
    assert got[("dbatch_runs_total", (("status", "succeeded"),))] == 1
    assert got[("dbatch_batch_retries_total", ())] == 0
    assert abs(got[("dbatch_last_success_timestamp_seconds", ())] - time.time()) < 120


def test_a_second_cluster_in_the_process_does_not_hide_the_first(tmp_path, client):
    """The metrics registry is one per process: after another cluster closes, ours is back."""
    from conftest import local_client

    with local_client() as other:
        assert make_pipeline(tmp_path / "other", name="elsewhere", n=2).run(client=other).ok
        assert ("dbatch_runs_total", (("status", "succeeded"),)) in samples(
            scrape(other), "elsewhere"
        )
    assert make_pipeline(tmp_path / "here", name="at-home", n=3).run(client=client).ok
    got = samples(scrape(client), "at-home")
    assert got[("dbatch_batches_total", (("state", "committed"),))] == 3


def test_retries_are_counted(tmp_path, client):
    p = make_pipeline(tmp_path, name="retried", n=2)
    assert p.run(
        client=client, fault=SeededFaults(seed=1, rate=1.0, max_failures=1, where=("before",))
    ).ok
    got = samples(scrape(client), "retried")
    assert got[("dbatch_batch_retries_total", ())] == 2
    assert got[("dbatch_batches_total", (("state", "committed"),))] == 2


def test_the_duration_histogram_counts_each_batch_in_its_bucket():
    board = Board()
    for m in run_messages("r1", 10):  # every batch took 0.5 s
        board.feed(m)
    from dbatch.monitor.board.metrics import families

    hist = next(f for f in families(board) if f.name == "dbatch_batch_duration_seconds")
    buckets = {s.labels["le"]: s.value for s in hist.samples if s.name.endswith("_bucket")}
    assert buckets["0.1"] == 0 and buckets["0.5"] == 10 and buckets["+Inf"] == 10
    total = next(s.value for s in hist.samples if s.name.endswith("_sum"))
    assert total == pytest.approx(5.0)


def test_the_textfile_is_replaced_whole_and_keeps_the_last_success(tmp_path):
    path = tmp_path / "textfile" / "dbatch.prom"
    good = Board()
    for m in run_messages("r1", 3, job="nightly"):
        good.feed(m)
    write_textfile(good, path)
    first = samples(path.read_text(), "nightly")
    when = first[("dbatch_last_success_timestamp_seconds", ())]
    bad = Board()
    bad.feed(next(run_messages("r2", 1, job="nightly")))
    bad.feed(
        {
            "kind": "finished",
            "run_id": "r2",
            "job": "nightly",
            "time": 5000.0,
            "data": {"status": "failed"},
        }
    )
    write_textfile(bad, path)
    second = samples(path.read_text(), "nightly")
    assert second[("dbatch_runs_total", (("status", "failed"),))] == 1
    assert second[("dbatch_last_success_timestamp_seconds", ())] == when  # kept
    assert sorted(p.name for p in path.parent.iterdir()) == ["dbatch.prom"]  # no temporary left


def test_run_writes_the_metrics_file(tmp_path, client):
    job = write_job(tmp_path / "job")
    path = tmp_path / "metrics" / "cli-test.prom"
    result = CliRunner().invoke(main, ["run", str(job), "--json", "--metrics-file", str(path)])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["status"] == "succeeded"
    got = samples(path.read_text(), "cli-test")
    assert got[("dbatch_batches_total", (("state", "committed"),))] == 4
    assert got[("dbatch_rows_total", (("kind", "in"),))] == 48
    assert got[("dbatch_rows_total", (("kind", "filtered"),))] == 12
    assert ("dbatch_last_success_timestamp_seconds", ()) in got

    again = CliRunner().invoke(main, ["run", str(job), "--json", "--metrics-file", str(path)])
    assert again.exit_code == 0
    got = samples(path.read_text(), "cli-test")
    assert got[("dbatch_batches_total", (("state", "skipped"),))] == 4
    assert got[("dbatch_runs_total", (("status", "nothing_to_do"),))] == 1
