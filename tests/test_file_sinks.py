"""File sinks: versions published atomically, manifest and _SUCCESS, CSV exports, partitions."""

from __future__ import annotations

import hashlib
import json

import pandas as pd
import pyarrow as pa
import pytest

from dbatch import ByCount, CsvSink, Files, ParquetSink, Pipeline
from dbatch.errors import CommitError


def inputs(tmp_path, n=4):
    d = tmp_path / "in"
    d.mkdir(exist_ok=True)
    for i in range(n):
        pd.DataFrame(
            {"id": [f"{i}-{j}" for j in range(10)], "region": ["eu", "us"] * 5, "v": range(10)}
        ).to_csv(d / f"{i}.csv", index=False)
    return d


def test_manifest_lists_files_rows_and_checksums(tmp_path, client):
    d = inputs(tmp_path)
    out = tmp_path / "out"
    Pipeline(
        Files(str(d / "*.csv")),
        ParquetSink(str(out)),
        batching=ByCount(2),
        workdir=str(tmp_path / "w"),
    ).run(client=client)
    manifest = json.loads((out / "_manifest.json").read_text())
    assert manifest["rows_out"] == 40 and len(manifest["files"]) == 2
    for f in manifest["files"]:
        data = (out / f["path"]).read_bytes()
        assert f["sha256"] == hashlib.sha256(data).hexdigest() and f["bytes"] == len(data)
    assert (out / "_SUCCESS").read_text().strip() == manifest["run_id"]


def test_publishing_reuses_the_checksums_taken_when_the_batch_was_staged(
    tmp_path, client, monkeypatch
):
    """The driver does not read every output file again at the end of a run."""
    import dbatch.sinks.files as files_module

    d = inputs(tmp_path)
    out = tmp_path / "out"
    read_again = []
    monkeypatch.setattr(files_module, "file_checksum", lambda path: read_again.append(path) or "x")
    Pipeline(
        Files(str(d / "*.csv")),
        ParquetSink(str(out)),
        batching=ByCount(2),
        workdir=str(tmp_path / "w"),
    ).run(client=client)
    manifest = json.loads((out / "_manifest.json").read_text())
    assert read_again == []  # staged on the workers (their own processes), not here
    for f in manifest["files"]:
        assert f["sha256"] == hashlib.sha256((out / f["path"]).read_bytes()).hexdigest()


def test_new_version_replaces_old_only_when_complete(tmp_path, client):
    d = inputs(tmp_path)
    out = tmp_path / "out"
    p = Pipeline(
        Files(str(d / "*.csv")),
        ParquetSink(str(out)),
        batching=ByCount(2),
        workdir=str(tmp_path / "w"),
    )
    p.run(client=client)
    first = out.resolve()
    inputs(tmp_path, n=6)
    p.run(client=client)
    assert out.resolve() != first
    assert len(pd.read_parquet(out)) == 60
    # the previous version is kept until the next publish, then pruned
    assert first.exists()


