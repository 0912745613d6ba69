"""What ``dbatch init`` writes: a commented job file per template and a small input that runs."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import numpy as np

__all__ = ["TEMPLATES", "Template"]

_HEADER = """\
# {title}
#
#   dbatch validate job.yaml     every check that needs no cluster
#   dbatch plan job.yaml         the batches, without running them
#   dbatch run job.yaml          run it (a LocalCluster unless cluster.scheduler is set)
#   dbatch status job.yaml       each batch's state; dbatch history job.yaml: the runs
#   dbatch quarantine job.yaml   the rows and files set aside, with their reason
#
# Relative paths are taken from this file's folder. Every key is described in
# docs/job-files.md of the dbatch documentation.
"""

ETL_YAML = (
    _HEADER.format(title="Orders landed as CSV files -> revenue per day and country, as Parquet.")
    + r"""
name: orders-etl
source:
  type: files
  path: landing/orders-*.csv           # one unit per file
  time_pattern: '(\d{4}-\d{2}-\d{2})'  # the date in each file's name is its unit's time
  schema:                              # rows that break it are quarantined with the reason
    order_id: {type: string, not_null: true, unique: true}
    ts: timestamp
    country: string
    amount: float64
    status: {type: string, allowed: [paid, refunded, pending]}
batching:
  count: 2                             # files per batch (or window: 1D, or size: 256MB)
steps:                                 # SQL steps run in DuckDB on the worker
  - filter: "status = 'paid'"
  - derive:
      day: "CAST(ts AS DATE)"
aggregate:                             # across all batches, after they commit
  by: [day, country]
  metrics:
    revenue: sum(amount)
    orders: count(*)
sink:
  type: parquet                        # published in one rename when the run succeeds
  path: out/daily_revenue
bad_input:
  mode: quarantine                     # or drop (count only) or fail_fast
  max_bad_fraction: 0.05               # a batch with more bad rows than this fails
"""
)

INFERENCE_YAML = (
    _HEADER.format(title="Customers -> churn probability from a model, scored batch by batch.")
    + """
name: churn-scoring
source:
  type: files
  path: customers/customers-*.csv
  schema:
    customer_id: {type: string, not_null: true, unique: true}
    tenure_months: int64
    monthly_spend: float64
    support_calls: int64
batching:
  count: 1
steps:
  - predict:
      model: churn_model:load          # a loader in churn_model.py (or a .joblib/.pt file)
      features: [tenure_months, monthly_spend, support_calls]
      output: p_churn
      method: predict_proba            # a row with a missing feature is quarantined
  - derive:
      at_risk: "p_churn >= 0.5"
sink:
  type: parquet
  path: out/churn_scores
bad_input:
  mode: quarantine
  max_bad_fraction: 0.05
"""
)

XARRAY_YAML = (
    _HEADER.format(title="Hourly NetCDF files of a temperature grid -> daily mean and maximum.")
    + """
