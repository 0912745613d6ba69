"""Small jobs: what a run costs beyond its rows.

Three measurements, each as medians of ``--repeat`` rounds in one process:

- **small job**: about 300,000 rows in 12 CSV files, one group-by, written as
  Parquet; dbatch on a LocalCluster of 2 worker processes x 1 thread that is
  already running, against DuckDB (2 threads) reading the same files;
- **fixed cost per run**: the same pipeline over one file of ten rows, on the
  running cluster: what every run costs whatever its size; next to it, what one
  task that does nothing takes on that cluster from ``submit`` to its result
  (Dask's own latency, which a run pays at least three times in a row: the
  preflight, the batches, the reduce);
- **bookkeeping per batch**: ``--tiny`` files of one row, one batch each, run
  in this process (``LocalExecutor``): the run's time minus the time the batches
  themselves took (``BatchResult.duration``), per batch: planning, fingerprints,
  reconcile, the commit rename, the ledger, events.

Usage::

    python benchmarks/small.py                 # all three (10,000 tiny files)
    python benchmarks/small.py --tiny 2000 --repeat 3
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import time
import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

DATA = Path(__file__).resolve().parent / "data" / "small"
FILES, ROWS = 12, 25_000
SCHEMA = {"id": "int64", "account": "string", "amount": "float64", "status": "string"}


def generate(root: Path, tiny: int) -> dict[str, Path]:
    """The small job's 12 files, the one-file job and ``tiny`` one-row files (kept once written)."""
    small, one, many = root / "csv-12", root / "csv-1", root / f"tiny-{tiny}"
    for folder in (small, one, many):
        folder.mkdir(parents=True, exist_ok=True)
    for i in range(FILES):
        target = small / f"part-{i:02d}.csv"
        if not target.exists():
            _write(target, ROWS, seed=i)
    if not (one / "part-00.csv").exists():
        _write(one / "part-00.csv", 10, seed=99)
    existing = len(list(many.glob("*.csv")))
    for i in range(existing, tiny):
        (many / f"t-{i:05d}.csv").write_text(f"id,account,amount,status\n{i},A{i % 7},1.5,ok\n")
    return {"small": small, "one": one, "tiny": many}


