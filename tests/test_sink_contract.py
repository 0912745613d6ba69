"""The sink contract of dbatch.testing, run against every registered sink and a user's own."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest
import sqlalchemy as sa
import xarray as xr

from dbatch import CsvSink, NetCDFSink, ParquetSink, ReportSink, SqlSink, ZarrSink
from dbatch.arrow import as_arrow
from dbatch.registry import SINKS, register
from dbatch.sinks import PublishedDirectory
from dbatch.spec import pipeline_from_dict
from dbatch.testing import GriddedInput, SinkContract

CSV_TYPES = {"id": pa.string(), "account": pa.string(), "amount": pa.float64(), "day": pa.date32()}
TABLE_COLUMNS = ["id", "account", "amount", "day"]


def read_table(url: str, table: str) -> pd.DataFrame:
    eng = sa.create_engine(url)
    try:
        if not sa.inspect(eng).has_table(table):
            return pd.DataFrame(columns=TABLE_COLUMNS)
        with eng.connect() as con:
            return pd.read_sql(sa.select(sa.Table(table, sa.MetaData(), autoload_with=con)), con)
    finally:
        eng.dispose()


# -- file sinks ---------------------------------------------------------------------------


class TestParquetSinkContract(SinkContract):
    @pytest.fixture
    def make_sink(self):
        return lambda root: ParquetSink(str(root / "out" / "result"))

    @pytest.fixture
    def read_output(self):
        return lambda sink: pd.read_parquet(sink.path)


class TestCsvSinkContract(SinkContract):
    @pytest.fixture
    def make_sink(self):
        return lambda root: CsvSink(str(root / "out" / "result"))

    @pytest.fixture
    def read_output(self):
        def read(sink):
            options = pacsv.ConvertOptions(column_types=CSV_TYPES)
            files = sorted(Path(sink.path).glob("*.csv"))
            tables = [pacsv.read_csv(f, convert_options=options) for f in files]
            return pa.concat_tables(tables).to_pandas()

        return read


class TestReportSinkContract(SinkContract):
    @pytest.fixture
    def make_sink(self):
        return lambda root: ReportSink(
            str(root / "out" / "report"), x="day", y="amount", by="account"
        )

    @pytest.fixture
    def read_output(self):
        def read(sink):
            out = Path(sink.path)
            # The page a reader opens belongs to the same published version as the data.
            run_id = (out / "_SUCCESS").read_text().strip()
            assert run_id in (out / "report.html").read_text()
            return pd.read_parquet(out / "data")

        return read


# -- database sinks -------------------------------------------------------------------------


class TestSqliteSinkContract(SinkContract):
    @pytest.fixture
    def make_sink(self):
        return lambda root: SqlSink(f"sqlite:///{root / 'warehouse.db'}", table="facts")

    @pytest.fixture
    def read_output(self):
        return lambda sink: read_table(sink.url, sink.table).drop(columns=[sink.batch_column])


@pytest.fixture
def pg_tables(postgres_url):
    """The PostgreSQL URL and a unique table-name prefix; drops what the test created."""
    prefix = f"t{uuid.uuid4().hex[:10]}"
    yield postgres_url, prefix
    eng = sa.create_engine(postgres_url)
    with eng.begin() as con:
        names = con.execute(
            sa.text("select tablename from pg_tables where tablename like :p"), {"p": prefix + "%"}
        ).scalars()
        for name in list(names):
            con.execute(sa.text(f'drop table if exists "{name}" cascade'))
        for marker in ("dbatch_sink_commits", "dbatch_sink_publishes"):
            if sa.inspect(con).has_table(marker):
                con.execute(
                    sa.text(f"delete from {marker} where table_name like :p"), {"p": prefix + "%"}
                )
    eng.dispose()


class TestPostgresReplaceSinkContract(SinkContract):
    mode = "replace"

    @pytest.fixture
    def make_sink(self, pg_tables):
        url, prefix = pg_tables

        def make(root: Path) -> SqlSink:
            name = f"{prefix}_{uuid.uuid5(uuid.NAMESPACE_URL, str(root)).hex[:8]}"
            if self.mode == "upsert":
                return SqlSink(url, table=name, mode="upsert", key="id")
            return SqlSink(url, table=name)

        return make

    @pytest.fixture
    def read_output(self):
        return lambda sink: read_table(sink.url, sink.table).drop(columns=[sink.batch_column])


class TestPostgresUpsertSinkContract(TestPostgresReplaceSinkContract):
    mode = "upsert"


# -- gridded sinks: real NetCDF days in ----------------------------------------------------


class TestZarrSinkContract(SinkContract):
    """Hourly NetCDF days in, one Zarr store out."""

    @pytest.fixture
    def sink_input(self):
        return GriddedInput("netcdf")

    @pytest.fixture
    def make_sink(self):
        return lambda root: ZarrSink(
            str(root / "hourly.zarr"), start="2024-03-01", freq="1h", chunks={"time": 24}
        )

    @pytest.fixture
    def read_output(self):
        def read(sink):
            with xr.open_zarr(sink.path, consolidated=False) as z:
                ds = z.load()
            ds.attrs.pop("dbatch")
            return ds

        return read


def read_netcdf_parts(folder: str) -> xr.Dataset:
    """Every ``*.nc`` file of a published NetCDF output, combined along time."""
    pieces = []
    for path in sorted(Path(folder).glob("*.nc")):
        with xr.open_dataset(path, cache=False) as ds:
            pieces.append(ds.load())
    assert pieces, f"no NetCDF file in {folder}"
    combined = xr.concat(
        pieces, dim="time", data_vars="minimal", coords="minimal", compat="override", join="exact"
    )
    return combined.sortby("time")


class TestNetCDFSinkContract(SinkContract):
    """Hourly NetCDF days in, one NetCDF file per batch out."""

    @pytest.fixture
    def sink_input(self):
        return GriddedInput("netcdf")

    @pytest.fixture
    def make_sink(self):
        return lambda root: NetCDFSink(str(root / "out" / "hourly-nc"))

    @pytest.fixture
    def read_output(self):
        return lambda sink: read_netcdf_parts(sink.path)


# -- a user's own sink, known to job files by the name it was registered under ---------------


@dataclass(frozen=True)
class JsonLinesSink:
    """One JSON-lines file per batch, published as a whole: a sink as a user would write one."""

    path: str

    def describe(self) -> str:
        return f"jsonl {self.path}"

    def token(self) -> list[Any]:
        return ["example-jsonl"]

    @property
    def location(self) -> str:
        return self.path

    def stage(self, data: Any, directory: Path, name: str) -> dict[str, Any]:
        rows = as_arrow(data).to_pylist()
        out = directory / f"part-{name}.jsonl"
        out.write_text("".join(json.dumps(r, default=str) + "\n" for r in rows))
        return {"files": [{"path": out.name, "rows": len(rows)}], "rows": len(rows)}

    def publish(self, run_id: str, parts: Sequence[Any], summary: dict[str, Any]) -> dict:
        files = [(f.name, f) for part in parts for f in sorted(part.directory.glob("*.jsonl"))]
        final = PublishedDirectory(self.path).publish(run_id, files, {"run_id": run_id, **summary})
        return {"path": self.path, "version": str(final)}


def read_json_lines(folder: str) -> pd.DataFrame:
    rows = [json.loads(line) for f in sorted(Path(folder).glob("*.jsonl")) for line in f.open()]
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)


@pytest.fixture
def example_sink_registered():
    register("sink", "example_jsonl", f"{__name__}:JsonLinesSink")
    yield "example_jsonl"
    del SINKS["example_jsonl"]


class TestRegisteredExampleSinkContract(SinkContract):
    @pytest.fixture
    def make_sink(self, example_sink_registered):
        def make(root: Path) -> Any:
            job = {
                "source": {"type": "files", "path": str(root / "input" / "*.csv")},
                "sink": {"type": example_sink_registered, "path": str(root / "out" / "rows")},
            }
            return pipeline_from_dict(job).sink

        return make

    @pytest.fixture
    def read_output(self):
        return lambda sink: read_json_lines(sink.path)

    def test_the_job_file_name_builds_the_users_class(self, make_sink, tmp_path):
        assert isinstance(make_sink(tmp_path), JsonLinesSink)
