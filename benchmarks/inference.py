"""Batch inference: rows per second scoring Parquet files with scikit-learn models.

Compares, on the same data and the same 2-worker LocalCluster (1 thread each):

- dbatch: the ``Predict`` step, the model given as a file path (each worker loads it
  once); for the large model also as an object in memory (sent once per worker);
- pandas in one process: read a file, score it, write it, next file (with 1 thread,
  and for the small model also with all threads);
- hand-written ``dask.dataframe``: ``read_parquet().map_partitions(score, model).to_parquet()``;
  for the large model also with the model scattered to the workers first.

Every timed run on Dask gets a new cluster (its libraries imported before the clock
starts), so no run inherits the memory or the loaded model of the one before; this
process imports every way's libraries (scikit-learn, distributed, dbatch's driver)
before the first clock starts, so that no way pays them.

Two models: a small histogram gradient-boosting classifier and a large (about
100 MB pickled) extra-trees regressor. For each run it records the bytes the
workers read over TCP (task messages, scattered data, transfers between workers),
the bytes the client sent to the scheduler, how often each worker loaded the model,
and the CPU seconds every process used. On a machine shared with other work, the CPU
times also give the speed-up two idle cores would allow: pandas' CPU time over the
longer of the busiest process's CPU time and half the total.

Usage::

    python benchmarks/inference.py [--rows 20000000] [--repeat 3] [--models small,large]

The data (Parquet, 500,000 rows a file) and the trained models are written once to
``benchmarks/data/inference/`` and reused.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["main"]

FEATURES = [f"f{i}" for i in range(8)]
ROWS_PER_FILE = 500_000
DATA = Path(__file__).resolve().parent / "data" / "inference"


# -- data and models ---------------------------------------------------------------------


def synthetic(n: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    """``n`` rows of 8 features and a non-linear signal behind the labels."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, len(FEATURES)))
    signal = (
        x[:, 0] * x[:, 1]
        + np.sin(2 * x[:, 2])
        + x[:, 3] ** 2
        - 1
        + 0.5 * x[:, 4]
        - 0.3 * x[:, 5] * x[:, 6]
    )
    return pd.DataFrame(x, columns=FEATURES), signal + rng.normal(scale=0.5, size=n)


def write_data(rows: int, per_file: int = ROWS_PER_FILE) -> Path:
    """Parquet files of ``per_file`` rows (an ``id`` and the features); reused if present."""
    folder = DATA / f"rows-{rows}"
    marker = folder / "_done.json"
    if marker.exists():
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    start = time.perf_counter()
    for i, lo in enumerate(range(0, rows, per_file)):
        n = min(per_file, rows - lo)
        frame, _ = synthetic(n, seed=1_000 + i)
        frame.insert(0, "id", np.arange(lo, lo + n, dtype=np.int64))
        frame.to_parquet(folder / f"part-{i:05d}.parquet", index=False)
    marker.write_text(json.dumps({"rows": rows, "seconds": time.perf_counter() - start}))
    print(f"wrote {rows:,} rows to {folder} in {time.perf_counter() - start:.0f} s", flush=True)
    return folder


def train_models() -> dict[str, dict]:
    """The two models, trained once and saved with joblib."""
    import joblib
    from sklearn.ensemble import ExtraTreesRegressor, HistGradientBoostingClassifier

    DATA.mkdir(parents=True, exist_ok=True)
    specs = {
        "small": {
            "path": DATA / "hist-gradient-boosting.joblib",
            "method": "predict_proba",
            "describe": "HistGradientBoostingClassifier(max_iter=50, max_leaf_nodes=15)",
        },
        "large": {
            "path": DATA / "extra-trees.joblib",
            "method": "predict",
            "describe": "ExtraTreesRegressor(n_estimators=3), fully grown",
        },
    }
    if not specs["small"]["path"].exists():
        x, signal = synthetic(200_000, seed=1)
        model = HistGradientBoostingClassifier(max_iter=50, max_leaf_nodes=15, random_state=0)
        joblib.dump(model.fit(x, (signal > 0).astype(int)), specs["small"]["path"])
    if not specs["large"]["path"].exists():
        x, signal = synthetic(240_000, seed=2)
        model = ExtraTreesRegressor(n_estimators=3, max_features=0.5, random_state=0, n_jobs=2)
        model = model.fit(x, signal)
        model.n_jobs = None
        joblib.dump(model, specs["large"]["path"])
    for spec in specs.values():
        spec["bytes"] = spec["path"].stat().st_size
    return specs


