"""The dbatch page of the Dask dashboard: the board it draws from, the plugin, the routes.

The board is plain data (fed here with messages as the relay sends them); the
plugin and its pages are tested on the real LocalCluster of the ``client``
fixture, fed by real runs.
"""

from __future__ import annotations

import json
import tracemalloc
import urllib.request

import pytest

from dbatch import ByCount, Files, ParquetSink, Pipeline
from dbatch.core import Event, EventKind
from dbatch.monitor.board.page import grid_data, history_data
from dbatch.monitor.board.plugin import PLUGIN_NAME
from dbatch.monitor.board.state import Board, Limits, to_message
from dbatch.testing import Pause


def message(kind, run_id="r1", job="j", batch_id=None, t=0.0, **data):
    return to_message(Event(EventKind(kind), run_id, job, batch_id, data, time=t))


def run_messages(run_id, n, job="j", t0=1000.0, batch_ids=True):
    """The messages of a run of ``n`` batches: every batch starts, one in ten retries, all commit."""
    ids = [f"b-{i:05d}" for i in range(n)]
    start = Event(EventKind.RUN_STARTED, run_id, job, None, {"batches": n}, time=t0)
    yield to_message(start, ids if batch_ids else None)
    for i, b in enumerate(ids):
        t = t0 + i * 0.01
        yield message("batch_started", run_id, job, b, t, attempt=1)
        if i % 10 == 0:
            yield message(
                "batch_retry",
                run_id,
                job,
                b,
                t,
                attempt=1,
                error_class="OSError",
                error_message="x" * 5000,
            )
        yield message(
            "batch_committed",
            run_id,
            job,
            b,
            t + 0.005,
            attempt=1,
            rows_in=10,
            rows_out=8,
            rows_filtered=1,
            rows_quarantined=1,
            duration=0.5,
            rows_by_kind={"parse": 1},
            traceback="y" * 4000,
        )
    yield message("finished", run_id, job, None, t0 + n * 0.01, status="succeeded")


def test_the_board_follows_one_run():
    board = Board()
    for m in run_messages("r1", 30):
        board.feed(m)
    view = board.runs["r1"]
    assert view.counts()["committed"] == 30 and view.status == "succeeded"
    assert view.rows == [300, 240, 30, 30]
    assert view.kinds == {"parse": 30}
    assert len(view.errors) == 3 and all(len(e[3]) < 600 for e in view.errors)
    assert view.eta() is None  # finished
    metrics = board.jobs["j"]
    assert metrics.batches["committed"] == 30 and metrics.retries == 3
    assert metrics.rows["in"] == 300 and metrics.last_success is not None
    cells = grid_data(view)
    assert cells["state"] == ["committed"] * 30 and cells["attempts"][0] == 1
    assert (cells["x"][0], cells["y"][0]) == (0, 0) and cells["rows_in"][5] == 10


def test_a_run_in_progress_has_an_eta_and_planned_batches():
    board = Board()
    messages = list(run_messages("r1", 10))
    for m in messages[:8]:  # run_started, then the first batches
        board.feed(m)
    view = board.runs["r1"]
    counts = view.counts()
    assert counts["planned"] > 0 and counts["committed"] >= 2
    assert view.eta(now=view.started + 10) > 0
    assert view.status == "running"


def test_the_messages_carry_no_traceback_and_short_messages():
    m = next(m for m in run_messages("r1", 1) if m["kind"] == "batch_committed")
    assert "traceback" not in m["data"]
    retry = message("batch_retry", batch_id="b", error_message="z" * 9000)
    assert len(retry["data"]["error_message"]) == 500
    json.dumps(m)  # plain data, as msgpack needs


def test_the_board_stays_bounded_over_many_runs_of_ten_thousand_batches():
    """Runs kept, cells, errors and timeline points are capped: memory stops growing."""
    limits = Limits(max_runs=3, max_batches=10_000, max_errors=20, timeline=100)
    board = Board(limits)
    tracemalloc.start()
    try:
        sizes = []
        for r in range(8):
            for m in run_messages(f"r{r}", 10_000, t0=1000.0 + r * 1000):
                board.feed(m)
            sizes.append(tracemalloc.get_traced_memory()[0])
    finally:
        tracemalloc.stop()
    assert list(board.runs) == ["r5", "r6", "r7"]
    view = board.runs["r7"]
    assert len(view.cells) == 10_000 and len(view.errors) == 20 and len(view.timeline) == 100
    # Once max_runs runs are kept, each new run replaces one: no growth with the number of runs.
    assert sizes[-1] < sizes[3] * 1.2, sizes


def test_batches_past_the_cap_are_counted_but_not_drawn():
    board = Board(Limits(max_batches=100))
    for m in run_messages("big", 1000):
        board.feed(m)
    view = board.runs["big"]
    assert len(view.cells) == 100 and view.counts()["committed"] == 1000 and view.ended == 1000


def test_a_malformed_event_is_ignored_with_a_warning(caplog):
    from dbatch.monitor.board.plugin import DashboardPlugin

    plugin = DashboardPlugin()
    taken = plugin.receive(events=[{"kind": "batch_started"}, message("run_started", batches=1)])
    assert taken == 1 and "malformed" in caplog.text
    assert list(plugin.board.runs) == ["r1"]


# -- on a real cluster ---------------------------------------------------------------


