"""The reference ETL job through dbatch, dask.dataframe, pandas, DuckDB and Polars: time and memory.

Usage::

    python benchmarks/etl.py                       # everything: Parquet, CSV, memory 1x vs 4x
    python benchmarks/etl.py --format parquet --repeat 5 --scaling 0
    python benchmarks/etl.py --tools dbatch,dbatch-drop,duckdb --format parquet

The job: read 64 files of transactions, drop malformed rows, keep
``status = 'settled'``, derive the day and the amount in USD through a join
with an FX-rate table on (day, currency), group by account x day (sum, count,
mean) and write Parquet.

Each run of each tool is a fresh Python process, prepared first (imports; for
the "warm" Dask cases a LocalCluster of 2 worker processes x 1 thread, already
started), then timed from "go" to the end of the job. A thread of this process
samples the resident memory of that process and all its descendants (the
LocalCluster's nannies and workers included) every 20 ms; "peak" is the
largest sum seen while the job ran, "idle" the sum just before it started.
"peak PSS" sums each process's proportional set size instead, sampled every
0.2 s (reading it costs about 0.5 ms a process): a page that processes share
(a forked worker's libraries, say) counts once in it, and as often as it is
mapped in the RSS sum.
Tools alternate within each repetition; the tables show medians. Every tool's
output is read back and compared with DuckDB's: the number of groups, of rows,
and the sums of totals and means.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from generate import CURRENCIES, DATA, data_dir, generate  # noqa: E402

TOOLS = ("dbatch", "dbatch-drop", "dbatch-cold", "dask", "pandas", "duckdb", "polars")
LABELS = {
    "dbatch": "dbatch, LocalCluster 2x1, running",
    "dbatch-drop": "dbatch, the same, bad_input: drop",
    "dbatch-cold": "dbatch run job.yaml (cold, CLI)",
    "dask": "dask.dataframe, LocalCluster 2x1, running",
    "pandas": "pandas, file by file",
    "duckdb": "DuckDB, 2 threads",
    "polars": "Polars",
}
BATCH_FILES = 8
SCHEMA = {
    "txn_id": "int64",
    "ts": "timestamp",
    "account": {"type": "string", "not_null": True},
    "currency": {"type": "string", "allowed": CURRENCIES},
    "amount": {"type": "float64", "not_null": True},
    "status": "string",
}
_IN = ", ".join(f"'{c}'" for c in CURRENCIES)
VALID = f"account IS NOT NULL AND amount IS NOT NULL AND currency IN ({_IN})"


# -- the job, once per tool (runs in the child process) ------------------------------


def _files(fmt: str, scale: int, root: Path) -> list[str]:
    return sorted(str(p) for p in data_dir(fmt, scale, root).glob(f"*.{fmt}"))


def _cluster():
    from distributed import Client, LocalCluster

    cluster = LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address="127.0.0.1:0",
        worker_dashboard_address=None,
    )
    return cluster, Client(cluster)


def _dbatch_pipeline(
    fmt: str,
    files_glob: str,
    fx: str,
    out: Path,
    batch_files: int = BATCH_FILES,
    buckets: int | None = None,
    bad_input: str = "quarantine",
):
    from dbatch import (
        Aggregate,
        ByCount,
        Derive,
        Enrich,
        Files,
        Filter,
        ParquetSink,
        Pipeline,
    )

    return Pipeline(
        source=Files(files_glob, format=fmt, schema=SCHEMA),
        steps=[
            Filter("status = 'settled'"),
            Derive({"day": "CAST(ts AS DATE)"}),
            Enrich(fx, on=["day", "currency"], columns=["rate_to_usd"], unmatched="quarantine"),
            Derive({"amount_usd": "amount * rate_to_usd"}),
        ],
        aggregate=Aggregate(
            by=["account", "day"],
            metrics={"total": "sum(amount_usd)", "n": "count(*)", "mean": "mean(amount_usd)"},
            buckets=buckets,  # default: one per planned batch (4 to 32, at most one per 16 MiB)
            sort=False,  # like the other tools: groups in no particular order
        ),
        sink=ParquetSink(str(out / "daily")),
        batching=ByCount(batch_files),
        name="etl",
        workdir=str(out / "work"),
        bad_input=bad_input,  # quarantine: keep each malformed row and its reason; drop: count it
    )


_JOB_YAML = """\
name: etl
source:
  type: files
  path: {glob}
  format: {fmt}
  schema:
    txn_id: int64
    ts: timestamp
    account: {{type: string, not_null: true}}
    currency: {{type: string, allowed: [{currencies}]}}
    amount: {{type: float64, not_null: true}}
    status: string