# -- the three ways ------------------------------------------------------------------------


def score_frame(frame: pd.DataFrame, model, method: str) -> pd.DataFrame:
    pred = getattr(model, method)(frame[FEATURES])
    return frame.assign(score=pred[:, 1] if pred.ndim == 2 else pred)


def run_pandas(files: list[Path], model_path: Path, method: str, out: Path, threads: int | None):
    """One process: load the model, then read, score and write each file in turn."""
    import joblib
    from threadpoolctl import threadpool_limits

    with threadpool_limits(threads):
        model = joblib.load(model_path)
        for f in files:
            score_frame(pd.read_parquet(f), model, method).to_parquet(out / f.name, index=False)
    return out


def run_dask(client, folder: Path, model_path: Path, method: str, out: Path, scatter: bool):
    """What one writes by hand: the model passed to map_partitions, as is or scattered first."""
    import dask.dataframe as dd
    import joblib

    model = joblib.load(model_path)
    if scatter:
        model = client.scatter(model, broadcast=True)
    ddf = dd.read_parquet(str(folder / "*.parquet"))
    meta = ddf._meta.assign(score=np.float64())
    scored = ddf.map_partitions(score_frame, model, method, meta=meta)
    scored.to_parquet(str(out), write_index=False, compute=True)
    if scatter:
        model.release()
    return out


