"""Gridded data on a real LocalCluster: NetCDF files and Zarr stores in, Zarr regions and NetCDF out."""

from __future__ import annotations

import os
from pathlib import Path

import distributed  # noqa: F401  (load its config defaults before a test's dask.config.set: xarray imports it lazily)
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import xarray as xr

import dbatch
from dbatch import (
    Anomaly,
    ByCount,
    ByWindow,
    ConvertUnits,
    NetCDFSink,
    NetCDFSource,
    Pipeline,
    Resample,
    XarrayMap,
    ZarrSink,
    ZarrSource,
)
from dbatch.errors import BadInputError, JobSpecError
from dbatch.spec import load_job

LAT = np.linspace(-10.0, 10.0, 12)
LON = np.linspace(0.0, 30.0, 16)


def day_file(root: Path, day: str, *, lat=LAT, lon=LON, hours: int = 24, offset: int = 0) -> Path:
    """One day of hourly sensor data on a lat/lon grid; values encode the hour and the place."""
    times = pd.date_range(day, periods=hours, freq="h") + pd.Timedelta(hours=offset)
    hour = np.arange(hours, dtype="float32")[:, None, None]
    base = 280.0 + pd.Timestamp(day).day_of_year
    temp = (base + hour + np.zeros((1, len(lat), len(lon)), "float32")).astype("float32")
    ds = xr.Dataset(
        {
            "temperature": (("time", "lat", "lon"), temp, {"units": "K"}),
            "humidity": (("time", "lat", "lon"), np.full(temp.shape, 50.0, "float32")),
            "elevation": (("lat", "lon"), np.ones((len(lat), len(lon)))),
        },
        coords={"time": times, "lat": lat, "lon": lon},
        attrs={"title": "synthetic sensors"},
    )
    root.mkdir(parents=True, exist_ok=True)
    path = root / f"sensors-{day}.nc"
    ds.to_netcdf(path)
    return path


def archive(root: Path, days: int = 4) -> list[Path]:
    return [day_file(root, str(d.date())) for d in pd.date_range("2024-03-01", periods=days)]


def daily_pipeline(tmp_path: Path, **sink_options) -> Pipeline:
    return Pipeline(
        source=NetCDFSource(str(tmp_path / "in" / "*.nc")),
        sink=ZarrSink(
            str(tmp_path / "out" / "daily.zarr"),
            start="2024-03-01",
            freq="1D",
            chunks={"time": 1, "lat": 6},
            **sink_options,
        ),
        steps=[ConvertUnits({"temperature": "degC"}), Resample("1D", how=["mean", "max"])],
        batching=ByWindow("1D"),
        name="daily",
        workdir=str(tmp_path / "work"),
    )


def open_store(path: Path) -> xr.Dataset:
    return xr.open_zarr(path, consolidated=False).load()


def test_netcdf_units_are_files_with_their_first_timestamp(tmp_path):
    archive(tmp_path / "in", days=3)
    units = NetCDFSource(str(tmp_path / "in" / "*.nc")).list_units()
    assert [Path(u.key).name for u in units] == [f"sensors-2024-03-0{d}.nc" for d in (1, 2, 3)]
    assert units[0].time == pd.Timestamp("2024-03-01").timestamp()
    ident = dict(units[0].identity)
    assert ident["size"] == os.path.getsize(units[0].key) and ident["mtime"]
    split = NetCDFSource(str(tmp_path / "in" / "*.nc"), split="6h").list_units()
    assert len(split) == 12 and split[1].key.endswith("#time=2024-03-01T06:00:00")