batching:
  count: {batch_files}
steps:
  - filter: "status = 'settled'"
  - derive: {{day: "CAST(ts AS DATE)"}}
  - enrich: {{lookup: {fx}, on: [day, currency], columns: [rate_to_usd], unmatched: quarantine}}
  - derive: {{amount_usd: "amount * rate_to_usd"}}
aggregate:
  by: [account, day]
  metrics: {{total: sum(amount_usd), n: count(*), mean: mean(amount_usd)}}
  sort: false{buckets}
sink:
  type: parquet
  path: {out}/daily
workdir: {out}/work
"""


class Job:
    """One tool's run: ``prepare`` (untimed), ``run`` (timed), ``check`` (untimed)."""

    def __init__(
        self,
        tool: str,
        fmt: str,
        scale: int,
        root: Path,
        out: Path,
        batch_files: int = BATCH_FILES,
        buckets: int | None = None,
    ):
        self.tool, self.fmt, self.scale, self.root, self.out = tool, fmt, scale, root, out
        self.batch_files, self.buckets = batch_files, buckets
        self.files = _files(fmt, scale, root)
        self.glob = str(data_dir(fmt, scale, root) / f"*.{fmt}")
        self.fx = str(root / "fx_rates.csv")
        self.output = out / "daily"
        self.info: dict = {}
        self.client = self.cluster = None

    def prepare(self) -> None:
        getattr(self, "_prepare_" + self.tool.replace("-", "_"), lambda: None)()

    def run(self) -> None:
        getattr(self, "_run_" + self.tool.replace("-", "_"))()

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
            self.cluster.close()

    # dbatch ------------------------------------------------------------------------

    def _prepare_dbatch(self) -> None:
        import dbatch.runner  # noqa: F401  (the driver's part of a run, as after a first run)
        from dbatch.executors.workers import warm_in_task_thread

        self.cluster, self.client = _cluster()
        self.client.run(warm_in_task_thread, block=True)

    def _run_dbatch(self, bad_input: str = "quarantine") -> None:
        pipeline = _dbatch_pipeline(
            self.fmt, self.glob, self.fx, self.out, self.batch_files, self.buckets, bad_input
        )
        result = pipeline.run(client=self.client, progress=False)
        self._dbatch_result(result.to_dict())

    _prepare_dbatch_drop = _prepare_dbatch

    def _run_dbatch_drop(self) -> None:
        self._run_dbatch("drop")

    def _prepare_dbatch_cold(self) -> None:
        self.job_file = self.out / "job.yaml"
        self.job_file.write_text(
            _JOB_YAML.format(
                glob=self.glob,
                fmt=self.fmt,
                currencies=", ".join(CURRENCIES),
                batch_files=self.batch_files,
                buckets=f"\n  buckets: {self.buckets}" if self.buckets else "",
                fx=self.fx,
                out=self.out,
            )
        )
        # The interpreter running the benchmark, not a `dbatch` found on PATH: a fresh
        # virtual environment's bin folder need not be on it.
        self.exe = [sys.executable, "-m", "dbatch"]

    def _run_dbatch_cold(self) -> None:
        proc = subprocess.run(
            [*self.exe, "run", str(self.job_file), "--json", "--workers", "2"],
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"dbatch run failed:\n{proc.stdout}\n{proc.stderr}")
        self._dbatch_result(json.loads(proc.stdout.strip().splitlines()[-1]))

    def _dbatch_result(self, r: dict) -> None:
        if r["status"] == "failed":
            raise RuntimeError(f"dbatch run failed: {r['message']}")
        self.info = {k: r[k] for k in ("rows_in", "rows_out", "rows_filtered", "rows_quarantined")}
        self.info["accounted"] = r["rows_in"] == (
            r["rows_out"] + r["rows_filtered"] + r["rows_quarantined"]
        )

    # dask.dataframe ------------------------------------------------------------------

    def _prepare_dask(self) -> None:
        import dask.dataframe  # noqa: F401

        self.cluster, self.client = _cluster()

        def warm():
            import importlib

            for module in ("dask.dataframe", "pyarrow.parquet"):
                importlib.import_module(module)

        self.client.run(warm)

    def _run_dask(self) -> None:
        import dask.dataframe as dd

        cols = ["ts", "account", "currency", "amount", "status"]
        if self.fmt == "parquet":
            df = dd.read_parquet(self.files, columns=cols)
        else:
            df = dd.read_csv(
                self.files,
                usecols=cols,
                dtype={"account": "string", "currency": "string", "status": "string"},
                parse_dates=["ts"],
                on_bad_lines="skip",
                na_values=["n/a"],
            )
            df["amount"] = df["amount"].astype("float64")
        fx = _fx_pandas(self.root)
        df = df[
            df.account.notnull()
            & df.amount.notnull()
            & df.currency.isin(CURRENCIES)
            & (df.status == "settled")
        ]
        df = df.assign(day=df.ts.dt.floor("D"))
        df = df.merge(fx, on=["day", "currency"], how="inner")
        df = df.assign(amount_usd=df.amount * df.rate_to_usd)
        out = df.groupby(["account", "day"]).amount_usd.agg(["sum", "count", "mean"])
        out = out.rename(columns={"sum": "total", "count": "n"}).reset_index()
        out.to_parquet(str(self.output), write_index=False)

    # pandas ----------------------------------------------------------------------------

    def _run_pandas(self) -> None:
        import pandas as pd

        fx = _fx_pandas(self.root)
        partials = []
        for f in self.files:
            if self.fmt == "parquet":
                df = pd.read_parquet(f, columns=["ts", "account", "currency", "amount", "status"])
            else:
                df = pd.read_csv(
                    f,
                    usecols=["ts", "account", "currency", "amount", "status"],
                    dtype={"amount": "float64"},
                    parse_dates=["ts"],
                    on_bad_lines="skip",
                )
            df = df[
                df.account.notna()
                & df.amount.notna()
                & df.currency.isin(CURRENCIES)
                & (df.status == "settled")
            ]
            df = df.assign(day=df.ts.dt.floor("D")).merge(fx, on=["day", "currency"])
            df["amount_usd"] = df.amount * df.rate_to_usd
            partials.append(
                df.groupby(["account", "day"], sort=False)
                .amount_usd.agg(["sum", "count"])
                .reset_index()
            )
        both = pd.concat(partials, ignore_index=True)
        out = both.groupby(["account", "day"], sort=False)[["sum", "count"]].sum().reset_index()
        out = out.rename(columns={"sum": "total", "count": "n"})
        out["mean"] = out.total / out.n
        self.output.mkdir(parents=True)
        out.to_parquet(self.output / "part-0.parquet", index=False)

    # DuckDB ----------------------------------------------------------------------------

    def _run_duckdb(self) -> None:
        import duckdb

        con = duckdb.connect(config={"threads": 2})
        if self.fmt == "parquet":
            scan = f"read_parquet({self.files!r})"
        else:
            types = (
                "{'txn_id': 'BIGINT', 'ts': 'TIMESTAMP', 'account': 'VARCHAR', "
                "'currency': 'VARCHAR', 'amount': 'DOUBLE', 'status': 'VARCHAR'}"
            )
            scan = f"read_csv({self.files!r}, header=true, columns={types}, ignore_errors=true)"
        self.output.mkdir(parents=True)
        con.sql(
            f"""
            COPY (
              SELECT account, day, sum(amount * rate_to_usd) AS total, count(*) AS n,
                     avg(amount * rate_to_usd) AS mean
              FROM (SELECT *, CAST(ts AS DATE) AS day FROM {scan}
                    WHERE {VALID} AND status = 'settled') t
              JOIN read_csv('{self.fx}') fx USING (day, currency)
              GROUP BY account, day
            ) TO '{self.output / "part-0.parquet"}' (FORMAT parquet)
            """
        )
        con.close()

    # Polars ----------------------------------------------------------------------------

    def _run_polars(self) -> None:
        import polars as pl

        if self.fmt == "parquet":
            lf = pl.scan_parquet(self.files)
        else:
            lf = pl.scan_csv(
                self.files,
                schema={
                    "txn_id": pl.Int64,
                    "ts": pl.Datetime("us"),
                    "account": pl.String,
                    "currency": pl.String,
                    "amount": pl.Float64,
                    "status": pl.String,
                },
                ignore_errors=True,
                truncate_ragged_lines=True,
            )
        fx = pl.scan_csv(self.fx, try_parse_dates=True)
        amount_usd = pl.col("amount") * pl.col("rate_to_usd")
        self.output.mkdir(parents=True)
        (
            lf.filter(
                pl.col("account").is_not_null()
                & pl.col("amount").is_not_null()
                & pl.col("currency").is_in(CURRENCIES)
                & (pl.col("status") == "settled")
            )
            .with_columns(day=pl.col("ts").dt.date())
            .join(fx, on=["day", "currency"], how="inner")
            .group_by("account", "day")
            .agg(total=amount_usd.sum(), n=pl.len(), mean=amount_usd.mean())
            .sink_parquet(self.output / "part-0.parquet")
        )

    # the check ----------------------------------------------------------------------

    def check(self) -> dict:
        """Groups, rows and sums of the written output, read back with pyarrow."""
        import pyarrow.compute as pc
        import pyarrow.dataset as ds

        table = ds.dataset(str(self.output), format="parquet").to_table(
            columns=["total", "n", "mean"]
        )
        return {
            "groups": table.num_rows,
            "rows": int(pc.sum(table["n"]).as_py()),
            "total": float(pc.sum(table["total"]).as_py()),
            "mean_sum": float(pc.sum(table["mean"]).as_py()),
            **self.info,
        }