def run_dbatch(
    client, folder: Path, model_path: Path, method: str, out: Path, tag: str, in_memory=False
):
    """The Predict step; ``version=tag`` makes each repeat load the model afresh."""
    import joblib

    from dbatch import ByCount, Files, ParquetSink, Pipeline, Predict

    model = joblib.load(model_path) if in_memory else str(model_path)

    work = Path(tempfile.mkdtemp(prefix="dbatch-bench-", dir=DATA))
    try:
        pipeline = Pipeline(
            source=Files(str(folder / "*.parquet")),
            sink=ParquetSink(str(out)),
            steps=[Predict(model, FEATURES, output="score", method=method, version=tag)],
            batching=ByCount(1),
            name="inference",
            workdir=str(work),
        )
        result = pipeline.run(client=client, progress=False)
        if result.status != "succeeded":
            raise RuntimeError(f"dbatch run did not succeed: {result}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out


# -- measuring -----------------------------------------------------------------------------


def _warm_imports() -> bool:
    import dask.dataframe  # noqa: F401
    import duckdb  # noqa: F401
    import pyarrow.parquet  # noqa: F401
    import sklearn.ensemble  # noqa: F401

    import dbatch.steps.predict  # noqa: F401

    return True


def _warm_driver() -> None:
    """Import what this process runs with, before any clock starts: every way alike.

    The model's library for pandas, the cluster's for Dask, dbatch's driver (ledger,
    runner, executor) for dbatch; otherwise the first way of each kind pays its imports.
    """
    _warm_imports()
    import distributed  # noqa: F401
    import joblib  # noqa: F401
    import threadpoolctl  # noqa: F401

    import dbatch.executors.dask  # noqa: F401
    import dbatch.pipeline  # noqa: F401
    import dbatch.runner  # noqa: F401
    import dbatch.sinks.files  # noqa: F401
    import dbatch.sources.files  # noqa: F401


def _received_bytes(dask_worker=None) -> int:
    """Bytes this process has read from TCP since the counter was installed in it.

    Wraps ``distributed.comm.tcp.from_frames``, which every message read over TCP goes
    through: task messages, scattered data and transfers from other workers alike.
    """
    import distributed.comm.tcp as tcp
    from distributed.utils import nbytes

    if not hasattr(tcp, "_bench_received"):
        original = tcp.from_frames
        tcp._bench_received = [0]

        async def counting(frames, *args, **kwargs):
            tcp._bench_received[0] += sum(nbytes(f) for f in frames)
            return await original(frames, *args, **kwargs)

        tcp.from_frames = counting
    return tcp._bench_received[0]


def _cpu_seconds(dask_worker=None) -> float:
    import psutil

    t = psutil.Process().cpu_times()
    return t.user + t.system


def cpu(client) -> dict[str, float]:
    """CPU seconds used so far by this process (client and scheduler) and by each worker."""
    used = {"main": _cpu_seconds()}
    if client is not None:
        used.update(client.run(_cpu_seconds))
    return used


def traffic(client) -> dict[str, int]:
    """Bytes so far: read by the workers from TCP, and sent by this client to the scheduler."""
    if client is None:
        return {"to_workers": 0, "client_to_scheduler": 0}
    return {
        "to_workers": sum(client.run(_received_bytes).values()),
        "client_to_scheduler": client.scheduler_comm.byte_count,
    }


def model_loads(client, model_path: Path, tag: str) -> list[int]:
    """How many times each worker loaded this model file in the run tagged ``tag``."""
    from dbatch.steps.predict import model_cache

    counts = client.run(model_cache)
    return [
        sum(n for k, n in c.items() if str(model_path) in k and k.endswith(f":{tag}"))
        for c in counts.values()
    ]


def checksum(folder: Path) -> float:
    return float(pd.read_parquet(folder, columns=["score"])["score"].sum())


def _ways(folder: Path, files: list[Path], name: str, spec: dict) -> dict:
    """Each way as ``fn(out_folder, repeat, client) -> folder holding its output``."""
    path, method = spec["path"], spec["method"]
    ways = {
        "pandas, 1 process, 1 thread": lambda out, rep, client: run_pandas(
            files, path, method, out, threads=1
        ),
        "dask map_partitions": lambda out, rep, client: run_dask(
            client, folder, path, method, out, scatter=False
        ),
        "dbatch Predict": lambda out, rep, client: run_dbatch(
            client, folder, path, method, out / "result", tag=f"{name}-{rep}"
        ),
    }
    if name == "large":  # what an expert does with a big model: scatter it once
        ways["dask map_partitions, model scattered"] = lambda out, rep, client: run_dask(
            client, folder, path, method, out, scatter=True
        )
        ways["dbatch Predict, model object"] = lambda out, rep, client: run_dbatch(
            client, folder, path, method, out / "result", tag=f"obj-{rep}", in_memory=True
        )
    if name == "small":  # this model can use both cores in one process
        ways["pandas, 1 process, all threads"] = lambda out, rep, client: run_pandas(
            files, path, method, out, threads=None
        )
    return ways


@contextlib.contextmanager
def fresh_cluster():
    """A new 2-worker LocalCluster (1 thread each) with the libraries imported on its workers."""
    from distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address="127.0.0.1:0",
            worker_dashboard_address=None,
        ) as cluster,
        Client(cluster) as client,
    ):
        client.run(_warm_imports)
        yield client


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=20_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--models", default="small,large")
    args = parser.parse_args(argv)

    import dask

    folder = write_data(args.rows)
    files = sorted(folder.glob("*.parquet"))
    models = train_models()
    _warm_driver()
    print(
        f"{len(files)} files, {args.rows:,} rows; load average {os.getloadavg()[0]:.1f}", flush=True
    )

    dask.config.set({"distributed.admin.large-graph-warning-threshold": "10GB"})
    rows = {}
    loads = {}
    shutil.rmtree(DATA / "out", ignore_errors=True)
    for way in ("pandas", "dask", "dbatch"):
        (DATA / "out" / way).mkdir(parents=True)
    for name in args.models.split(","):
        spec = models[name]
        ways = _ways(folder, files, name, spec)
        times = {w: [] for w in ways}
        moved = {w: [] for w in ways}
        cpus = {w: [] for w in ways}
        sums = {}
        for rep in range(args.repeat):
            for way, fn in ways.items():  # alternate, so load on the machine hits each way
                out = DATA / "out" / way.split(",")[0].split()[0]
                shutil.rmtree(out)
                out.mkdir(parents=True)
                with contextlib.ExitStack() as stack:
                    client = (
                        None if way.startswith("pandas") else stack.enter_context(fresh_cluster())
                    )
                    before, cpu_before = traffic(client), cpu(client)
                    start = time.perf_counter()
                    written = fn(out, rep, client)
                    times[way].append(time.perf_counter() - start)
                    after, cpu_after = traffic(client), cpu(client)
                    used = [cpu_after[k] - cpu_before[k] for k in cpu_after]
                    cpus[way].append((sum(used), max(used)))
                    if way == "dbatch Predict":
                        loads[name] = model_loads(client, spec["path"], tag=f"{name}-{rep}")
                moved[way].append({k: after[k] - before[k] for k in after})
                sums[way] = checksum(written)
                print(
                    f"  {name:5s} {way:38s} run {rep + 1}: {times[way][-1]:7.1f} s  "
                    f"CPU {cpus[way][-1][0]:6.1f} s (busiest process {cpus[way][-1][1]:6.1f} s)  "
                    f"load {os.getloadavg()[0]:.1f}",
                    flush=True,
                )
        ref = sums["pandas, 1 process, 1 thread"]
        for way, total in sums.items():
            if not np.isclose(total, ref, rtol=1e-9):
                raise AssertionError(f"{way} scored differently: {total} != {ref}")
        base = args.rows / statistics.median(times["pandas, 1 process, 1 thread"])
        base_cpu = statistics.median(c[0] for c in cpus["pandas, 1 process, 1 thread"])
        rows[name] = {
            "model": spec["describe"],
            "model_bytes": spec["bytes"],
            "loads_per_worker": loads.get(name),
            "load_average_at_end": os.getloadavg()[0],
            "ways": {
                way: {
                    "median_s": statistics.median(t),
                    "rows_per_s": args.rows / statistics.median(t),
                    "vs_pandas_1_thread": args.rows / statistics.median(t) / base,
                    "bytes": moved[way][-1],
                    "runs_s": t,
                    "cpu_s": statistics.median(c[0] for c in cpus[way]),
                    "busiest_process_cpu_s": statistics.median(c[1] for c in cpus[way]),
                    # What the CPU time allows on two idle cores: the busiest process, or
                    # the total spread over both cores, whichever is longer.
                    "idle_machine_estimate_vs_pandas_1_thread": base_cpu
                    / max(
                        statistics.median(c[1] for c in cpus[way]),
                        statistics.median(c[0] for c in cpus[way]) / 2,
                    ),
                }
                for way, t in times.items()
            },
        }
    print_table(rows, args)
    out = DATA / f"results-{args.rows}.json"
    out.write_text(json.dumps(rows, indent=2))
    print(f"\nresults: {out}")
    return 0