def test_multi_file_netcdf_to_zarr_with_daily_statistics(tmp_path, client):
    archive(tmp_path / "in", days=4)
    p = daily_pipeline(tmp_path)
    result = p.run(client=client)
    assert result.status == "succeeded", result
    assert result.committed == 4 and result.rows_in == 96
    assert result.rows_in == result.rows_out + result.rows_filtered + result.rows_quarantined
    store = tmp_path / "out" / "daily.zarr"
    ds = open_store(store)
    assert list(ds.time.values) == list(pd.date_range("2024-03-01", periods=4).values)
    assert set(ds.data_vars) >= {
        "temperature_mean",
        "temperature_max",
        "humidity_mean",
        "elevation",
    }
    assert ds.temperature_mean.attrs["units"] == "degC"
    # day-of-year + 280 K + mean hour 11.5, in Celsius
    want = np.array([280 + doy + 11.5 - 273.15 for doy in (61, 62, 63, 64)])
    np.testing.assert_allclose(ds.temperature_mean.isel(lat=0, lon=0).values, want, rtol=1e-5)
    np.testing.assert_allclose(ds.temperature_max.isel(lat=3, lon=5).values, want + 11.5, rtol=1e-5)
    z = xr.open_zarr(store, consolidated=False)
    assert z.temperature_mean.encoding["chunks"] == (1, 6, 16)
    report = p.sink.verify()
    assert report.ok and report.committed == 4 and not report.gaps, report
    # The same pipeline as a NetCDF export: one file per batch, published atomically.
    nc = p.replace(sink=NetCDFSink(str(tmp_path / "out" / "daily-nc")), name="daily-nc").run(
        client=client
    )
    assert nc.status == "succeeded", nc
    files = sorted((tmp_path / "out" / "daily-nc").glob("part-*.nc"))
    assert len(files) == 4 and (tmp_path / "out" / "daily-nc" / "_SUCCESS").exists()
    with xr.open_mfdataset(
        files,
        combine="nested",
        concat_dim="time",
        data_vars="minimal",
        coords="minimal",
        compat="override",
        join="exact",
    ) as mf:
        np.testing.assert_allclose(
            mf.temperature_mean.sortby("time").isel(lat=0, lon=0).values, want, rtol=1e-5
        )


def test_rerun_of_a_window_rewrites_its_region_and_appending_is_idempotent(tmp_path, client):
    files = archive(tmp_path / "in", days=3)
    p = daily_pipeline(tmp_path)
    assert p.run(client=client).committed == 3
    store = tmp_path / "out" / "daily.zarr"
    again = p.run(client=client)
    assert again.status == "nothing_to_do" and again.committed == 0
    # Day 2 is delivered again with other values: only its region is rewritten.
    with xr.open_dataset(files[1]) as f:
        ds2 = f.load()
    ds2["temperature"] = ds2.temperature + 10
    ds2.to_netcdf(files[1])
    os.utime(files[1], (2e9, 2e9))
    third = p.run(client=client)
    assert third.committed == 1 and third.skipped == 2, third
    ds = open_store(store)
    assert ds.sizes["time"] == 3
    first, second = ds.temperature_mean.isel(lat=0, lon=0).values[:2]
    assert second - first == pytest.approx(11.0, rel=1e-4)  # one day later + 10 K
    # A new day appends one step; running again appends nothing.
    day_file(tmp_path / "in", "2024-03-04")
    assert p.run(client=client).committed == 1
    assert p.run(client=client).status == "nothing_to_do"
    ds = open_store(store)
    assert ds.sizes["time"] == 4 and ds.indexes["time"].is_unique
    # Re-committing a committed batch directly writes the same region again.
    batch = p.plan()[0]
    committed = p.work_area() / "batches" / f"{batch.id}-{batch.fingerprint}"
    from dbatch.sinks.base import Part

    p.sink.commit_batch(batch.id, batch.fingerprint, Part(batch.id, committed, 1))
    assert open_store(store).sizes["time"] == 4
    assert p.sink.find_commit(batch.id, batch.fingerprint)
    assert not p.sink.find_commit(batch.id, "another-fingerprint")


def test_misaligned_region_is_refused_before_writing(tmp_path, client):
    for d in ("2024-03-01", "2024-03-02"):
        day_file(tmp_path / "in", d)
    p = Pipeline(
        source=NetCDFSource(str(tmp_path / "in" / "*.nc"), split="12h"),
        sink=ZarrSink(
            str(tmp_path / "out" / "hourly.zarr"),
            start="2024-03-01",
            end="2024-03-02T23:00",
            freq="1h",
            chunks={"time": 24},
        ),
        batching=ByWindow("12h"),
        name="hourly",
        workdir=str(tmp_path / "work"),
    )
    result = p.run(client=client)
    assert result.status == "failed" and result.committed == 0 and result.failed == 4
    messages = [b["error_message"] for b in result.batches]
    assert all(
        "'time'" in m and "chunks of 24" in m and "Nothing was written" in m for m in messages
    )
    assert not (tmp_path / "out" / "hourly.zarr").exists()
    # Whole days line up with the chunks.
    fixed = p.replace(
        source=NetCDFSource(str(tmp_path / "in" / "*.nc")), batching=ByWindow("1D")
    ).run(client=client)
    assert fixed.status == "succeeded", fixed
    assert open_store(tmp_path / "out" / "hourly.zarr").sizes["time"] == 48


