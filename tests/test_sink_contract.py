"""The sink contract of dbatch.testing, run against the Parquet and CSV sinks."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv

from dbatch import CsvSink, ParquetSink
from dbatch.testing import SinkContract

CSV_TYPES = {"id": pa.string(), "account": pa.string(), "amount": pa.float64(), "day": pa.date32()}


class TestParquetSinkContract(SinkContract):
    def make_sink(self, tmp_path):
        return ParquetSink(str(tmp_path / "out" / "result"))

    def read_output(self, sink):
        return pd.read_parquet(sink.path)


class TestCsvSinkContract(SinkContract):
    def make_sink(self, tmp_path):
        return CsvSink(str(tmp_path / "out" / "result"))

    def read_output(self, sink):
        options = pacsv.ConvertOptions(column_types=CSV_TYPES)
        files = sorted(Path(sink.path).glob("*.csv"))
        return pa.concat_tables(
            pacsv.read_csv(f, convert_options=options) for f in files
        ).to_pandas()