def _fx_pandas(root: Path):
    import pandas as pd

    fx = pd.read_csv(root / "fx_rates.csv", parse_dates=["day"])
    fx["day"] = fx["day"].astype("datetime64[us]")
    return fx


def child(args: argparse.Namespace) -> None:
    """Prepare, say READY, wait for GO, run, report; the parent measures around it."""
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    job = Job(
        args.tool, args.format, args.scale, Path(args.data), out, args.batch_files, args.buckets
    )
    job.prepare()
    print("READY", flush=True)
    sys.stdin.readline()
    started = time.perf_counter()
    job.run()
    wall = time.perf_counter() - started
    print("DONE " + json.dumps({"wall": wall}), flush=True)
    check = job.check()
    job.close()
    print("CHECK " + json.dumps(check), flush=True)


# -- the parent: processes, memory sampling, tables ------------------------------------


class TreeSampler(threading.Thread):
    """Largest summed RSS of a process and all its descendants, sampled every ``period``."""

    def __init__(self, pid: int, period: float = 0.02):
        super().__init__(daemon=True)
        import psutil

        self.root = psutil.Process(pid)
        self.period = period
        self.peak = 0
        self.peak_pss = 0
        self.pss_at = float("-inf")
        self.procs: list = []
        self.listed = float("-inf")
        self.halt = threading.Event()

    def rss(self) -> int:
        import psutil

        now = time.monotonic()
        if now - self.listed > 0.2:  # listing descendants scans /proc: not every sample
            try:
                self.procs = [self.root, *self.root.children(recursive=True)]
            except psutil.NoSuchProcess:
                return 0
            self.listed = now
        return self._sum(lambda p: p.memory_info().rss)

    def pss(self) -> int:
        """Summed proportional set size of the processes ``rss`` listed last."""
        return self._sum(lambda p: p.memory_full_info().pss)

    def _sum(self, read) -> int:
        import psutil

        total = 0
        for p in self.procs:
            try:
                total += read(p)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass
        return total

    def sample(self) -> None:
        self.peak = max(self.peak, self.rss())
        now = time.monotonic()
        if now - self.pss_at >= 0.2:
            self.peak_pss = max(self.peak_pss, self.pss())
            self.pss_at = now

    def cpu(self) -> float:
        """CPU seconds used so far by the living tree and every child it has waited for."""
        import psutil

        total = 0.0
        try:
            procs = [self.root, *self.root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return 0.0
        for p in procs:
            try:
                t = p.cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += t.user + t.system + t.children_user + t.children_system
        return total

    def run(self) -> None:
        while not self.halt.is_set():
            self.sample()
            self.halt.wait(self.period)

    def stop(self) -> int:
        self.halt.set()
        self.join()
        self.pss_at = float("-inf")
        self.sample()
        return self.peak


def measure(
    tool: str,
    fmt: str,
    scale: int,
    root: Path,
    work: Path,
    batch_files: int = BATCH_FILES,
    buckets: int | None = None,
) -> dict:
    """One run of ``tool`` in a fresh process: wall time, peak and idle memory, the check."""
    out = work / f"{tool}-{fmt}-x{scale}-{uuid.uuid4().hex[:8]}"
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "_child",
        "--tool",
        tool,
        "--format",
        fmt,
        "--scale",
        str(scale),
        "--data",
        str(root),
        "--out",
        str(out),
        "--batch-files",
        str(batch_files),
        *(["--buckets", str(buckets)] if buckets else []),
    ]
    env = {**os.environ, "POLARS_MAX_THREADS": "2", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.Popen(
        cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=str(work)
    )
    try:
        line = proc.stdout.readline()
        if not line.startswith("READY"):
            raise RuntimeError(f"{tool} did not start: {line!r}")
        sampler = TreeSampler(proc.pid)
        idle = sampler.rss()
        cpu = sampler.cpu()
        sampler.start()
        proc.stdin.write("GO\n")
        proc.stdin.flush()
        line = proc.stdout.readline()
        peak = sampler.stop()
        cpu = sampler.cpu() - cpu
        if not line.startswith("DONE"):
            raise RuntimeError(f"{tool} failed (see its error above): {line!r}")
        done = json.loads(line[5:])
        line = proc.stdout.readline()
        check = json.loads(line[6:]) if line.startswith("CHECK") else {}
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
        shutil.rmtree(out, ignore_errors=True)
    return {
        "tool": tool,
        "wall": done["wall"],
        "cpu": cpu,
        "peak": peak,
        "peak_pss": sampler.peak_pss,
        "idle": idle,
        **check,
    }


def _same(a: dict, b: dict) -> list[str]:
    """Differences between two checks (exact counts, sums within float tolerance)."""
    problems = []
    for key in ("groups", "rows"):
        if a[key] != b[key]:
            problems.append(f"{key} {a[key]} != {b[key]}")
    for key in ("total", "mean_sum"):
        if abs(a[key] - b[key]) > 1e-9 * max(abs(a[key]), abs(b[key]), 1.0):
            problems.append(f"{key} {a[key]!r} != {b[key]!r}")
    return problems


def bench(
    tools,
    fmt: str,
    scale: int,
    repeat: int,
    root: Path,
    work: Path,
    batch_files: int = BATCH_FILES,
    buckets: int | None = None,
) -> dict:
    """``repeat`` rounds; the order of the tools rotates from one round to the next."""
    runs: dict[str, list[dict]] = {t: [] for t in tools}
    for r in range(repeat):
        order = list(tools[r % len(tools) :]) + list(tools[: r % len(tools)])
        for tool in order:
            res = measure(tool, fmt, scale, root, work, batch_files, buckets)
            runs[tool].append(res)
            print(
                f"  [{fmt} x{scale} round {r + 1}/{repeat}] {tool:12s} {res['wall']:7.2f} s "
                f"cpu {res['cpu']:6.2f} s "
                f"peak {res['peak'] / 2**20:7.0f} MiB (PSS {res['peak_pss'] / 2**20:5.0f}, "
                f"idle {res['idle'] / 2**20:5.0f})",
                file=sys.stderr,
                flush=True,
            )
    return runs


def summarise(runs: dict[str, list[dict]]) -> list[dict]:
    ref = runs.get("duckdb")
    ref_wall = statistics.median(r["wall"] for r in ref) if ref else None
    ref_peak = statistics.median(r["peak"] for r in ref) if ref else None
    ref_pss = statistics.median(r["peak_pss"] for r in ref) if ref else None
    rows = []
    for tool, rs in runs.items():
        wall = statistics.median(r["wall"] for r in rs)
        peak = statistics.median(r["peak"] for r in rs)
        pss = statistics.median(r["peak_pss"] for r in rs)
        problems = sorted({p for r in rs for p in (_same(r, ref[0]) if ref else [])})
        rows.append(
            {
                "tool": tool,
                "wall": wall,
                "walls": [round(r["wall"], 2) for r in rs],
                "x_wall": wall / ref_wall if ref_wall else None,
                "cpu": statistics.median(r["cpu"] for r in rs),
                "peak_mib": peak / 2**20,
                "idle_mib": statistics.median(r["idle"] for r in rs) / 2**20,
                "x_peak": peak / ref_peak if ref_peak else None,
                "pss_mib": pss / 2**20,
                "x_pss": pss / ref_pss if ref_pss else None,
                "groups": rs[0]["groups"],
                "same": "yes" if ref and not problems else ("; ".join(problems) or "n/a"),
                "quarantined": rs[0].get("rows_quarantined"),
                "accounted": rs[0].get("accounted"),
            }
        )
    return rows


def table(rows: list[dict]) -> str:
    def x(v):
        return f"{v:.2f}" if v is not None else ""

    lines = [
        "| tool | wall (s), median | × DuckDB | CPU (s) | peak memory (MiB) | × DuckDB "
        "| peak PSS (MiB) | × DuckDB | idle (MiB) | groups | same result as DuckDB |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {LABELS.get(r['tool'], r['tool'])} | {r['wall']:.2f} | {x(r['x_wall'])} | "
            f"{r['cpu']:.1f} | "
            f"{r['peak_mib']:.0f} | {x(r['x_peak'])} | {r['pss_mib']:.0f} | {x(r['x_pss'])} | "
            f"{r['idle_mib']:.0f} | "
            f"{r['groups']:,} | {r['same']} |"
        )
    return "\n".join(lines)


def scaling_table(by_scale: dict[int, list[dict]], factor: int) -> str:
    lines = [
        f"| tool | peak 1x (MiB) | peak {factor}x (MiB) | {factor}x / 1x | wall 1x (s) "
        f"| wall {factor}x (s) |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    one = {r["tool"]: r for r in by_scale[1]}
    for r in by_scale[factor]:
        a = one[r["tool"]]
        lines.append(
            f"| {LABELS.get(r['tool'], r['tool'])} | {a['peak_mib']:.0f} | {r['peak_mib']:.0f} | "
            f"{r['peak_mib'] / a['peak_mib']:.2f} | {a['wall']:.2f} | {r['wall']:.2f} |"
        )
    return "\n".join(lines)


def _ensure_data(fmt: str, scale: int, root: Path) -> None:
    have = len(list(data_dir(fmt, scale, root).glob(f"*.{fmt}")))
    if have < 64 * scale or not (root / "fx_rates.csv").exists():
        print(f"generating the {fmt} data, {scale}x ...", file=sys.stderr, flush=True)
        generate(scale, (fmt,), root=root)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command")
    c = sub.add_parser("_child")
    c.add_argument("--tool", required=True, choices=TOOLS)
    for p in (parser, c):
        p.add_argument("--format", default="all", choices=["parquet", "csv", "all"])
        p.add_argument("--scale", type=int, default=1, help="1 = 20 M rows in 64 files")
        p.add_argument("--data", type=Path, default=DATA, help="data folder (default: data/)")
        p.add_argument(
            "--batch-files",
            type=int,
            default=BATCH_FILES,
            help="files per dbatch batch (default 8)",
        )
        p.add_argument(
            "--buckets",
            type=int,
            default=None,
            help="dbatch reduce tasks (default: one per planned batch, 4 to 32, at most one per 16 MiB of input)",
        )
    c.add_argument("--out", required=True)
    parser.add_argument("--repeat", type=int, default=3, help="rounds (default 3); medians")
    parser.add_argument("--tools", default=",".join(TOOLS), help="comma-separated subset")
    parser.add_argument(
        "--scaling",
        type=int,
        default=4,
        help="also run dbatch and DuckDB on FACTOR x the Parquet input (default 4; 0: skip)",
    )
    parser.add_argument("--json", type=Path, default=None, help="also save every run here")
    args = parser.parse_args(argv)
    if args.command == "_child":
        child(args)
        return
    tools = [t.strip() for t in args.tools.split(",") if t.strip()]
    unknown = set(tools) - set(TOOLS)
    if unknown:
        parser.error(f"unknown tool(s) {sorted(unknown)}; choose from {', '.join(TOOLS)}")
    formats = ["parquet", "csv"] if args.format == "all" else [args.format]
    root = args.data.resolve()
    work = root / "work"
    work.mkdir(parents=True, exist_ok=True)
    report: dict = {"repeat": args.repeat, "scale": args.scale, "results": {}}
    for fmt in formats:
        _ensure_data(fmt, args.scale, root)
        runs = bench(
            tools, fmt, args.scale, args.repeat, root, work, args.batch_files, args.buckets
        )
        rows = summarise(runs)
        report["results"][f"{fmt}-x{args.scale}"] = {"runs": runs, "summary": rows}
        print(f"\n### {fmt}, {64 * args.scale} files, {args.repeat} rounds\n")
        print(table(rows), flush=True)
    if args.scaling and args.scaling > 1 and "parquet" in formats:
        pair = [t for t in ("dbatch", "dbatch-drop", "duckdb") if t in tools]
        by_scale = {}
        for scale in (1, args.scaling):
            _ensure_data("parquet", scale, root)
            runs = bench(
                pair, "parquet", scale, args.repeat, root, work, args.batch_files, args.buckets
            )
            by_scale[scale] = summarise(runs)
            report["results"][f"scaling-parquet-x{scale}"] = by_scale[scale]
        print(f"\n### memory as the Parquet input grows 1x -> {args.scaling}x\n")
        print(scaling_table(by_scale, args.scaling), flush=True)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1, default=str))


if __name__ == "__main__":
    main()
