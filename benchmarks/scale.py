"""Many small inputs: planning time, per-batch overhead and memory of dbatch against client.map.

Usage::

    python benchmarks/scale.py                          # 10^3 and 10^4 files
    python benchmarks/scale.py --files 1000,10000,100000 --batch-files 10

For each size, N small CSV files (two rows each) are written below
``benchmarks/data/scale/<N>/`` and grouped 10 to a batch. Measured in one process:

* **planning**: ``Pipeline.plan()`` (list, stat, group, ids and fingerprints), per
  file, against the floor of a bare ``glob.glob`` + ``os.stat`` of the same files;
* **running**: the same batches written to Parquet (one file per batch) by a
  hand-written ``client.map`` (pyarrow reads the batch's CSVs, writes one file, all
  batches submitted at once) and by ``Pipeline.run`` (exactly-once commit, ledger,
  quarantine checks, a bounded number of batches in flight), alternating, on the same
  cluster: a scheduler and 2 workers x 1 thread, each its own process;
* **memory**: a thread samples every 50 ms the resident memory of this process (the
  driver) and of the scheduler process, and the scheduler's number of tasks; the
  tables give peak minus idle;
* **CPU**: the CPU time the driver, the scheduler and the worker processes used
  per batch, which depends much less than the wall time on what else the machine
  is running;
* **driver memory against batches done** (``--probe``): one more dbatch run, with
  ``tracemalloc`` on, notes the driver's RSS, the Python-allocated memory and the
  number of memory blocks Python has allocated when 10 %, 50 % and 90 % of the
  batches are committed, and reports their growth per 1,000 batches done (the plan
  is made before the first note, so it is not counted); ``--snapshot N`` prints
  the N source lines whose allocations grew most between the 50 % and 90 % notes.
"""

from __future__ import annotations

import argparse
import gc
import glob
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from pathlib import Path

import psutil

HERE = Path(__file__).resolve().parent
DATA = HERE / "data" / "scale"


def make_files(n: int) -> Path:
    folder = DATA / str(n)
    marker = folder / ".complete"
    if marker.exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (folder / f"part-{i:06d}.csv").write_text(f"id,v\n{i}-a,{i % 97}\n{i}-b,{i % 89}\n")
    marker.write_text("")
    return folder


def plan_time(folder: Path, batch_files: int, repeat: int) -> tuple[float, float, int]:
    """(seconds of Pipeline.plan(), seconds of glob + stat), medians; the number of batches."""
    from dbatch import ByCount, Files, ParquetSink, Pipeline

    pattern = str(folder / "*.csv")
    pipeline = Pipeline(
        Files(pattern), ParquetSink(tempfile.mkdtemp()), batching=ByCount(batch_files), name="plan"
    )
    planned, floor, batches = [], [], 0
    for _ in range(repeat):
        t = time.perf_counter()
        batches = len(pipeline.plan())
        planned.append(time.perf_counter() - t)
        t = time.perf_counter()
        _ = [os.stat(p) for p in sorted(glob.glob(pattern))]
        floor.append(time.perf_counter() - t)
    return statistics.median(planned), statistics.median(floor), batches


def bare_batch(paths: list[str], out: str) -> int:
    """What a hand-written job does with one batch: read the CSVs, write one Parquet file."""
    import pyarrow as pa
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    table = pa.concat_tables([pcsv.read_csv(p) for p in paths])
    pq.write_table(table, out)
    return table.num_rows


