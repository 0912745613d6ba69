"""The nightly-reconciliation demo: a realistic landing area, its job file, and a run."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

__all__ = ["write_landing_area", "write_job", "JOB_YAML"]

CURRENCIES = ["USD", "EUR", "GBP", "JPY", "CHF"]
BRANCHES = ["north", "south", "east", "west"]
_BASE_RATE = {"USD": 1.0, "EUR": 1.08, "GBP": 1.27, "JPY": 0.0067, "CHF": 1.12}

JOB_YAML = """\
# Nightly reconciliation: settled transactions -> daily totals per account and currency, in USD.
name: nightly-reconciliation
source:
  type: files
  path: landing/*.csv
  time_pattern: '(\\d{{4}}-\\d{{2}}-\\d{{2}})'
  schema:
    txn_id: {{type: string, not_null: true, unique: true}}
    ts: timestamp
    branch: string
    account: {{type: string, not_null: true}}
    currency: {{type: string, allowed: [USD, EUR, GBP, JPY, CHF]}}
    amount: float64
    status: {{type: string, allowed: [settled, pending, reversed]}}
batching:
  count: {batch_files}
steps:
  - filter: "status = 'settled'"
  - derive:
      day: "CAST(ts AS DATE)"
  - enrich:
      lookup: fx_rates.csv
      on: [day, currency]
      columns: [rate_to_usd]
      unmatched: quarantine
  - derive:
      amount_usd: "round(amount * rate_to_usd, 2)"
aggregate:
  by: [account, day, currency]
  metrics:
    total_usd: sum(amount_usd)
    transactions: count(*)
    mean_usd: mean(amount_usd)
sink:
  type: parquet
  path: out/daily_totals
bad_input:
  mode: quarantine
  max_bad_fraction: 0.05
"""


def write_landing_area(
    directory: str | Path,
    *,
    days: int = 5,
    rows_per_file: int = 20_000,
    start: date = date(2026, 11, 1),
    bad_share: float = 0.002,
    seed: int = 42,
) -> dict:
    """Write ``days`` × 4 branch CSV files and ``fx_rates.csv`` below ``directory``.

    About ``bad_share`` of the rows are damaged on purpose (missing fields, text
    in the amount, an unknown currency), so the run has something to quarantine.
    Returns what was written, including how many rows were damaged.
    """
    rng = np.random.default_rng(seed)
    root = Path(directory)
    landing = root / "landing"
    landing.mkdir(parents=True, exist_ok=True)
    accounts = np.array([f"ACC{n:05d}" for n in range(2_000)])
    written, damaged = 0, 0
    for d in range(days):
        day = start + timedelta(days=d)
        for b, branch in enumerate(BRANCHES):
            n = rows_per_file
            secs = np.sort(rng.integers(0, 86_400, n))
            ts = np.datetime64(day.isoformat()) + secs.astype("timedelta64[s]")
            lines = ["txn_id,ts,branch,account,currency,amount,status"]
            cur = rng.choice(CURRENCIES, n, p=[0.5, 0.2, 0.15, 0.1, 0.05])
            acct = rng.choice(accounts, n)
            amount = np.round(rng.lognormal(3.5, 1.2, n), 2)
            status = rng.choice(["settled", "pending", "reversed"], n, p=[0.9, 0.07, 0.03])
            bad = rng.random(n) < bad_share
            for i in range(n):
                txn = f"T{day:%Y%m%d}-{b}-{i:07d}"
                stamp = str(ts[i]).replace("T", " ")
                row = f"{txn},{stamp},{branch},{acct[i]},{cur[i]},{amount[i]},{status[i]}"
                if bad[i]:
                    damaged += 1
                    kind = i % 3
                    if kind == 0:  # too few fields
                        row = f"{txn},{stamp},{branch},{acct[i]},{cur[i]}"
                    elif kind == 1:  # a letter O typed for a zero
                        row = f"{txn},{stamp},{branch},{acct[i]},{cur[i]},12.5O,{status[i]}"
                    else:  # a currency nobody trades
                        row = f"{txn},{stamp},{branch},{acct[i]},XXX,{amount[i]},{status[i]}"
                lines.append(row)
            (landing / f"transactions-{day.isoformat()}-{branch}.csv").write_text(
                "\n".join(lines) + "\n"
            )
            written += n
    rates: dict[str, list] = {"day": [], "currency": [], "rate_to_usd": []}
    for d in range(days):
        day = start + timedelta(days=d)
        for c in CURRENCIES:
            rates["day"].append(day)
            rates["currency"].append(c)
            drift = 1.0 if c == "USD" else float(1 + rng.normal(0, 0.003))
            rates["rate_to_usd"].append(round(_BASE_RATE[c] * drift, 6))
    pacsv.write_csv(
        pa.table(
            {
                "day": pa.array(rates["day"], pa.date32()),
                "currency": rates["currency"],
                "rate_to_usd": rates["rate_to_usd"],
            }
        ),
        root / "fx_rates.csv",
    )
    return {
        "files": days * len(BRANCHES),
        "rows": written,
        "damaged_rows": damaged,
        "landing": str(landing),
    }


def write_job(directory: str | Path, *, batch_files: int = 4) -> Path:
    """Write the reconciliation job file into ``directory``; return its path."""
    path = Path(directory) / "job.yaml"
    path.write_text(JOB_YAML.format(batch_files=batch_files))
    return path