def test_verify_detects_a_deleted_chunk_and_a_rerun_rewrites_it(tmp_path, client):
    archive(tmp_path / "in", days=3)
    p = daily_pipeline(tmp_path)
    assert p.run(client=client).status == "succeeded"
    store = tmp_path / "out" / "daily.zarr"
    assert p.sink.verify().ok
    chunk = store / "temperature_mean" / "c" / "1" / "1" / "0"
    assert chunk.exists()
    chunk.unlink()
    report = p.sink.verify()
    assert not report.ok
    [(batch_id, variable, key)] = report.missing_chunks
    assert variable == "temperature_mean" and key == "c/1/1/0"
    assert "missing" in str(report) and batch_id in str(report)
    # Reading the store silently gives fill values there; a re-run rewrites the chunk.
    assert np.isnan(open_store(store).temperature_mean.isel(time=1, lat=7).values).all()
    p.run(client=client)
    assert chunk.exists() and p.sink.verify().ok
    assert not np.isnan(open_store(store).temperature_mean.values).any()


def test_half_written_region_is_not_a_commit(tmp_path, client):
    archive(tmp_path / "in", days=2)
    p = daily_pipeline(tmp_path)
    assert p.run(client=client).status == "succeeded"
    batch = p.plan()[1]
    # A driver that died inside the region write leaves the batch's record "writing".
    p.sink._write_marker(batch.id, batch.fingerprint, "writing", [1, 2], p.sink._meta()["store_id"])
    assert not p.sink.find_commit(batch.id, batch.fingerprint)
    report = p.sink.verify()
    assert not report.ok and report.incomplete == (batch.id,)
    p.run(client=client)  # the committed batch is written again
    assert p.sink.find_commit(batch.id, batch.fingerprint) and p.sink.verify().ok


def test_mismatched_grid_file_is_quarantined_and_the_others_commit(tmp_path, client):
    archive(tmp_path / "in", days=4)
    day_file(tmp_path / "in", "2024-03-03", lat=np.linspace(-10.0, 10.0, 10))  # another grid
    p = daily_pipeline(tmp_path)
    result = p.run(client=client)
    assert result.ok and result.committed == 4 and result.files_quarantined == 1, result
    assert result.rows_in == 72
    [bad] = [b for b in result.batches if b.get("files_quarantined")]
    from dbatch.ledger import Ledger

    ledger = Ledger(p.ledger_url())
    frame = ledger.batches_frame("daily")
    ledger.close()
    assert (frame["files_quarantined"] > 0).sum() == 1
    ds = open_store(tmp_path / "out" / "daily.zarr")
    assert ds.sizes["time"] == 4
    assert np.isnan(ds.temperature_mean.sel(time="2024-03-03").values).all()
    assert not np.isnan(ds.temperature_mean.sel(time="2024-03-04").values).any()
    report = p.sink.verify()
    assert report.ok and report.gaps == (("2024-03-03T00:00:00", "2024-03-03T00:00:00"),)
    # The quarantine names the file and what differs.
    plan = p.plan()
    bad_batch = next(b for b in plan if b.id == bad["batch_id"])
    ctx = dbatch.context.BatchContext(batch=bad_batch)
    assert p.source.load(bad_batch, ctx).sizes == {}
    [q] = ctx.files
    assert q.kind == "layout" and "sensors-2024-03-03.nc" in q.key
    assert "dimension 'lat' has 10 points here, 12 points in the reference" in q.message
    with pytest.raises(BadInputError, match="lat"):
        p.source.load(bad_batch, dbatch.context.BatchContext(batch=bad_batch, mode="fail_fast"))