name: grid-daily
source:
  type: netcdf
  path: archive/*.nc                   # one unit per file; its time is the first timestamp
  dim: time
batching:
  window: 1D                           # whole days: what the daily resample needs
steps:
  - convert_units: {to: {temperature: degC}}   # reads the variable's units attribute (K)
  - resample: {freq: 1D, how: [mean, max]}     # temperature_mean, temperature_max
sink:
  type: netcdf                         # one file per batch, published as one folder
  path: out/daily-nc
"""
)

SQL_YAML = (
    _HEADER.format(title="A table of orders in SQLite -> cleaned orders in a warehouse table.")
    + """
name: orders-to-warehouse
source:
  type: sql
  url: "sqlite:///{shop}"              # any SQLAlchemy URL; a SQLite path must be absolute
  table: orders
  key: id                              # an integer column, cut into ranges ...
  chunk: 250                           # ... of this width: one unit each
batching:
  count: 2
steps:
  - filter: "status <> 'cancelled'"
  - derive:
      amount_usd: "round(amount * CASE currency WHEN 'EUR' THEN 1.08 ELSE 1.0 END, 2)"
sink:
  type: sql                            # each batch in one transaction, re-runnable
  url: "sqlite:///{warehouse}"
  table: orders_clean
  mode: upsert
  key: id
"""
)


def _days(n: int, start: date = date(2026, 11, 1)) -> list[date]:
    return [start + timedelta(days=d) for d in range(n)]


def _write_orders_csv(root: Path) -> list[Path]:
    """Four days of order files, with two damaged rows in each (kept aside by the run)."""
    rng = np.random.default_rng(7)
    landing = root / "landing"
    landing.mkdir(parents=True, exist_ok=True)
    written = []
    for day in _days(4):
        lines = ["order_id,ts,country,amount,status"]
        for i in range(200):
            country = rng.choice(["DE", "FR", "US", "JP"])
            status = rng.choice(["paid", "paid", "paid", "refunded", "pending"])
            amount = round(float(rng.lognormal(4, 0.8)), 2)
            lines.append(
                f"O{day:%Y%m%d}-{i:04d},{day} {i % 24:02d}:15:00,{country},{amount},{status}"
            )
        lines[17] = lines[17].rsplit(",", 2)[0] + ",12.5O,paid"  # a letter O for a zero
        lines[42] = lines[42].rsplit(",", 1)[0] + ",lost"  # not an allowed status
        path = landing / f"orders-{day}.csv"
        path.write_text("\n".join(lines) + "\n")
        written.append(path)
    return written


_CHURN_MODEL = '''\
"""A stand-in churn model: replace load() with the loading of your own model."""

import numpy as np


class ChurnModel:
    """Logistic scores from tenure, spend and support calls (coefficients made up)."""

    coef = np.array([-0.08, 0.01, 0.6])
    intercept = -0.5

    def predict_proba(self, features):
        p = 1.0 / (1.0 + np.exp(-(np.asarray(features) @ self.coef + self.intercept)))
        return np.column_stack([1.0 - p, p])


def load():
    """Called once per worker process; the model is reused for every batch it runs."""
    return ChurnModel()
'''


def _write_customers(root: Path) -> list[Path]:
    """Three files of customers and the model's loader; one row lacks its support calls."""
    rng = np.random.default_rng(11)
    folder = root / "customers"
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for f in range(3):
        lines = ["customer_id,tenure_months,monthly_spend,support_calls"]
        for i in range(300):
            lines.append(
                f"C{f}{i:04d},{rng.integers(1, 72)},{rng.uniform(10, 120):.2f},{rng.poisson(1.5)}"
            )
        lines[5] = lines[5].rsplit(",", 1)[0] + ","  # a missing feature
        path = folder / f"customers-{f}.csv"
        path.write_text("\n".join(lines) + "\n")
        written.append(path)
    model = root / "churn_model.py"
    model.write_text(_CHURN_MODEL)
    return [*written, model]


def _write_netcdf(root: Path) -> list[Path]:
    """Three days of hourly temperature (kelvin) on a 4 x 5 grid, one file per day."""
    import pandas as pd
    import xarray as xr

    rng = np.random.default_rng(3)
    folder = root / "archive"
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for day in _days(3):
        time = pd.date_range(str(day), periods=24, freq="1h")
        values = 283.0 + 5 * np.sin(np.arange(24) / 24 * 2 * np.pi)[:, None, None]
        values = values + rng.normal(0, 0.5, (24, 4, 5))
        ds = xr.Dataset(
            {"temperature": (("time", "lat", "lon"), values, {"units": "K"})},
            coords={"time": time, "lat": np.linspace(45, 48, 4), "lon": np.linspace(5, 9, 5)},
        )
        path = folder / f"grid-{day}.nc"
        ds.to_netcdf(path)
        written.append(path)
    return written


def _write_shop(root: Path) -> list[Path]:
    """``shop.db``: a SQLite table of 1,000 orders (``warehouse.db`` is created by the run)."""
    rng = np.random.default_rng(5)
    path = root / "shop.db"
    path.unlink(missing_ok=True)
    with sqlite3.connect(path) as con:
        con.execute(
            "CREATE TABLE orders (id INTEGER PRIMARY KEY, ts TEXT, currency TEXT, "
            "amount REAL, status TEXT)"
        )
        rows = [
            (
                i,
                f"2026-11-{1 + i % 28:02d} 12:00:00",
                str(rng.choice(["USD", "EUR"])),
                round(float(rng.lognormal(4, 0.7)), 2),
                str(rng.choice(["shipped", "shipped", "cancelled"])),
            )
            for i in range(1, 1001)
        ]
        con.executemany("INSERT INTO orders VALUES (?, ?, ?, ?, ?)", rows)
    return [path]


@dataclass(frozen=True)
class Template:
    """One kind of job ``dbatch init`` can write: its job file and its sample input."""

    name: str
    summary: str
    job_yaml: str
    write_sample: Callable[[Path], list[Path]]

    def job_text(self, root: Path) -> str:
        """The job file's text; a SQL job names its SQLite files by absolute path."""
        if self.name != "sql":
            return self.job_yaml
        base = root.resolve()
        return self.job_yaml.format(shop=base / "shop.db", warehouse=base / "warehouse.db")


TEMPLATES = {
    t.name: t
    for t in (
        Template(
            "etl", "CSV files -> SQL steps -> aggregate -> Parquet", ETL_YAML, _write_orders_csv
        ),
        Template(
            "inference",
            "CSV files -> a model's predictions -> Parquet",
            INFERENCE_YAML,
            _write_customers,
        ),
        Template(
            "xarray", "NetCDF files -> daily statistics -> NetCDF", XARRAY_YAML, _write_netcdf
        ),
        Template("sql", "a SQLite table -> SQL steps -> a warehouse table", SQL_YAML, _write_shop),
    )
}