def _write(path: Path, rows: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    table = pa.table(
        {
            "id": np.arange(rows) + seed * rows,
            "account": pa.array([f"A{n:04d}" for n in rng.integers(0, 2_000, rows)]),
            "amount": np.round(rng.lognormal(3, 1, rows), 2),
            "status": pa.array(rng.choice(["ok", "void"], rows, p=[0.9, 0.1])),
        }
    )
    pacsv.write_csv(table, path)


def pipeline(folder: Path, out: Path, batch_files: int = 4, name: str = "small"):
    from dbatch import Aggregate, ByCount, Files, Filter, ParquetSink, Pipeline

    return Pipeline(
        Files(str(folder / "*.csv"), schema=SCHEMA),
        ParquetSink(str(out / "out")),
        steps=[Filter("status = 'ok'")],
        aggregate=Aggregate(
            by="account", metrics={"total": "sum(amount)", "n": "count(*)"}, sort=False
        ),
        batching=ByCount(batch_files),
        name=name,
        workdir=str(out / "work"),
    )


def tiny_pipeline(folder: Path, out: Path):
    from dbatch import ByCount, Files, ParquetSink, Pipeline

    return Pipeline(
        Files(str(folder / "*.csv"), schema=SCHEMA),
        ParquetSink(str(out / "out")),
        batching=ByCount(1),
        name="tiny",
        workdir=str(out / "work"),
    )


def duckdb_job(folder: Path, out: Path) -> None:
    import duckdb

    con = duckdb.connect()
    con.execute("SET threads = 2")
    out.mkdir(parents=True, exist_ok=True)
    con.execute(
        f"""COPY (SELECT account, SUM(amount) AS total, COUNT(*) AS n
                  FROM read_csv('{folder}/*.csv', header = true, columns = {{
                      'id': 'BIGINT', 'account': 'VARCHAR', 'amount': 'DOUBLE',
                      'status': 'VARCHAR'}})
                  WHERE status = 'ok' GROUP BY account)
            TO '{out}/out.parquet' (FORMAT parquet)"""
    )
    con.close()


def _timed(fn) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--tiny", type=int, default=10_000, help="one-row files, one batch each")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    folders = generate(args.data, args.tiny)
    work = args.data / "work"
    from distributed import Client, LocalCluster

    import dbatch.runner  # noqa: F401  (the driver's part of a run, as after a first run)
    from dbatch.executors import LocalExecutor
    from dbatch.executors.workers import warm_in_task_thread

    cluster = LocalCluster(
        n_workers=2, threads_per_worker=1, host="127.0.0.1", dashboard_address="127.0.0.1:0"
    )
    client = Client(cluster)
    client.run(warm_in_task_thread, block=True)
    rows: dict[str, list[float]] = {"dbatch": [], "duckdb": [], "fixed": [], "book": []}
    rows["noop"] = _noop_round_trips(client, 20)
    try:
        for _ in range(args.repeat):
            for what in ("dbatch", "duckdb", "fixed"):
                out = work / f"{what}-{uuid.uuid4().hex[:8]}"
                if what == "duckdb":
                    wall, _ = _timed(lambda out=out: duckdb_job(folders["small"], out))
                else:
                    folder = folders["small" if what == "dbatch" else "one"]
                    p = pipeline(folder, out)
                    wall, _ = _timed(lambda p=p: p.run(client=client, progress=False))
                rows[what].append(wall)
                shutil.rmtree(out, ignore_errors=True)
        out = work / f"tiny-{uuid.uuid4().hex[:8]}"
        p = tiny_pipeline(folders["tiny"], out)
        wall, _ = _timed(lambda: _run_tiny(p, LocalExecutor(), rows))
        shutil.rmtree(out, ignore_errors=True)
    finally:
        client.close()
        cluster.close()
    report(rows, args)


def _noop(i: int) -> int:
    return i


def _noop_round_trips(client, n: int) -> list[float]:
    """Seconds from ``submit`` to the result of a task that does nothing, ``n`` times."""
    times = []
    for i in range(n):
        started = time.perf_counter()
        client.submit(_noop, i, pure=False).result()
        times.append(time.perf_counter() - started)
        time.sleep(0.02)  # as between a run's steps: the workers are idle when it comes
    return times


def _run_tiny(p, executor, rows: dict[str, list[float]]) -> None:
    started = time.perf_counter()
    result = p.run(executor=executor, progress=False)
    total = time.perf_counter() - started
    inside = sum(float(b.get("duration") or 0) for b in result.batches)
    batches = result.committed
    rows["book"] = [(total - inside) / max(batches, 1)]
    rows["book_total"] = [total]
    rows["book_batches"] = [batches]


def report(rows: dict[str, list[float]], args) -> None:
    med = {k: statistics.median(v) for k, v in rows.items() if v}
    ratio = med["dbatch"] / med["duckdb"]
    print(f"small job, {FILES} CSV files x {ROWS:,} rows, {args.repeat} rounds (medians):")
    print("| what | wall (s) | x DuckDB |")
    print("| --- | ---: | ---: |")
    print(f"| dbatch, LocalCluster 2x1, running | {med['dbatch']:.3f} | {ratio:.2f} |")
    print(f"| DuckDB, 2 threads | {med['duckdb']:.3f} | 1.00 |")
    print(f"| dbatch, one file of 10 rows (fixed cost per run) | {med['fixed']:.3f} | |")
    print(f"| one Dask task that does nothing, submit to result | {med['noop']:.3f} | |")
    print(
        f"bookkeeping per batch: {med['book'] * 1000:.1f} ms "
        f"({int(med['book_batches']):,} one-row batches in {med['book_total']:.1f} s, LocalExecutor)"
    )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
