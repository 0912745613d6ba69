"""Stream jobs whose driver (SIGKILL, at a crash point or at a random moment) and workers die.

Against the real Redis and NATS: messages are published in waves, partly while
`dbatch run` works; the driver is killed, workers are killed by a step, then the
job runs again. Every message is in the output exactly once (Parquet, or a SQLite
table), and the broker's position is the end of the stream.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import time

import pandas as pd
import pytest
import sqlalchemy as sa
from conftest import local_client
from streams_brokers import records
from test_faults_driver import _kill_group, dbatch_in_subprocess

import dbatch
from dbatch.spec import load_job

SEEDS = range(10)
POINTS = ("planned", "promoted", "recorded", "acknowledged", "before_publish", "publishing")

JOB = """\
name: readings
source:
{source}  schema: {{n: int64, v: float64, site: string}}
  chunk: 25
batching: {{threshold: {{count: 25, max_wait: 0s}}}}
steps:
  - map: {{function: chaos:maybe_kill}}
sink: {sink}
workdir: work
"""

CHAOS = """\
import os, signal, zlib
from pathlib import Path

MARKS = Path({marks!r})


def maybe_kill(df):
    # Kill the worker (once per batch) for about one batch in four, chosen by the seed.
    if len(df) == 0:
        return df
    first = int(df["n"].min())
    if zlib.crc32(f"{seed}-{{first}}".encode()) % 4 == 0:
        mark = MARKS / str(first)
        if not mark.exists():
            mark.touch()
            os.kill(os.getpid(), signal.SIGKILL)
    return df
"""


def write_job(root, broker, seed: int) -> tuple:
    marks = root / "marks"
    marks.mkdir()
    (root / "chaos.py").write_text(CHAOS.format(marks=str(marks), seed=seed))
    if seed % 2:
        sink = "{type: sql, url: 'sqlite:///out.db', table: readings}"
    else:
        sink = "{type: parquet, path: out}"
    job = root / "job.yaml"
    job.write_text(JOB.format(source=broker.yaml(), sink=sink))
    return job, seed % 2 == 1


def read_output(root, sql: bool) -> pd.DataFrame:
    if sql:
        engine = sa.create_engine(f"sqlite:///{root / 'out.db'}")
        try:
            return pd.read_sql("select n from readings", engine)
        finally:
            engine.dispose()
    return pd.read_parquet(root / "out")


@pytest.fixture
def client():
    """A cluster of this test's own: its workers are killed many times over, and nothing
    that other tests share should live through that."""
    with local_client() as c:
        yield c


def forget_dead_driver(client, timeout: float = 30) -> None:
    def tasks_of_job(dask_scheduler):
        return [str(k) for k in dask_scheduler.tasks if "readings" in str(k)]

    deadline = time.time() + timeout
    while client.run_on_scheduler(tasks_of_job) and time.time() < deadline:
        time.sleep(0.05)


@pytest.mark.parametrize("seed", SEEDS)
def test_killed_at_random_moments_then_resumed_each_message_once(broker, seed, tmp_path, client):
    rng = random.Random(seed)
    job, sql = write_job(tmp_path, broker, seed)
    total, kills = 0, 0
    for _wave in range(2):
        n = rng.randint(40, 110)
        broker.publish(records(total, total + n // 2))
        if rng.random() < 0.5:
            crash, delay = f"{rng.choice(POINTS)}:{rng.randint(1, 3)}", None
        else:
            crash, delay = None, rng.uniform(0.5, 4.0)
        proc = dbatch_in_subprocess(job, crash, "--scheduler", client.scheduler.address, wait=False)
        broker.publish(records(total + n // 2, total + n))  # while the run plans or works
        total += n
        try:
            proc.wait(timeout=delay if delay is not None else 120)
        except subprocess.TimeoutExpired:  # still running at the random moment: kill it now
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
        kills += proc.returncode == -signal.SIGKILL
        _kill_group(proc)  # what it started may hold its pipes open
        out, err = proc.communicate(timeout=30)
        assert proc.returncode in (0, -signal.SIGKILL), err[-3000:]
        forget_dead_driver(client)

    for expected in (("succeeded", "nothing_to_do"), ("nothing_to_do",)):  # resume, then none
        code, out, err = dbatch_in_subprocess(job, None, "--scheduler", client.scheduler.address)
        assert code == 0, err[-3000:]
        assert json.loads(out.strip().splitlines()[-1])["status"] in expected
    pipeline = load_job(job).pipeline

    frame = read_output(tmp_path, sql)
    assert len(frame) == total and sorted(frame["n"]) == list(range(total)), (seed, kills)
    if broker.kind == "nats" and str(broker.position()) != str(broker.end()):
        # A driver killed while it acknowledged leaves messages delivered and not
        # acknowledged; JetStream hands them out again only after the consumer's
        # ack_wait (5 s), and the runs above may all have come sooner. The next run
        # after that moves the position the rest of the way.
        time.sleep(6)
        code, out, err = dbatch_in_subprocess(job, None, "--scheduler", client.scheduler.address)
        assert code == 0 and json.loads(out.strip().splitlines()[-1])["status"] == "nothing_to_do"
    assert str(broker.position()) == str(broker.end())
    ledger = dbatch.Ledger(pipeline.ledger_url())
    states = ledger.batches_frame("readings")["state"]
    ledger.close()
    assert (states == "committed").all()
