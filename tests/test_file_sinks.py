"""File sinks: versions published atomically, manifest and _SUCCESS, CSV exports, partitions."""

from __future__ import annotations

import hashlib
import json

import pandas as pd
import pytest

from dbatch import ByCount, CsvSink, Files, ParquetSink, Pipeline
from dbatch.errors import CommitError


def inputs(tmp_path, n=4):
    d = tmp_path / "in"
    d.mkdir(exist_ok=True)
    for i in range(n):
        pd.DataFrame({"id": [f"{i}-{j}" for j in range(10)], "region": ["eu", "us"] * 5, "v": range(10)}).to_csv(d / f"{i}.csv", index=False)
    return d


def test_manifest_lists_files_rows_and_checksums(tmp_path, client):
    d = inputs(tmp_path)
    out = tmp_path / "out"
    Pipeline(Files(str(d / "*.csv")), ParquetSink(str(out)), batching=ByCount(2), workdir=str(tmp_path / "w")).run(client=client)
    manifest = json.loads((out / "_manifest.json").read_text())
    assert manifest["rows_out"] == 40 and len(manifest["files"]) == 2
    for f in manifest["files"]:
        data = (out / f["path"]).read_bytes()
        assert f["sha256"] == hashlib.sha256(data).hexdigest() and f["bytes"] == len(data)
    assert (out / "_SUCCESS").read_text().strip() == manifest["run_id"]


def test_publishing_reuses_the_checksums_taken_when_the_batch_was_staged(tmp_path, client, monkeypatch):
    """The driver does not read every output file again at the end of a run."""
    import dbatch.sinks.files as files_module

    d = inputs(tmp_path)
    out = tmp_path / "out"
    read_again = []
    monkeypatch.setattr(files_module, "file_checksum", lambda path: read_again.append(path) or "x")
    Pipeline(Files(str(d / "*.csv")), ParquetSink(str(out)), batching=ByCount(2), workdir=str(tmp_path / "w")).run(client=client)
    manifest = json.loads((out / "_manifest.json").read_text())
    assert read_again == []  # staged on the workers (their own processes), not here
    for f in manifest["files"]:
        assert f["sha256"] == hashlib.sha256((out / f["path"]).read_bytes()).hexdigest()


def test_new_version_replaces_old_only_when_complete(tmp_path, client):
    d = inputs(tmp_path)
    out = tmp_path / "out"
    p = Pipeline(Files(str(d / "*.csv")), ParquetSink(str(out)), batching=ByCount(2), workdir=str(tmp_path / "w"))
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
        Pipeline(Files(str(d / "*.csv")), ParquetSink(str(out)), workdir=str(tmp_path / "w")).run(client=client)
    assert (out / "precious.txt").read_text() == "keep me"


def test_csv_export_with_partitions(tmp_path, client):
    d = inputs(tmp_path)
    out = tmp_path / "export"
    Pipeline(Files(str(d / "*.csv")), CsvSink(str(out), partition_by=["region"]), batching=ByCount(2), workdir=str(tmp_path / "w")).run(client=client)
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
    Pipeline(Files(str(d / "*.parquet")), ParquetSink(str(out)), workdir=str(tmp_path / "w")).run(client=client)
    [written] = sorted(out.glob("*.parquet"))
    meta = pq.ParquetFile(written).metadata
    encodings = {
        meta.schema.column(i).name: meta.row_group(0).column(i).encodings for i in range(meta.num_columns)
    }
    assert "RLE_DICTIONARY" not in encodings["score"]
    assert "RLE_DICTIONARY" in encodings["code"] and "RLE_DICTIONARY" in encodings["region"]
    pd.testing.assert_frame_equal(pd.read_parquet(written), frame)
