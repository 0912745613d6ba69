"""Draw the screenshots of docs/monitoring.md: the dbatch page during a run and after it.

    python docs/screenshots.py

Runs a small job twice on a LocalCluster (the second run with a slow step, one
batch that fails and a few that are retried) and saves what headless Chromium
shows to docs/images/dashboard-running.png and docs/images/dashboard-finished.png.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from pathlib import Path

import dask
from distributed import Client, LocalCluster
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

from dbatch import ByCount, Files, ParquetSink, Pipeline
from dbatch.monitor.board.plugin import register
from dbatch.testing import AllFaults, Pause, RaiseOn, SeededFaults

IMAGES = Path(__file__).resolve().parent / "images"
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-dev-shm-usage",
)


def landing(folder: Path, files: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(files):
        rows = [f"{i}-{k},{k % 3},{'bad' if k % 97 == 5 else k * 1.5}" for k in range(500)]
        (folder / f"in-{i:03d}.csv").write_text("id,g,x\n" + "\n".join(rows) + "\n")


def browser() -> webdriver.Chrome:
    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium") or "chromium"
    for flag in FLAGS:
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=opts)
    driver.set_window_size(1300, 1250)
    return driver


def main() -> None:
    root = Path(tempfile.mkdtemp(prefix="dbatch-screens-"))
    landing(root / "in", 40)
    pipeline = Pipeline(
        Files(str(root / "in" / "*.csv"), schema={"id": "string", "g": "int64", "x": "float64"}),
        ParquetSink(str(root / "out")),
        batching=ByCount(1),
        name="sensor-readings",
        workdir=str(root / "work"),
        max_bad_fraction=0.5,
    )
    batches = [b.id for b in pipeline.plan()]
    with (
        dask.config.set({"dbatch.dashboard.ledger": pipeline.ledger_url()}),
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            host="127.0.0.1",
            dashboard_address="127.0.0.1:0",
            worker_dashboard_address=None,
        ) as cluster,
        Client(cluster) as client,
    ):
        register(client)
        (root / "in" / "in-039.csv").rename(root / "later.csv")
        pipeline.run(client=client, progress=False)  # an earlier run, for the history table
        (root / "later.csv").rename(root / "in" / "in-039.csv")
        (root / "in" / "in-038.csv").write_text("id,g,x\n1,2,3\n")
        fault = AllFaults(
            (
                Pause(0.6),
                RaiseOn((batches[38],)),
                SeededFaults(seed=2, rate=0.1, max_failures=1, where=("before",)),
            )
        )
        run = threading.Thread(
            target=lambda: pipeline.run(client=client, fault=fault, force=True, progress=False)
        )
        driver = browser()
        try:
            driver.get(client.dashboard_link.rsplit("/", 1)[0] + "/dbatch")
            run.start()
            time.sleep(8)
            driver.save_screenshot(str(IMAGES / "dashboard-running.png"))
            run.join()
            time.sleep(2)
            driver.save_screenshot(str(IMAGES / "dashboard-finished.png"))
        finally:
            driver.quit()


if __name__ == "__main__":
    main()