def write_inputs(folder, n):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        rows = [f"{i}-{k},{k % 3},{'x' if k == 0 else k * 1.5}" for k in range(10)]
        (folder / f"in-{i}.csv").write_text("id,g,x\n" + "\n".join(rows) + "\n")


def make_pipeline(tmp_path, name="watched", n=4):
    write_inputs(tmp_path / "in", n)
    return Pipeline(
        Files(
            str(tmp_path / "in" / "*.csv"), schema={"id": "string", "g": "int64", "x": "float64"}
        ),
        ParquetSink(str(tmp_path / "out")),
        batching=ByCount(1),
        name=name,
        workdir=str(tmp_path / "work"),
        max_bad_fraction=0.5,
    )


def base_url(client) -> str:
    return client.dashboard_link.rsplit("/", 1)[0]


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=30) as r:
        return r.read().decode()


def board_of(client, run_id):
    def read(dask_scheduler, run_id=run_id):
        view = dask_scheduler.plugins["dbatch-dashboard"].board.runs[run_id]
        return {
            "counts": view.counts(),
            "rows": view.rows,
            "kinds": dict(view.kinds),
            "status": view.status,
            "total": view.total,
        }

    return client.run_on_scheduler(read)


def test_a_run_registers_the_plugin_and_feeds_the_scheduler(tmp_path, client):
    p = make_pipeline(tmp_path)
    result = p.run(client=client)
    assert result.ok, result.message
    seen = board_of(client, result.run_id)
    assert seen["status"] == result.status == "succeeded"
    assert seen["counts"]["committed"] == 4 and seen["total"] == 4
    assert seen["rows"] == [40, 36, 0, 4]
    assert seen["kinds"] == {"type": 4}  # the bad x values, by kind
    names = client.run_on_scheduler(lambda dask_scheduler: list(dask_scheduler.plugins))
    assert names.count(PLUGIN_NAME) == 1


def test_the_page_is_served_listed_in_the_menu_and_in_individual_plots(tmp_path, client):
    p = make_pipeline(tmp_path, name="listed")
    assert p.run(client=client).ok
    base = base_url(client)
    page = get(base + "/dbatch")
    assert "bokeh" in page.lower() and 'href="dbatch"' in page  # a Bokeh document, in the menu
    status = get(base + "/status")
    assert 'href="dbatch"' in status  # the dashboard's menu
    plots = json.loads(get(base + "/individual-plots.json"))
    assert "/individual-dbatch-batches" in plots.values()
    assert "/individual-dbatch-rows" in plots.values()
    assert "bokeh" in get(base + "/individual-dbatch-batches").lower()


def test_a_second_registration_keeps_the_first_plugin(tmp_path, client):
    from dbatch.monitor.board.plugin import register

    p = make_pipeline(tmp_path, name="twice")
    first = p.run(client=client)
    assert register(client)
    assert board_of(client, first.run_id)["counts"]["committed"] == 4  # the state survived


def test_the_history_comes_from_the_ledger(tmp_path, client):
    p = make_pipeline(tmp_path, name="history")
    first = p.run(client=client)
    (tmp_path / "in" / "in-9.csv").write_text("id,g,x\nn-1,1,2.5\n")
    second = p.run(client=client)
    data = history_data(p.ledger_url(), "history")
    assert data["run_id"] == [second.run_id, first.run_id]
    assert data["committed"] == [1, 4] and data["rows_in"][1] == 40
    assert all(data["started"]) and all(data["ended"])


def test_a_slow_run_is_seen_while_it_goes(tmp_path, client):
    import threading
    import time

    p = make_pipeline(tmp_path, name="slowly", n=4)
    results = {}
    thread = threading.Thread(
        target=lambda: results.update(r=p.run(client=client, fault=Pause(1.0)))
    )
    thread.start()
    seen = []
    deadline = time.time() + 60
    while thread.is_alive() and time.time() < deadline:
        states = client.run_on_scheduler(
            lambda dask_scheduler: [
                v.counts()
                for v in dask_scheduler.plugins["dbatch-dashboard"].board.runs.values()
                if v.job == "slowly"
            ]
        )
        if states:
            seen.append(states[-1])
        time.sleep(0.2)
    thread.join()
    assert results["r"].ok
    assert any(s["running"] > 0 for s in seen), seen
    assert any(0 < s["committed"] < 4 for s in seen), seen


def test_no_dashboard_plugin_when_turned_off(tmp_path):
    import dask
    from distributed import Client, LocalCluster

    with (
        dask.config.set({"dbatch.dashboard.enabled": False}),
        LocalCluster(
            n_workers=1,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address="127.0.0.1:0",
            worker_dashboard_address=None,
        ) as cluster,
        Client(cluster) as c,
    ):
        assert make_pipeline(tmp_path, name="off").run(client=c).ok
        assert PLUGIN_NAME not in c.run_on_scheduler(
            lambda dask_scheduler: list(dask_scheduler.plugins)
        )


@pytest.mark.parametrize("kind", ["batch_failed", "batch_quarantined"])
def test_errors_keep_the_batch_and_the_message(kind):
    board = Board()
    board.feed(message("run_started", batches=1))
    board.feed(message(kind, batch_id="b-1", error_class="ValueError", error_message="bad x"))
    ((_, batch, state, text),) = board.runs["r1"].errors
    assert (batch, state) == ("b-1", kind.removeprefix("batch_")) and "ValueError: bad x" == text
