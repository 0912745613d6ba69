"""What importing dbatch loads, on the driver and on the workers of a Parquet job."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import dbatch
import dbatch.sinks
import dbatch.sources
import dbatch.steps

HEAVY = ("sqlalchemy", "pandas", "xarray", "duckdb", "bokeh", "zarr")


def test_import_dbatch_loads_none_of_the_heavy_libraries():
    code = f"import sys, dbatch; print([m for m in {HEAVY!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("package", [dbatch, dbatch.sources, dbatch.sinks, dbatch.steps])
def test_every_public_name_resolves(package):
    for name in package.__all__:
        value = getattr(package, name)
        assert getattr(value, "__name__", name) == name, (package.__name__, name)
        assert name in dir(package)
    with pytest.raises(AttributeError, match="has no attribute 'Nothing'"):
        package.Nothing  # noqa: B018


def test_workers_of_a_parquet_job_load_no_sqlalchemy_and_the_driver_no_quarantine(tmp_path):
    """A worker imports what the pipeline is made of; the quarantine is gathered on a worker."""
    from distributed import Client, LocalCluster, get_task_stream

    from dbatch import Aggregate, ByCount, Files, Filter, ParquetSink, Pipeline

    rng = np.random.default_rng(0)
    for i in range(4):
        amount = pa.array(rng.normal(size=500), mask=rng.random(500) < 0.05)
        pq.write_table(
            pa.table({"g": rng.integers(0, 50, 500), "amount": amount}), tmp_path / f"{i}.parquet"
        )
    pipeline = Pipeline(
        source=Files(
            str(tmp_path / "*.parquet"),
            schema={"g": "int64", "amount": {"type": "float64", "not_null": True}},
        ),
        steps=[Filter("amount > -5")],
        aggregate=Aggregate(by="g", metrics={"total": "sum(amount)"}),
        sink=ParquetSink(str(tmp_path / "out")),
        batching=ByCount(2),
        workdir=str(tmp_path / "work"),
    )
    with (
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            host="127.0.0.1",
            dashboard_address="127.0.0.1:0",
            worker_dashboard_address=None,
        ) as cluster,
        Client(cluster) as client,
    ):
        with get_task_stream(client) as stream:
            result = pipeline.run(client=client, progress=False)
        loaded = client.run(
            lambda: [m for m in ("sqlalchemy", "xarray", "zarr") if m in sys.modules]
        )
    assert result.status == "succeeded"
    assert result.rows_quarantined > 0
    assert all(mods == [] for mods in loaded.values()), loaded
    names = {t["key"][0] if isinstance(t["key"], tuple) else t["key"] for t in stream.data}
    assert "dbatch-job-quarantine" in names, names
    assert (
        pq.read_table(pipeline.work_area() / "quarantine.parquet").num_rows
        == result.rows_quarantined
    )