def _mb(n: int) -> str:
    return f"{n / 1e6:,.1f} MB" if n >= 100_000 else f"{n / 1e3:,.1f} kB"


def print_table(rows: dict, args) -> None:
    print(f"\n{args.rows:,} rows, median of {args.repeat} runs\n")
    print(
        "| model | way | rows/s | × pandas 1 thread | CPU s (busiest process) "
        "| × from CPU time | bytes read by the workers | client→scheduler |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, r in rows.items():
        for way, w in r["ways"].items():
            b = w["bytes"]
            moved = "–" if way.startswith("pandas") else _mb(b["to_workers"])
            graph = "–" if way.startswith("pandas") else _mb(b["client_to_scheduler"])
            print(
                f"| {name} ({_mb(r['model_bytes'])}) | {way} | {w['rows_per_s']:,.0f} | "
                f"{w['vs_pandas_1_thread']:.2f} | {w['cpu_s']:.0f} ({w['busiest_process_cpu_s']:.0f}) | "
                f"{w['idle_machine_estimate_vs_pandas_1_thread']:.2f} | {moved} | {graph} |"
            )
    for name, r in rows.items():
        print(
            f"\n{name}: {r['model']}; dbatch loaded it {r['loads_per_worker']} times per worker "
            "in one run"
        )


if __name__ == "__main__":
    sys.exit(main())
