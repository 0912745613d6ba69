"""The driver's memory does not follow the number of batches a run has done."""

from __future__ import annotations

import json
import subprocess
import sys

from dbatch import Files, ParquetSink, Pipeline
from dbatch.core import EventKind
from dbatch.monitor.infos import BatchInfos

#: The run, in a fresh interpreter: under pytest, a test before this one may have set
#: dbatch's log to INFO, and pytest keeps every record it captures (a few hundred bytes a
#: batch that a user's driver, logging to a stream, does not keep).
RUN = """
import gc, json, sys, tracemalloc
from dbatch import ByCount, Files, ParquetSink, Pipeline
from dbatch.executors import LocalExecutor
from dbatch.listeners import RunListener

class Notes(RunListener):
    def __init__(self, at):
        self.at, self.committed, self.traced = at, 0, {}

    def on_batch_committed(self, event):
        self.committed += 1
        if self.committed in self.at:
            gc.collect()
            self.traced[self.committed] = tracemalloc.get_traced_memory()[0]

base = sys.argv[1]
pipeline = Pipeline(
    Files(base + "/in/*.csv", schema={"id": "int64", "v": "int64"}),
    ParquetSink(base + "/out"),
    batching=ByCount(1),
    name="many",
    workdir=base + "/work",
)
notes = Notes((100, 500))
tracemalloc.start()
result = pipeline.run(executor=LocalExecutor(), progress=False, listeners=[notes])
tracemalloc.stop()
print(json.dumps({
    "status": result.status,
    "committed": result.committed,
    "per_batch": (notes.traced[500] - notes.traced[100]) / 400,
    "lines": len(result.batches),
    "last": result.batches[-1],
}, default=str))
"""


def test_a_run_keeps_next_to_nothing_of_each_batch_it_has_done(tmp_path):
    """Between the 100th and the 500th batch committed, the driver keeps < 400 bytes a batch.

    What a finished batch left behind (its whole line of the result as a dict, its
    attempt count, every event for a dashboard that is not there) came to about
    2 KB a batch: 200 MB for a run of 10^5 batches.
    """
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(500):
        (folder / f"p-{i:04d}.csv").write_text(f"id,v\n{i},{i % 7}\n")
    done = subprocess.run(
        [sys.executable, "-c", RUN, str(tmp_path)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.splitlines()[-1])
    assert seen["status"] == "succeeded" and seen["committed"] == 500, seen
    assert seen["per_batch"] < 400, f"{seen['per_batch']:.0f} bytes kept per batch done"
    # The result still has every batch's line, whole.
    assert seen["lines"] == 500
    line = seen["last"]
    assert line["batch_id"] and line["state"] == "committed" and line["rows_out"] == 1
    assert line["attempts"] == 1 and line["worker"] and float(line["duration"]) > 0


def test_a_plain_batch_line_comes_back_the_same_and_others_stay_whole():
    infos = BatchInfos()
    started = {"fingerprint": "f", "attempt": 1, "units": 2, "bytes": 30}
    committed = {
        **started,
        "rows_in": 5,
        "rows_out": 4,
        "rows_filtered": 1,
        "rows_quarantined": 0,
        "files_quarantined": 0,
        "rows_by_kind": {},
        "duration": 0.5,
        "checksum": "c",
        "worker": "host:1",
        "quarantine_kinds": {},
        "peak_memory": 100,
    }
    lines = {}
    for batch_id, data in (("plain", committed), ("bad", {**committed, "rows_quarantined": 1})):
        line = infos.open(batch_id)
        line.update(started, state="running", attempts=1)
        line.update(committed, state="committed", attempts=1)
        line.update(data)
        lines[batch_id] = dict(line)
        infos.settle(batch_id)
    assert isinstance(infos._lines["plain"], tuple)
    assert isinstance(infos._lines["bad"], dict)
    for batch_id, line in lines.items():
        assert infos[batch_id] == line and list(infos[batch_id]) == list(line)
    assert list(infos) == ["plain", "bad"] and "plain" in infos and len(infos) == 2
    again = infos.open("plain")  # a later event for the batch: a dict again
    again["state"] = "failed"
    assert infos["plain"]["state"] == "failed"


def test_events_are_not_kept_for_a_dashboard_there_is_none_of(tmp_path):
    from dbatch.monitor.board.relay import Relay

    (tmp_path / "a.csv").write_text("id\n1\n")
    plan = Pipeline(
        Files(str(tmp_path / "*.csv")), ParquetSink(str(tmp_path / "out")), name="r"
    ).plan()
    relay = Relay(plan)
    relay.attach(None)
    relay(_event())
    assert relay.pending == [] and relay.queue.empty()


def _event():
    from dbatch.core import Event

    return Event(EventKind.BATCH_STARTED, "run", "r", "b", {"fingerprint": "f"})