def test_zarr_source_reads_chunks_and_quarantines_a_store_with_another_layout(tmp_path, client):
    for name, lat in (("a", LAT), ("b", LAT), ("c", LAT[:5])):
        ds = (
            xr.open_mfdataset(
                archive(tmp_path / f"nc-{name}", days=2),
                combine="by_coords",
                data_vars="minimal",
                coords="minimal",
                compat="override",
                join="exact",
            )
            .sel(lat=lat)
            .load()
        )
        ds.chunk({"time": 12}).to_zarr(
            tmp_path / f"st-{name}.zarr", consolidated=False, zarr_format=3
        )
    src = ZarrSource(str(tmp_path / "st-*.zarr"))
    units = src.list_units()
    assert len(units) == 12  # 3 stores x 4 chunks of 12 hours
    assert dict(units[0].identity)["start"] == 0 and dict(units[1].identity)["start"] == 12
    p = Pipeline(
        source=src,
        sink=NetCDFSink(str(tmp_path / "out" / "nc")),
        steps=[XarrayMap(lambda ds: ds.isel(time=slice(0, 6)))],
        batching=ByCount(2),
        name="zsrc",
        workdir=str(tmp_path / "work"),
    )
    result = p.run(client=client)
    assert result.ok and result.committed == 6 and result.files_quarantined == 4, result
    assert result.rows_in == 8 * 12 and result.rows_out == 4 * 6
    assert result.rows_in == result.rows_out + result.rows_filtered
    assert len(list((tmp_path / "out" / "nc").glob("*.nc"))) == 4


def test_anomaly_and_unit_steps(tmp_path):
    path = day_file(tmp_path / "in", "2024-03-01")
    with xr.open_dataset(path) as f:
        ds = f.load()
    clim = ds.groupby("time.hour").mean()
    ctx = dbatch.context.BatchContext(batch=dbatch.Batch("b", (), "f"))
    out = Anomaly(clim, by="hour").apply(ds, ctx)
    assert float(abs(out.temperature).max()) == 0.0 and "hour" not in out.coords
    import pickle

    payload = pickle.dumps(Anomaly(clim, by="hour"))
    assert len(payload) < 2000 and pickle.loads(payload).climatology is None  # sent once per worker
    clim.to_netcdf(tmp_path / "clim.nc")
    assert (
        float(abs(Anomaly(str(tmp_path / "clim.nc"), by="hour").apply(ds, ctx).humidity).max()) == 0
    )
    hpa = ConvertUnits({"temperature": "degF"}).apply(ds, ctx)
    assert hpa.temperature.attrs["units"] == "degF" and hpa.temperature.dtype == np.float32
    np.testing.assert_allclose(
        hpa.temperature.values[0, 0, 0],
        (ds.temperature.values[0, 0, 0] - 273.15) * 9 / 5 + 32,
        rtol=1e-6,
    )
    with pytest.raises(BadInputError, match="humidity"):
        ConvertUnits({"humidity": "degC"}).apply(ds, ctx)
    with pytest.raises(JobSpecError, match="unknown unit"):
        ConvertUnits({"temperature": "furlongs"})
    with pytest.raises(JobSpecError, match="Dataset"):
        Resample("1D").apply(pa.table({"x": [1]}), ctx)


def test_job_file_round_trip(tmp_path, client):
    archive(tmp_path / "in", days=2)
    (tmp_path / "job.yaml").write_text(
        """
name: sensors
source:
  type: netcdf
  path: in/*.nc
  variables: [temperature, humidity]
batching: {window: 1D}
steps:
  - convert_units: {to: {temperature: degC}}
  - resample: {freq: 1D, how: [mean, min]}
sink:
  type: zarr
  path: out/sensors.zarr
  start: 2024-03-01
  freq: 1D
  chunks: {time: 1}
"""
    )
    job = load_job(tmp_path / "job.yaml")
    p = job.pipeline
    assert isinstance(p.source, NetCDFSource) and isinstance(p.sink, ZarrSink)
    assert p.sink.start == "2024-03-01T00:00:00"
    assert [type(s).__name__ for s in p.steps] == ["ConvertUnits", "Resample"]
    result = p.run(client=client)
    assert result.status == "succeeded", result
    ds = open_store(tmp_path / "out" / "sensors.zarr")
    assert sorted(ds.data_vars) == [
        "humidity_mean",
        "humidity_min",
        "temperature_mean",
        "temperature_min",
    ]
    # Same file, same plan: ids and fingerprints are stable.
    again = load_job(tmp_path / "job.yaml").pipeline.plan()
    assert [(b.id, b.fingerprint) for b in again] == [(b.id, b.fingerprint) for b in p.plan()]
    (tmp_path / "bad.yaml").write_text(
        "source: {type: netcdf, path: in/*.nc}\nsink: {type: zarr, path: o.zarr, start: 2024-03-01, freq: MS}\n"
    )
    with pytest.raises(JobSpecError, match="fixed step"):
        load_job(tmp_path / "bad.yaml")