def test_refuses_to_replace_a_folder_it_did_not_write(tmp_path, client):
    d = inputs(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    with pytest.raises(CommitError, match="was not written by dbatch"):
        Pipeline(Files(str(d / "*.csv")), ParquetSink(str(out)), workdir=str(tmp_path / "w")).run(
            client=client
        )
    assert (out / "precious.txt").read_text() == "keep me"


def test_csv_export_with_partitions(tmp_path, client):
    d = inputs(tmp_path)
    out = tmp_path / "export"
    Pipeline(
        Files(str(d / "*.csv")),
        CsvSink(str(out), partition_by=["region"]),
        batching=ByCount(2),
        workdir=str(tmp_path / "w"),
    ).run(client=client)
    eu = pd.concat(pd.read_csv(f) for f in sorted((out / "region=eu").glob("*.csv")))
    assert len(eu) == 20 and "region" not in eu.columns
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["region=eu", "region=us"]


def test_parquet_compression_is_part_of_the_fingerprint(tmp_path):
    """Changing the compression rewrites the batches; a re-run would otherwise publish the old files."""
    d = inputs(tmp_path, n=2)

    def plan(compression):
        sink = ParquetSink(str(tmp_path / "out"), compression=compression)
        return Pipeline(Files(str(d / "*.csv")), sink, batching=ByCount(1)).plan()

    snappy, zstd = plan("snappy"), plan("zstd")
    assert [b.id for b in snappy] == [b.id for b in zstd]
    assert not {b.fingerprint for b in snappy} & {b.fingerprint for b in zstd}
    assert [b.fingerprint for b in plan("zstd")] == [b.fingerprint for b in zstd]


def test_parquet_dictionary_only_where_values_repeat(tmp_path, client):
    """Scores and amounts are written plainly (faster, smaller); codes and text keep a dictionary."""
    import numpy as np
    import pyarrow.parquet as pq

    d = tmp_path / "in"
    d.mkdir()
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "score": rng.random(30_000),
            "code": rng.integers(0, 5, 30_000),
            "region": rng.choice(["eu", "us"], 30_000),
        }
    )
    frame.to_parquet(d / "a.parquet", index=False)
    out = tmp_path / "out"
    Pipeline(Files(str(d / "*.parquet")), ParquetSink(str(out)), workdir=str(tmp_path / "w")).run(
        client=client
    )
    [written] = sorted(out.glob("*.parquet"))
    meta = pq.ParquetFile(written).metadata
    encodings = {
        meta.schema.column(i).name: meta.row_group(0).column(i).encodings
        for i in range(meta.num_columns)
    }
    assert "RLE_DICTIONARY" not in encodings["score"]
    assert "RLE_DICTIONARY" in encodings["code"] and "RLE_DICTIONARY" in encodings["region"]
    pd.testing.assert_frame_equal(pd.read_parquet(written), frame)


# -- an aggregate's reduce output, written by DuckDB itself -------------------------


def _reduce_inputs():
    import pyarrow as pa

    return {
        "t": pa.table(
            {
                "k": ["a", "b", "a", None],
                "d": pa.array([1, 2, 1, 3], pa.date32()),
                "x": [1.0, 2.0, 3.0, 4.0],
                "ts": pa.array([1, 2, 3, 4], pa.timestamp("us")),
            }
        )
    }


def test_reduce_output_written_by_duckdb_reads_back_like_the_arrow_path(tmp_path):
    import pyarrow.parquet as pq

    from dbatch.engine import query
    from dbatch.sinks.base import file_checksum

    tables = _reduce_inputs()
    sql = "SELECT k, d, sum(x) AS s, count(*) AS n FROM t GROUP BY k, d ORDER BY k NULLS LAST"
    sink = ParquetSink(str(tmp_path / "out"))
    direct, arrow = tmp_path / "direct", tmp_path / "arrow"
    direct.mkdir(), arrow.mkdir()
    info, rows = sink.stage_query(sql, tables, direct, "000")
    want = sink.stage(query(sql, tables), arrow, "000")
    assert rows == info["rows"] == want["rows"] == 3
    got_file, want_file = direct / "part-000.parquet", arrow / "part-000.parquet"
    assert "DuckDB" in pq.ParquetFile(got_file).metadata.created_by  # not through Arrow
    assert pq.read_table(got_file).equals(pq.read_table(want_file))  # same types and rows
    listing = json.loads((direct / "_files.json").read_text())
    assert listing == info["files"]
    assert listing[0] == {
        "path": "part-000.parquet",
        "rows": 3,
        "bytes": got_file.stat().st_size,
        "sha256": file_checksum(got_file),
    }


