"""The dbatch page in headless Chromium: it renders cleanly, follows a run, shows the result.

Also on a scheduler started as ``dask scheduler --preload dbatch.dashboard`` in a
process of its own, with the page's history read from a ledger.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import threading
import time
import urllib.request

import pytest
from conftest import free_port
from test_dashboard import base_url, make_pipeline

from dbatch.executors import LocalExecutor
from dbatch.testing import Pause

pytestmark = [pytest.mark.chromium, pytest.mark.slow]

MODEL = "const m = Bokeh.documents[0].get_model_by_name(arguments[0]); "
READY = (
    "return window.Bokeh !== undefined && Bokeh.documents.length > 0 "
    "&& Bokeh.documents[0].get_model_by_name(arguments[0]) !== null"
)


def open_page(driver, url: str, model: str = "dbatch-grid-source") -> None:
    """Load the page, wait until its Bokeh document is there; fail on any console error."""
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get_log("browser")  # drop what earlier pages logged
    driver.set_window_size(1300, 1300)
    driver.get(url)
    WebDriverWait(driver, 30, poll_frequency=0.1).until(lambda d: d.execute_script(READY, model))
    assert_no_console_errors(driver)


def assert_no_console_errors(driver) -> None:
    severe = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert severe == [], severe


def column(driver, source: str, name: str) -> list:
    return driver.execute_script(MODEL + "return Array.from(m.data[arguments[1]]);", source, name)


def text(driver, name: str) -> str:
    return driver.execute_script(MODEL + "return m.text;", name)


def wait_for(check, timeout=60.0, every=0.2):
    deadline = time.time() + timeout
    while time.time() < deadline:
        found = check()
        if found:
            return found
        time.sleep(every)
    raise AssertionError(f"not seen within {timeout} s")


def assert_painted(driver, path) -> None:
    from PIL import Image

    assert driver.save_screenshot(str(path))
    image = Image.open(io.BytesIO(path.read_bytes())).convert("RGB")
    colours = dict((rgb, n) for n, rgb in image.getcolors(maxcolors=1 << 20))
    assert colours.get((0x58, 0xD6, 0x8D), 0) > 200, "no committed (green) batches on the page"


def test_the_page_follows_a_slow_run_and_shows_its_counts(tmp_path, client, chromium_driver):
    from dbatch.monitor.board.plugin import register

    driver = chromium_driver
    assert register(client)  # the page is there before the run, as with the preload
    open_page(driver, base_url(client) + "/dbatch")
    p = make_pipeline(tmp_path, name="followed", n=6)
    done = {}
    run = threading.Thread(target=lambda: done.update(r=p.run(client=client, fault=Pause(2.0))))
    run.start()
    try:
        wait_for(lambda: "followed" in text(driver, "dbatch-header"))
        snapshots = []

        tables = set()

        def progressed():
            tables.add(text(driver, "dbatch-runs"))
            states = column(driver, "dbatch-grid-source", "state")
            if not snapshots or states != snapshots[-1]:
                snapshots.append(states)
            return states.count("committed") == 6

        wait_for(progressed, timeout=120)
    finally:
        run.join()
    result = done["r"]
    assert result.ok
    assert len(snapshots) >= 3, snapshots  # the grid changed while the run went on
    assert any("running" in s for s in snapshots), snapshots
    assert any(0 < s.count("committed") < 6 for s in snapshots), snapshots
    assert any(f"{n}/6" in t for t in tables for n in range(1, 6)), tables  # the runs table too
    assert_no_console_errors(driver)

    # The finished run: its counts, status and quarantined rows by kind.
    wait_for(lambda: "succeeded" in text(driver, "dbatch-header"))
    header = text(driver, "dbatch-header")
    assert "6/6 batches" in header and "rows in 60" in header and "quarantined 6" in header
    runs = text(driver, "dbatch-runs")  # the newest run first, with its status
    assert runs.index(result.run_id) < runs.index("succeeded")
    assert column(driver, "dbatch-grid-source", "rows_in") == [10] * 6
    assert column(driver, "dbatch-kinds-source", "kind") == ["type"]
    assert column(driver, "dbatch-kinds-source", "rows") == [6]
    assert_painted(driver, tmp_path / "finished.png")
    assert_no_console_errors(driver)


def test_the_individual_plots_render(tmp_path, client, chromium_driver):
    assert make_pipeline(tmp_path, name="individual", n=2).run(client=client).ok
    open_page(chromium_driver, base_url(client) + "/individual-dbatch-batches")
    wait_for(lambda: column(chromium_driver, "dbatch-grid-source", "state"))
    open_page(chromium_driver, base_url(client) + "/individual-dbatch-rows", "dbatch-rates-source")
    wait_for(lambda: column(chromium_driver, "dbatch-rates-source", "rate"))


def start(args, env):
    return subprocess.Popen(
        [sys.executable, "-m", "dask", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def stop(process) -> str:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
    return process.stdout.read()[-3000:] if process.stdout else ""


def test_a_scheduler_started_with_the_preload(tmp_path, chromium_driver):
    from distributed import Client

    p = make_pipeline(tmp_path, name="preloaded", n=3)
    first = p.run(executor=LocalExecutor())
    port, dash = free_port(), free_port()
    env = {
        **os.environ,
        "DASK_DBATCH__DASHBOARD__LEDGER": p.ledger_url(),
        "DASK_DISTRIBUTED__WORKER__DAEMON": "False",
    }
    address = f"tcp://127.0.0.1:{port}"
    scheduler = start(
        [
            "scheduler",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--dashboard-address",
            f"127.0.0.1:{dash}",
            "--preload",
            "dbatch.dashboard",
        ],
        env,
    )
    worker = None
    try:
        base = f"http://127.0.0.1:{dash}"
        wait_for(lambda: _status(base + "/dbatch") == 200, timeout=60)  # before any run
        worker = start(["worker", address, "--nthreads", "1", "--no-dashboard"], env)
        with Client(address, timeout=60) as c:
            c.wait_for_workers(1, timeout=60)
            (tmp_path / "in" / "in-7.csv").write_text("id,g,x\nn-1,1,2.5\nn-2,2,3.5\n")
            second = p.run(client=c)
            assert second.ok
            names = c.run_on_scheduler(lambda dask_scheduler: list(dask_scheduler.plugins))
            assert names.count("dbatch-dashboard") == 1
        open_page(chromium_driver, base + "/dbatch")
        wait_for(lambda: "succeeded" in text(chromium_driver, "dbatch-header"))
        assert "1/4 batches" not in text(chromium_driver, "dbatch-header")
        assert column(chromium_driver, "dbatch-grid-source", "state").count("skipped") == 3
        history = wait_for(
            lambda: (
                first.run_id in (t := text(chromium_driver, "dbatch-history"))
                and "running" not in t  # read again once the run ended
                and t
            )
        )
        assert history.index(second.run_id) < history.index(first.run_id)  # newest first
        assert "preloaded" in text(chromium_driver, "dbatch-history-title")
        metrics = urllib.request.urlopen(base + "/metrics", timeout=30).read().decode()
        assert 'dbatch_batches_total{job="preloaded",state="committed"} 1.0' in metrics
        assert_no_console_errors(chromium_driver)
    finally:
        logs = (stop(worker) if worker else "") + stop(scheduler)
    assert "Traceback" not in logs, logs


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status
    except OSError:
        return 0