class Sampler(threading.Thread):
    """Peak RSS of this process and of the scheduler, the scheduler's task count, CPU used."""

    def __init__(self, client, scheduler_pid: int):
        super().__init__(daemon=True)
        self.client, self.stop = client, threading.Event()
        self.me, self.scheduler = psutil.Process(), psutil.Process(scheduler_pid)
        self.idle = (self.me.memory_info().rss, self.scheduler.memory_info().rss)
        self.peak = list(self.idle)
        self.tasks = 0
        self.cpu = cpu_seconds(scheduler_pid)

    def run(self) -> None:
        while not self.stop.wait(0.05):
            self.peak[0] = max(self.peak[0], self.me.memory_info().rss)
            self.peak[1] = max(self.peak[1], self.scheduler.memory_info().rss)
            try:
                n = self.client.run_on_scheduler(_task_count)
                self.tasks = max(self.tasks, n)
            except Exception:  # noqa: BLE001 - the cluster is closing
                return

    def result(self) -> dict[str, float]:
        self.stop.set()
        self.join()
        mib = 2**20
        used = cpu_seconds(self.scheduler.pid)
        return {
            "driver_mib": (self.peak[0] - self.idle[0]) / mib,
            "scheduler_mib": (self.peak[1] - self.idle[1]) / mib,
            "scheduler_tasks": self.tasks,
            **{f"cpu_{k}": used[k] - self.cpu[k] for k in used},
        }


WORKERS: list[psutil.Process] = []  # the worker processes, once the cluster is up


def cpu_seconds(scheduler_pid: int) -> dict[str, float]:
    """CPU seconds (user + system) used so far by this process, the scheduler, the workers."""

    def used(processes) -> float:
        return sum(sum(p.cpu_times()[:2]) for p in processes)

    return {
        "driver": used([psutil.Process()]),
        "scheduler": used([psutil.Process(scheduler_pid)]),
        "workers": used(WORKERS),
    }


def _warm() -> None:
    """Import on every worker what both tools use, before anything is timed."""
    import pyarrow.csv  # noqa: F401
    import pyarrow.parquet  # noqa: F401

    from dbatch.tasks import warm_worker

    warm_worker()


def _task_count(dask_scheduler=None) -> int:
    return len(dask_scheduler.tasks)


def run_map(client, folder: Path, batch_files: int, scheduler_pid: int) -> dict[str, float]:
    out = Path(tempfile.mkdtemp(prefix="scale-map-"))
    files = sorted(glob.glob(str(folder / "*.csv")))
    groups = [files[i : i + batch_files] for i in range(0, len(files), batch_files)]
    sampler = Sampler(client, scheduler_pid)
    sampler.start()
    t = time.perf_counter()
    futures = client.map(
        bare_batch, groups, [str(out / f"part-{i}.parquet") for i in range(len(groups))]
    )
    rows = sum(client.gather(futures))
    wall = time.perf_counter() - t
    del futures
    stats = sampler.result()
    shutil.rmtree(out, ignore_errors=True)
    assert rows == 2 * len(files)
    return {"wall": wall, "batches": len(groups), **stats}


class Probe:
    """A run listener: the driver's memory when 10 %, 50 % and 90 % of the batches are committed."""

    MARKS = (0.1, 0.5, 0.9)

    def __init__(self, batches: int, snapshot: bool):
        self.at = [max(1, round(batches * m)) for m in self.MARKS]
        self.committed, self.snapshot = 0, snapshot
        self.notes: list[dict[str, float]] = []
        self.snapshots: list[tracemalloc.Snapshot] = []

    def __call__(self, event) -> None:
        if event.kind.value != "batch_committed":
            return
        self.committed += 1
        if self.committed not in self.at:
            return
        gc.collect()
        self.notes.append(
            {
                "done": self.committed,
                "rss": psutil.Process().memory_info().rss,
                "traced": tracemalloc.get_traced_memory()[0] if tracemalloc.is_tracing() else 0,
                # Not len(gc.get_objects()): the list of every object, while the client's
                # threads run, breaks CPython's reuse of tuples it holds the only reference to.
                "blocks": sys.getallocatedblocks(),
            }
        )
        if self.snapshot and tracemalloc.is_tracing():
            self.snapshots.append(tracemalloc.take_snapshot())

    def growth(self, since: int = 0) -> dict[str, float]:
        """Growth per 1,000 batches done, between note ``since`` and the last."""
        first, last = self.notes[since], self.notes[-1]
        per = 1000 / max(1, last["done"] - first["done"])
        return {k: (last[k] - first[k]) * per for k in ("rss", "traced", "blocks")}