def test_existing_store_with_another_layout_is_refused(tmp_path, client):
    archive(tmp_path / "in", days=2)
    p = daily_pipeline(tmp_path)
    assert p.run(client=client).ok
    other = p.replace(sink=ZarrSink(p.sink.path, start="2024-03-01", freq="1D", chunks={"time": 2}))
    result = other.run(client=client)
    assert result.status == "failed"
    message = result.batches[0]["error_message"]
    assert (
        "daily.zarr" in message and "chunks of 1 along 'time'" in message and "new path" in message
    )


def test_a_day_that_leaves_the_plan_is_withdrawn_from_the_store(tmp_path, client):
    files = archive(tmp_path / "in", days=3)
    p = daily_pipeline(tmp_path)
    assert p.run(client=client).committed == 3
    store = tmp_path / "out" / "daily.zarr"
    assert (store / "temperature_mean" / "c" / "1" / "0" / "0").exists()
    files[1].unlink()
    result = p.run(client=client)
    assert result.ok and result.skipped == 2, result
    assert not (store / "temperature_mean" / "c" / "1" / "0" / "0").exists()
    ds = open_store(store)
    assert np.isnan(ds.temperature_mean.isel(time=1).values).all()
    assert not np.isnan(ds.temperature_mean.isel(time=[0, 2]).values).any()
    report = p.sink.verify()
    assert report.ok and report.committed == 2
    assert report.gaps == (("2024-03-02T00:00:00", "2024-03-02T00:00:00"),)


_WITHOUT_NETCDF4 = """
import sys
sys.modules["netCDF4"] = None  # the base install: h5netcdf and h5py, no netCDF4 package
from pathlib import Path
import numpy as np, pandas as pd, xarray as xr
from dbatch import ByCount, NetCDFSink, NetCDFSource, Pipeline, ZarrSink
from dbatch.executors import LocalExecutor

root = Path(sys.argv[1])
(root / "in").mkdir()
for day in ("2024-03-01", "2024-03-02"):
    times = pd.date_range(day, periods=24, freq="h")
    ds = xr.Dataset({"t": (("time", "x"), np.arange(48.0).reshape(24, 2))}, coords={"time": times})
    ds.to_netcdf(root / "in" / f"{day}.nc")  # xarray's default writer: h5netcdf here
source = NetCDFSource(str(root / "in" / "*.nc"))
for name, sink in [
    ("nc", NetCDFSink(str(root / "out" / "nc"))),
    ("zarr", ZarrSink(str(root / "out" / "z.zarr"), start="2024-03-01", freq="h")),
]:
    p = Pipeline(source=source, sink=sink, batching=ByCount(1), name=name, workdir=str(root / "work"))
    result = p.run(executor=LocalExecutor())
    assert result.ok, result
back = xr.open_mfdataset(sorted((root / "out" / "nc").glob("*.nc")), engine="h5netcdf").load()
assert back.sizes["time"] == 48 and float(back["t"].sum()) == 2 * float(np.arange(48.0).sum())
print("ok", xr.open_zarr(root / "out" / "z.zarr", consolidated=False).sizes["time"])
"""


def test_netcdf_in_and_out_without_the_netcdf4_package(tmp_path):
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", _WITHOUT_NETCDF4, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["ok", "48"]


def test_the_netcdf_sink_engine_is_an_option_of_the_job_file(tmp_path):
    (tmp_path / "job.yaml").write_text(
        "name: e\nsource: {type: netcdf, path: in/*.nc}\n"
        "sink: {type: netcdf, path: out, engine: netcdf4}\n"
    )
    assert load_job(tmp_path / "job.yaml").pipeline.sink.engine == "netcdf4"
    assert NetCDFSink(str(tmp_path / "o")).engine == "h5netcdf"
    with pytest.raises(JobSpecError, match="h5netcdf"):
        NetCDFSink(str(tmp_path / "o"), engine="hdf5")
