"""The files source: formats, globs, fsspec URLs, compression, batching by size and count."""

from __future__ import annotations

import gzip
import json

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dbatch import ByCount, BySize, Files, ParquetSink, Pipeline
from dbatch.errors import JobSpecError, SourceError


@pytest.fixture
def mixed(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    pd.DataFrame({"id": [1, 2], "x": [0.5, 1.5]}).to_csv(d / "a.csv", index=False)
    pq.write_table(pa.table({"id": [3, 4], "x": [2.5, 3.5]}), d / "b.parquet")
    (d / "c.jsonl").write_text(
        "\n".join(json.dumps({"id": i, "x": i + 0.5}) for i in (5, 6)) + "\n"
    )
    with gzip.open(d / "d.csv.gz", "wt") as f:
        f.write("id,x\n7,7.5\n8,8.5\n")
    return d


def test_reads_csv_parquet_jsonl_and_gzip_with_one_schema(mixed, tmp_path, client):
    p = Pipeline(
        Files(
            [
                str(mixed / "*.csv"),
                str(mixed / "*.parquet"),
                str(mixed / "*.jsonl"),
                str(mixed / "*.csv.gz"),
            ],
            schema={"id": "int64", "x": "float64"},
        ),
        ParquetSink(str(tmp_path / "out")),
        batching=ByCount(2),
        workdir=str(tmp_path / "w"),
    )
    assert p.plan().n_units == 4
    result = p.run(client=client)
    assert result.ok and result.rows_out == 8 and result.rows_quarantined == 0
    frame = pd.read_parquet(tmp_path / "out").sort_values("id")
    assert frame["id"].tolist() == list(range(1, 9))
    assert str(frame["id"].dtype) == "int64"


def test_fsspec_file_urls_and_source_column(mixed, tmp_path):
    src = Files(
        f"file://{mixed}/*.csv", schema={"id": "int64", "x": "float64"}, source_column="_file"
    )
    p = Pipeline(src, ParquetSink(str(tmp_path / "out")), workdir=str(tmp_path / "w"))
    frame = p.preview()
    assert frame["_file"].str.endswith("a.csv").all()


def test_batching_by_size_and_count(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    for i in range(10):
        (d / f"{i:02d}.csv").write_text("a\n" + "1\n" * 100)
    size = (d / "00.csv").stat().st_size
    by_size = Pipeline(
        Files(str(d / "*.csv")), ParquetSink(str(tmp_path / "o")), batching=BySize(size * 3)
    ).plan()
    assert [len(b.units) for b in by_size] == [3, 3, 3, 1]
    by_count = Pipeline(
        Files(str(d / "*.csv")), ParquetSink(str(tmp_path / "o")), batching=ByCount(4)
    ).plan()
    assert [len(b.units) for b in by_count] == [4, 4, 2]


def test_missing_inputs_are_clear_errors(tmp_path):
    with pytest.raises(SourceError, match="does not exist"):
        Files(str(tmp_path / "nope.csv")).list_units()
    with pytest.raises(SourceError, match="no input files match"):
        Files(str(tmp_path / "*.csv")).list_units()
    with pytest.raises(JobSpecError, match="unknown file format"):
        Files("x", format="xlsx")


def test_credentials_are_redacted_in_errors(tmp_path):
    with pytest.raises(SourceError) as e:
        Files("s3://AKIAEXAMPLE:s3cret@bucket/landing/*.csv").list_units()
    assert "s3cret" not in str(e.value)


def test_quarantine_never_keeps_credentials():
    from dbatch.context import BatchContext
    from dbatch.core import Batch

    ctx = BatchContext(batch=Batch("b", (), "f"))
    ctx.quarantine_file(
        "s3://AKIA:s3cret@bucket/x.csv", "corrupt", "cannot read s3://AKIA:s3cret@bucket/x.csv"
    )
    ctx.quarantine_rows("https://api.example.com/items?token=s3cret", "json", "bad", ["{"], [1])
    assert "s3cret" not in repr(ctx.files)
    assert "s3cret" not in str(ctx.quarantined_rows().to_pylist())
    assert ctx.files[0].key == "s3://***@bucket/x.csv"


def test_csv_lines_find_quotes_as_a_count_per_line_would():
    """The quote count per line (found from the quotes' positions) against counting each line."""
    import random

    import numpy as np

    from dbatch.sources.files.csv import Lines

    rng = random.Random(7)
    for _ in range(200):
        pieces = [rng.choice(["a", '"', ",", "\n", "\r\n", "\r", '""', "x"]) for _ in range(60)]
        data = "".join(pieces).encode()
        lines = Lines(data)
        texts = [lines.text(i + 1) or "" for i in range(len(lines))]
        counts = np.array([t.count('"') for t in texts], np.int64)
        assert lines.odd_quotes().tolist() == np.flatnonzero(counts % 2 == 1).tolist(), data
        assert lines.with_quotes().tolist() == np.flatnonzero(counts > 0).tolist(), data
    assert Lines(b"a,b\n1,2\n").odd_quotes().tolist() == []
    # A quoted header over a body with no quote, or with its first quote far down (the
    # search for quotes then starts there): counted as each line would count them.
    for _ in range(200):
        header = "".join(rng.choice(['"a"', '"', "b", ","]) for _ in range(rng.randrange(0, 6)))
        body = ["".join(rng.choice("ab,") for _ in range(5)) for _ in range(rng.randrange(0, 30))]
        if body and rng.random() < 0.5:
            body[rng.randrange(len(body))] += rng.choice(['"', '""', '"x'])
        data = "\n".join([header, *body]).encode()
        lines = Lines(data)
        texts = [lines.text(i + 1) or "" for i in range(len(lines))]
        counts = np.array([t.count('"') for t in texts], np.int64)
        assert lines.quotes().tolist() == counts.tolist(), data
    assert Lines(b"").quotes().tolist() == [0]


def test_csv_lines_of_a_text_longer_than_the_search_chunk_are_its_lines():
    """Line breaks and quotes are searched a chunk at a time: across chunks, the same lines."""
    import random

    import numpy as np

    from dbatch.sources.files import csv as csv_module
    from dbatch.sources.files.csv import Lines, positions

    rng = random.Random(11)
    for breaks in (["\n"], ["\n", "\r\n"], ["\n", "\r\n", "\r"]):
        rows = [
            "".join(rng.choice('ab,"') for _ in range(rng.randrange(0, 40))) + rng.choice(breaks)
            for _ in range(4 * csv_module._CHUNK // 20)
        ]
        data = "".join(rows).encode()
        assert len(data) > 3 * csv_module._CHUNK
        buf = np.frombuffer(data, np.uint8)
        for byte in (10, 34):
            assert positions(buf, byte).tolist() == np.flatnonzero(buf == byte).tolist()
        lines = Lines(data)
        want = data.decode().splitlines()
        assert [lines.text(i + 1) for i in range(len(lines))] == want
        counts = np.array([t.count('"') for t in want], np.int64)
        assert lines.odd_quotes().tolist() == np.flatnonzero(counts % 2 == 1).tolist()
        assert lines.non_empty().tolist() == [i for i, t in enumerate(want) if t]