@pytest.mark.parametrize("case", ["partitioned", "lz4", "timestamp"])
def test_reduce_output_goes_through_arrow_where_duckdb_would_write_it_differently(tmp_path, case):
    import pyarrow.parquet as pq

    sql = "SELECT k, d, sum(x) AS s FROM t GROUP BY k, d"
    options = {}
    if case == "partitioned":
        options["partition_by"] = ["d"]
    elif case == "lz4":
        options["compression"] = "lz4"
    else:
        sql = "SELECT k, max(ts) AS last FROM t GROUP BY k"
    sink = ParquetSink(str(tmp_path / "out"), **options)
    info, rows = sink.stage_query(sql, _reduce_inputs(), tmp_path, "000")
    assert rows == 3
    written = sorted(tmp_path.rglob("*.parquet"))
    assert len(written) == len(info["files"]) == (3 if case == "partitioned" else 1)
    for f in written:
        assert pq.ParquetFile(f).metadata.created_by.startswith("parquet-cpp-arrow")


PARTITION_VALUES = [
    "EU",
    None,
    "",
    "__null__",
    "a/b",
    "../x",
    "/",
    "x\ny",
    "100%",
    "k=v",
    "é:ü?",
    "..",
    "__HIVE_DEFAULT_PARTITION__",
]


def test_partition_folders_follow_hive_and_read_back_as_the_values(tmp_path, client):
    import duckdb
    import pyarrow.dataset as ds
    import pyarrow.parquet as pq

    (tmp_path / "in").mkdir()
    ids = list(range(len(PARTITION_VALUES)))
    pq.write_table(pa.table({"id": ids, "p": PARTITION_VALUES}), tmp_path / "in" / "a.parquet")
    out = tmp_path / "out"
    result = Pipeline(
        Files(str(tmp_path / "in" / "*.parquet")),
        ParquetSink(str(out), partition_by=["p"]),
        workdir=str(tmp_path / "w"),
        name="hive",
        max_bad_fraction=1.0,  # 2 of 13 rows are refused
    ).run(client=client)
    assert result.ok and result.rows_quarantined == 2, result
    folders = sorted(f.name for f in out.iterdir() if f.is_dir())
    assert "p=__HIVE_DEFAULT_PARTITION__" in folders and "p=..%2Fx" in folders
    assert "p=x%0Ay" in folders and "p=100%25" in folders and "p=" not in folders
    assert len(folders) == len(PARTITION_VALUES) - 3  # None and "" share the null folder; 2 refused
    landed = {v for v in PARTITION_VALUES if v not in ("..", "__HIVE_DEFAULT_PARTITION__")}
    want = sorted((i, v or None) for i, v in enumerate(PARTITION_VALUES) if v in landed)
    back = ds.dataset(out, partitioning="hive").to_table().to_pylist()
    assert sorted((r["id"], r["p"]) for r in back) == want
    glob = str(out / "*" / "*.parquet")
    rows = duckdb.sql(
        f"SELECT id, p FROM read_parquet('{glob}', hive_partitioning = true)"
    ).fetchall()
    assert sorted(rows) == want
    bad = result.quarantine().sort_values("reason")
    assert bad["kind"].tolist() == ["path_escape"] * 2
    assert "'..' cannot name a folder" in bad["reason"].iloc[0]
    assert "readers would take it for null" in bad["reason"].iloc[1]
    assert sorted(json.loads(r)["p"] for r in bad["raw"]) == ["..", "__HIVE_DEFAULT_PARTITION__"]


def test_an_aggregate_partition_value_that_cannot_name_a_folder_fails_the_publish(tmp_path):
    from dbatch.errors import PathEscapeError

    sink = ParquetSink(str(tmp_path / "out"), partition_by=["p"])
    (tmp_path / "s").mkdir()
    with pytest.raises(PathEscapeError, match="readers would take it for null"):
        sink.stage(pa.table({"p": ["__HIVE_DEFAULT_PARTITION__"], "n": [1]}), tmp_path / "s", "000")
    assert not list((tmp_path / "s").iterdir())
