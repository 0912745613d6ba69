"""Write the reference ETL data: synthetic transactions in Parquet and CSV, plus FX rates.

Usage::

    python benchmarks/generate.py                  # 20 M rows in 64 files, Parquet and CSV
    python benchmarks/generate.py --scale 4 --formats parquet   # 80 M rows in 256 files

Each file holds ``rows_per_file`` transactions of one month (2026-01) for
100,000 accounts in five currencies. About 0.2 % of the rows are malformed on
purpose, and the same rows in both formats:

========================  ==============================  ===============================
kind                      Parquet                         CSV
========================  ==============================  ===============================
no account                ``account`` is null             the line has one field too many
no amount                 ``amount`` is null              ``amount`` is ``n/a``
unknown currency          ``currency`` is ``XXX``         ``currency`` is ``XXX``
========================  ==============================  ===============================

File ``i`` is the same whatever the scale (its random stream depends on ``i``
only), so the 4x data set holds the 1x one plus 192 more files.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

__all__ = ["generate", "data_dir", "CURRENCIES", "ROWS_PER_FILE", "FILES"]

DATA = Path(__file__).resolve().parent / "data"
FILES = 64
ROWS_PER_FILE = 312_500  # 64 x 312,500 = 20 M
ACCOUNTS = 100_000
DAYS = 31
START = np.datetime64("2026-01-01T00:00:00", "us")
CURRENCIES = ["USD", "EUR", "GBP", "JPY", "CHF"]
_CURRENCY_P = [0.45, 0.25, 0.15, 0.10, 0.05]
_BASE_RATE = {"USD": 1.0, "EUR": 1.08, "GBP": 1.27, "JPY": 0.0067, "CHF": 1.12}
STATUSES = ["settled", "pending", "reversed"]
_STATUS_P = [0.80, 0.15, 0.05]
BAD_SHARE = 0.002
SEED = 20260101


def data_dir(fmt: str, scale: int, root: Path = DATA) -> Path:
    """Folder holding the ``fmt`` files of the ``scale``x data set."""
    return Path(root) / f"{fmt}-x{scale}"


def _transactions(index: int, rows: int) -> tuple[pa.Table, np.ndarray]:
    """File ``index``'s rows and the kind of damage per row (0 = none, 1..3)."""
    rng = np.random.default_rng([SEED, index])
    txn_id = np.arange(index * rows, (index + 1) * rows, dtype=np.int64)
    seconds = rng.integers(0, DAYS * 86_400, rows)
    ts = START + (seconds * 1_000_000).astype("timedelta64[us]")
    accounts = pa.array([f"AC{n:06d}" for n in range(ACCOUNTS)], pa.string())
    account = accounts.take(pa.array(rng.integers(0, ACCOUNTS, rows)))
    currency = pa.array(CURRENCIES).take(pa.array(rng.choice(5, rows, p=_CURRENCY_P)))
    amount = np.round(rng.lognormal(3.5, 1.2, rows), 2)
    status = pa.array(STATUSES).take(pa.array(rng.choice(3, rows, p=_STATUS_P)))
    damage = np.where(rng.random(rows) < BAD_SHARE, rng.integers(1, 4, rows), 0)
    account = pc.if_else(pa.array(damage == 1), pa.scalar(None, pa.string()), account)
    amount_arr = pa.array(amount, mask=damage == 2)
    currency = pc.if_else(pa.array(damage == 3), pa.scalar("XXX"), currency)
    table = pa.table(
        {
            "txn_id": txn_id,
            "ts": pa.array(ts, pa.timestamp("us")),
            "account": account,
            "currency": currency,
            "amount": amount_arr,
            "status": status,
        }
    )
    return table, damage