def probe_dbatch(client, folder: Path, batch_files: int, snapshot: int) -> list[Probe]:
    """Two dbatch runs noting the driver's memory as batches are done: RSS alone, then traced.

    tracemalloc makes every allocation bigger, so the RSS of the first run is the one to read.
    """
    files = len(glob.glob(str(folder / "*.csv")))
    probes = []
    for traced in (False, True):
        probe = Probe(-(-files // batch_files), snapshot > 0)
        if traced:
            tracemalloc.start(8 if snapshot else 1)
        try:
            run_dbatch(client, folder, batch_files, None, listeners=[probe])
        finally:
            tracemalloc.stop()
        probes.append(probe)
    return probes


def report_probe(probes: list[Probe], top: int) -> None:
    mib = 2**20
    for probe in probes:
        traced = any(n["traced"] for n in probe.notes)
        notes = ", ".join(
            f"{n['done']:,.0f} done: RSS {n['rss'] / mib:.1f} MiB"
            + (f", traced {n['traced'] / mib:.2f} MiB" if traced else "")
            + f", {n['blocks']:,.0f} blocks"
            for n in probe.notes
        )
        print(f"driver memory as batches are done{' (tracemalloc on)' if traced else ''}: {notes}")
        # From 50 %: the newest finished futures the run keeps for the dashboard (at most
        # executors.dask.KEEP_FINISHED) may still be filling up at 10 %.
        for since, span in ((0, "10-90 %"), (1, "50-90 %")):
            g = probe.growth(since)
            print(
                f"  growth per 1,000 batches done, {span}: RSS {g['rss'] / mib:+.2f} MiB"
                + (f", traced {g['traced'] / mib:+.3f} MiB" if traced else "")
                + f", blocks {g['blocks']:+,.0f}"
            )
    last = probes[-1]
    if top and len(last.snapshots) >= 2:
        for stat in last.snapshots[-1].compare_to(last.snapshots[1], "lineno")[:top]:
            print(f"  {stat}")
    sys.stdout.flush()


def run_dbatch(
    client, folder: Path, batch_files: int, scheduler_pid: int | None, listeners=()
) -> dict[str, float]:
    from dbatch import ByCount, Files, ParquetSink, Pipeline

    root = Path(tempfile.mkdtemp(prefix="scale-dbatch-"))
    pipeline = Pipeline(
        Files(str(folder / "*.csv")),
        ParquetSink(str(root / "out")),
        batching=ByCount(batch_files),
        name="scale",
        workdir=str(root / "work"),
    )
    sampler = Sampler(client, scheduler_pid) if scheduler_pid is not None else None
    if sampler is not None:
        sampler.start()
    t = time.perf_counter()
    result = pipeline.run(client=client, progress=False, listeners=listeners)
    wall = time.perf_counter() - t
    stats = sampler.result() if sampler is not None else {}
    shutil.rmtree(root, ignore_errors=True)
    files = len(glob.glob(str(folder / "*.csv")))
    assert result.status == "succeeded" and result.rows_out == result.rows_in == 2 * files, result
    return {"wall": wall, "batches": result.committed, **stats}


def start_cluster(workers: int):
    """A scheduler and workers, each in its own process (so their memory is their own)."""
    from distributed import Client

    folder = Path(tempfile.mkdtemp(prefix="scale-cluster-"))
    scheduler_file = folder / "scheduler.json"
    env = {**os.environ, "DASK_DISTRIBUTED__WORKER__DAEMON": "False"}
    scheduler = subprocess.Popen(
        [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
         "--port", "0", "--dashboard-address", "127.0.0.1:0", "--scheduler-file", str(scheduler_file)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    while not scheduler_file.exists():
        time.sleep(0.1)
    worker = subprocess.Popen(
        [sys.executable, "-m", "distributed.cli.dask_worker", "--scheduler-file", str(scheduler_file),
         "--nworkers", str(workers), "--nthreads", "1", "--no-dashboard"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    client = Client(scheduler_file=str(scheduler_file))
    client.wait_for_workers(workers, timeout=120)
    pids = set(client.run(os.getpid).values())
    WORKERS[:] = [psutil.Process(pid) for pid in pids]
    return client, scheduler, worker


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", default="1000,10000")
    parser.add_argument("--batch-files", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=1, help="rounds of running each tool")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--probe", action="store_true", help="one more dbatch run noting its memory as it goes"
    )
    parser.add_argument(
        "--snapshot", type=int, default=0, metavar="N", help="with --probe: the N lines grown most"
    )
    parser.add_argument("--skip-map", action="store_true", help="time dbatch alone")
    parser.add_argument("--probe-batch-files", type=int, help="files per batch of the probe runs")
    args = parser.parse_args()
    sizes = [int(n) for n in args.files.split(",")]
    # SIGTERM ends the benchmark through the finally below, which stops the cluster.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    client, scheduler, worker = start_cluster(args.workers)
    try:
        client.run(_warm)
        rows = []
        for n in sizes:
            folder = make_files(n)
            planned, floor, batches = plan_time(folder, args.batch_files, repeat=3)
            runs: dict[str, list[dict[str, float]]] = {"client.map": [], "dbatch": []}
            for _ in range(args.repeat):
                if not args.skip_map:
                    runs["client.map"].append(
                        run_map(client, folder, args.batch_files, scheduler.pid)
                    )
                runs["dbatch"].append(run_dbatch(client, folder, args.batch_files, scheduler.pid))
            rows.append((n, batches, planned, floor, {k: v for k, v in runs.items() if v}))
            report(rows[-1])
            if args.probe or args.snapshot:
                per = args.probe_batch_files or args.batch_files
                report_probe(probe_dbatch(client, folder, per, args.snapshot), args.snapshot)
    finally:
        client.close()
        for proc in (worker, scheduler):
            proc.terminate()
            proc.wait(30)


def report(row) -> None:
    n, batches, planned, floor, runs = row
    print(
        f"\n{n:,} files, {batches:,} batches: plan {planned:.2f} s = {planned / n * 1e6:.1f} us/file "
        f"(glob + stat alone {floor / n * 1e6:.1f} us/file, x{planned / floor:.2f})"
    )
    print(
        "| tool | wall (s) | ms per batch | x client.map | CPU ms per batch: driver | scheduler "
        "| workers | all | x client.map | driver +MiB | scheduler +MiB | scheduler tasks, peak |"
    )
    print("| --- |" + " ---: |" * 12)
    baseline = runs.get("client.map") or runs["dbatch"]
    base = statistics.median(r["wall"] for r in baseline)
    cpu_base = statistics.median(_cpu(r) for r in baseline)
    for tool, results in runs.items():
        wall = statistics.median(r["wall"] for r in results)
        worst = {
            k: max(r[k] for r in results)
            for k in ("driver_mib", "scheduler_mib", "scheduler_tasks")
        }
        cpu = {k: statistics.median(r[f"cpu_{k}"] for r in results) for k in CPU_PARTS}
        total = statistics.median(_cpu(r) for r in results)
        print(
            f"| {tool} | {wall:.2f} | {wall / batches * 1e3:.1f} | {wall / base:.2f} | "
            + " | ".join(f"{cpu[k] / batches * 1e3:.2f}" for k in CPU_PARTS)
            + f" | {total / batches * 1e3:.2f} | {total / cpu_base:.2f} | "
            f"{worst['driver_mib']:.0f} | {worst['scheduler_mib']:.0f} | {worst['scheduler_tasks']:,.0f} |"
        )
    sys.stdout.flush()


CPU_PARTS = ("driver", "scheduler", "workers")


def _cpu(result: dict[str, float]) -> float:
    return sum(result[f"cpu_{k}"] for k in CPU_PARTS)


if __name__ == "__main__":
    main()