def _write_parquet(table: pa.Table, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    pq.write_table(table, tmp, compression="snappy")
    tmp.rename(path)


def _write_csv(table: pa.Table, damage: np.ndarray, path: Path) -> None:
    # Same rows as the Parquet file, with the damage CSV files really get.
    account = pc.fill_null(table["account"], "")
    amount = pc.cast(table["amount"], pa.string())
    amount = pc.if_else(pa.array(damage == 2), pa.scalar("n/a"), amount)
    ts = pc.cast(table["ts"], pa.timestamp("s"))
    text = (
        table.set_column(1, "ts", ts)
        .set_column(2, "account", account)
        .set_column(4, "amount", amount)
    )
    sink = pa.BufferOutputStream()
    pacsv.write_csv(text, sink, pacsv.WriteOptions(quoting_style="none"))
    lines = sink.getvalue().to_pybytes().split(b"\n")
    for i in np.flatnonzero(damage == 1):
        lines[i + 1] += b",EXTRA"  # line 1 is the header
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(b"\n".join(lines))
    tmp.rename(path)


def _write_fx(root: Path) -> None:
    rng = np.random.default_rng([SEED, 999_999])
    days = START.astype("datetime64[D]") + np.arange(DAYS)
    rows = {"day": [], "currency": [], "rate_to_usd": []}
    for day in days:
        for cur in CURRENCIES:
            drift = 1.0 if cur == "USD" else float(1 + rng.normal(0, 0.003))
            rows["day"].append(day.item())
            rows["currency"].append(cur)
            rows["rate_to_usd"].append(round(_BASE_RATE[cur] * drift, 6))
    table = pa.table(
        {
            "day": pa.array(rows["day"], pa.date32()),
            "currency": pa.array(rows["currency"], pa.string()),
            "rate_to_usd": pa.array(rows["rate_to_usd"], pa.float64()),
        }
    )
    pq.write_table(table, root / "fx_rates.parquet")
    pacsv.write_csv(table, root / "fx_rates.csv", pacsv.WriteOptions(quoting_style="none"))


def generate(
    scale: int = 1,
    formats: tuple[str, ...] = ("parquet", "csv"),
    rows_per_file: int = ROWS_PER_FILE,
    root: Path = DATA,
) -> dict:
    """Write the ``scale``x data set (``64 * scale`` files) in each format; skip files that exist.

    Returns a summary: files, rows and damaged rows per format, and where they are.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    _write_fx(root)
    files = FILES * scale
    summary = {"files": files, "rows": files * rows_per_file, "fx": str(root / "fx_rates.parquet")}
    damaged = 0
    for fmt in formats:
        data_dir(fmt, scale, root).mkdir(parents=True, exist_ok=True)
    for i in range(files):
        targets = {
            fmt: data_dir(fmt, scale, root) / f"transactions-{i:04d}.{fmt}" for fmt in formats
        }
        if all(t.exists() for t in targets.values()):
            continue
        table, damage = _transactions(i, rows_per_file)
        damaged += int((damage > 0).sum())
        if "parquet" in targets and not targets["parquet"].exists():
            _write_parquet(table, targets["parquet"])
        if "csv" in targets and not targets["csv"].exists():
            _write_csv(table, damage, targets["csv"])
    for fmt in formats:
        summary[fmt] = str(data_dir(fmt, scale, root))
    summary["damaged_rows_written_now"] = damaged
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=int, default=1, help="1 = 20 M rows in 64 files")
    parser.add_argument(
        "--formats", default="parquet,csv", help="comma-separated: parquet, csv (default: both)"
    )
    parser.add_argument(
        "--rows-per-file", type=int, default=ROWS_PER_FILE, help="smaller for a quick trial"
    )
    parser.add_argument("--data", type=Path, default=DATA, help="where to write (default: data/)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    formats = tuple(f.strip() for f in args.formats.split(",") if f.strip())
    unknown = set(formats) - {"parquet", "csv"}
    if unknown:
        parser.error(f"unknown format(s) {sorted(unknown)}; use parquet and/or csv")
    summary = generate(args.scale, formats, args.rows_per_file, args.data)
    summary["seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
