"""A corpus of damaged files and rows among clean ones: each kept aside with its kind and place."""

from __future__ import annotations

import gzip
import io
import json
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import dbatch
from dbatch import ByCount, Files, ParquetSink, Pipeline
from dbatch.cli import main
from dbatch.testing import EventLog

HEADER = "id,account,amount,qty,note"
SCHEMA = {
    "id": {"type": "string", "unique": True},
    "account": {"type": "string", "allowed": ["A", "B", "C"]},
    "amount": {"type": "int64", "min": 0, "max": 1000},
    "qty": {"type": "int64", "not_null": True},
    "note": "string",
}

# Damage to whole files: file name -> expected quarantine kind.
BAD_FILES = {
    "02-truncated.parquet": "corrupt",
    "04-garbage.parquet": "corrupt",
    "06-truncated.csv.gz": "corrupt",
    "08-empty.csv": "empty",
    "10-latin1.csv": "encoding",
    "12-missing-column.csv": "missing_columns",
    "14-renamed-column.csv": "renamed_columns",
    "16-int-as-string.parquet": "schema_drift",
}
# Damage to single rows of 18-mixed.csv: raw line -> expected kind.
BAD_CSV_ROWS = {
    "r-x1,A,5,1,note,EXTRA": "field_count",  # too many fields
    "r-x2,A,5": "field_count",  # too few fields
    "r-x3,B,12x,1,wrong type": "type",
    "r-x4,C,7,,no qty": "not_null",
    "r-x5,A,5000,1,too big": "range",
    "r-x6,Z,5,1,bad account": "allowed",
    "r-0,A,1,1,duplicate id": "unique",
}
BAD_JSON_LINE = '{"id": "j-bad", "account": "A", "amount": 3, "qty": 1, "note": "cut'


def clean_rows(prefix: str, n: int) -> list[str]:
    return [f"{prefix}-{i},{'ABC'[i % 3]},{i * 7 % 900},{i % 4 + 1},note {i}" for i in range(n)]


def as_table(rows: list[str]) -> pa.Table:
    cols = list(zip(*(r.split(",") for r in rows), strict=True))
    return pa.table(
        {
            "id": list(cols[0]),
            "account": list(cols[1]),
            "amount": [int(x) for x in cols[2]],
            "qty": [int(x) for x in cols[3]],
            "note": list(cols[4]),
        }
    )


def parquet_bytes(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def csv_text(rows: list[str], header: str = HEADER) -> str:
    return "\n".join([header, *rows]) + "\n"


def write_corpus(root: Path) -> list[str]:
    """Damaged files between clean ones; returns the clean rows.

    In batches of three files: seven batches, the first six hold damage, the last none.
    """
    root.mkdir(parents=True)
    clean: list[str] = []

    def add(rows: list[str]) -> list[str]:
        clean.extend(rows)
        return rows

    (root / "01-clean.csv").write_text(csv_text(add(clean_rows("c1", 30))))
    (root / "03-clean.parquet").write_bytes(parquet_bytes(as_table(add(clean_rows("c3", 30)))))
    (root / "05-clean.csv.gz").write_bytes(
        gzip.compress(csv_text(add(clean_rows("c5", 30))).encode())
    )
    records = [
        dict(zip(HEADER.split(","), r.split(","), strict=True)) for r in add(clean_rows("c7", 30))
    ]
    for r in records:
        r["amount"], r["qty"] = int(r["amount"]), int(r["qty"])
    (root / "07-clean.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    (root / "09-clean.csv").write_text(csv_text(add(clean_rows("c9", 30))))
    (root / "11-clean.parquet").write_bytes(parquet_bytes(as_table(add(clean_rows("c11", 30)))))

    whole = parquet_bytes(as_table(clean_rows("t", 30)))
    (root / "02-truncated.parquet").write_bytes(whole[: len(whole) // 2])
    (root / "04-garbage.parquet").write_bytes(b"PAR1" + bytes(range(256)) * 3 + b"PAR1")
    gz = gzip.compress(csv_text(clean_rows("g", 300)).encode())
    (root / "06-truncated.csv.gz").write_bytes(gz[: len(gz) // 2])
    (root / "08-empty.csv").write_bytes(b"")
    latin1 = csv_text([*clean_rows("l", 5), "l-9,A,5,1,Z\xfcrich"]).encode("latin-1")
    (root / "10-latin1.csv").write_bytes(latin1)
    (root / "12-missing-column.csv").write_text(
        csv_text([f"m-{i},A,{i},x" for i in range(5)], header="id,account,amount,note")
    )
    (root / "14-renamed-column.csv").write_text(
        csv_text([f"n-{i},A,{i},1,x" for i in range(5)], header="id,account,amt,qty,note")
    )
    drift = as_table(clean_rows("d", 10))
    drift = drift.set_column(2, "amount", pa.array([str(v) for v in drift["amount"].to_pylist()]))
    (root / "16-int-as-string.parquet").write_bytes(parquet_bytes(drift))

    good = add(clean_rows("r", 10))
    (root / "18-mixed.csv").write_text(csv_text([*good[:5], *BAD_CSV_ROWS, *good[5:]]))
    jl = [
        json.dumps({"id": f"j-{i}", "account": "A", "amount": i, "qty": 1, "note": "j"})
        for i in range(5)
    ]
    clean.extend(f"j-{i},A,{i},1,j" for i in range(5))
    jl.insert(2, BAD_JSON_LINE)
    (root / "20-mixed.jsonl").write_text("\n".join(jl) + "\n")
    for n in range(21, 25):  # the last batch is all clean
        (root / f"{n}-clean.csv").write_text(csv_text(add(clean_rows(f"c{n}", 10))))
    return clean


def expected_frame(rows: list[str]) -> pd.DataFrame:
    return as_table(rows).to_pandas().sort_values("id").reset_index(drop=True)


def make_pipeline(tmp_path: Path, **kw) -> Pipeline:
    return Pipeline(
        Files(str(tmp_path / "in" / "*"), schema=SCHEMA),
        ParquetSink(str(tmp_path / "out")),
        batching=ByCount(3),
        name="corpus",
        workdir=str(tmp_path / "work"),
        **kw,
    )


def quarantine(tmp_path: Path) -> pd.DataFrame:
    return pd.read_parquet(tmp_path / "work" / "corpus" / "quarantine.parquet")


@pytest.fixture
def corpus(tmp_path) -> list[str]:
    return write_corpus(tmp_path / "in")


def test_every_damaged_file_and_row_is_quarantined_with_kind_and_place(tmp_path, corpus, client):
    p = make_pipeline(tmp_path)
    result = p.run(client=client)
    assert result.status == "succeeded", result

    # 0 clean rows lost, none padded or coerced: the output is exactly the clean rows, typed.
    out = pd.read_parquet(tmp_path / "out").sort_values("id").reset_index(drop=True)
    pd.testing.assert_frame_equal(out, expected_frame(corpus))
    assert out["amount"].dtype == "int64" and out["qty"].dtype == "int64"

    q = quarantine(tmp_path)
    q["file"] = q["source"].map(lambda s: Path(s).name)
    files = q[q["line"].isna()]
    assert dict(zip(files["file"], files["kind"], strict=True)) == BAD_FILES
    assert files["raw"].isna().all() and files["reason"].str.len().gt(10).all()
    assert (
        "unknown column(s) ['amt']"
        in files.set_index("file").loc["14-renamed-column.csv", "reason"]
    )

    rows = q[q["line"].notna()].set_index("raw")
    csv_rows = rows[rows["file"] == "18-mixed.csv"]
    assert csv_rows["kind"].to_dict() == BAD_CSV_ROWS  # the raw text, kept as it was
    mixed_lines = (tmp_path / "in" / "18-mixed.csv").read_text().splitlines()
    for raw, line in csv_rows["line"].items():
        assert mixed_lines[int(line) - 1] == raw  # line numbers point at the row in the file
    json_row = rows[rows["file"] == "20-mixed.jsonl"]
    assert json_row.index.tolist() == [BAD_JSON_LINE]
    assert json_row["kind"].tolist() == ["json"] and json_row["line"].tolist() == [3]
    assert (q["batch_id"].notna() & q["run_id"].eq(result.run_id)).all()
    # Publishing left each committed batch's own quarantine as it was, and kept it out
    # of the published output.
    for d in (tmp_path / "work" / "corpus" / "batches").iterdir():
        if (d / "_quarantine.parquet").exists():
            own = pd.read_parquet(d / "_quarantine.parquet")["batch_id"].unique().tolist()
            assert [d.name.rsplit("-", 1)[0]] == own
    assert not list((tmp_path / "out").rglob("_quarantine*"))

    kinds = (
        {(k, "file") for k in BAD_FILES} | {(k, "row") for k in BAD_CSV_ROWS} | {("json", "row")}
    )
    damages = len(BAD_FILES) + len(BAD_CSV_ROWS) + 1
    assert damages == 16 and len(q) == damages
    assert len({kind for kind, _ in kinds}) >= 10

    # Every batch accounts for every row, in the result and in the ledger.
    for b in result.batches:
        assert b["rows_in"] == b["rows_out"] + b["rows_quarantined"] + b["rows_filtered"], b
    assert result.rows_in == len(corpus) + len(BAD_CSV_ROWS) + 1
    assert result.rows_quarantined == len(BAD_CSV_ROWS) + 1
    assert result.files_quarantined == len(BAD_FILES)
    ledger = dbatch.Ledger(p.ledger_url())
    frame = ledger.batches_frame("corpus")
    ledger.close()
    balance = frame["rows_out"] + frame["rows_quarantined"] + frame["rows_filtered"]
    assert (frame["rows_in"] == balance).all()
    assert frame["files_quarantined"].sum() == len(BAD_FILES)


def test_drop_mode_counts_bad_input_without_keeping_it(tmp_path, corpus, client):
    result = make_pipeline(tmp_path, bad_input="drop").run(client=client)
    assert result.status == "succeeded", result
    out = pd.read_parquet(tmp_path / "out").sort_values("id").reset_index(drop=True)
    pd.testing.assert_frame_equal(out, expected_frame(corpus))
    assert result.rows_quarantined == len(BAD_CSV_ROWS) + 1  # counted
    assert result.rows_in == result.rows_out + result.rows_quarantined
    assert not (tmp_path / "work" / "corpus" / "quarantine.parquet").exists()  # not kept


def test_fail_fast_stops_at_the_first_bad_input_and_names_it(tmp_path, corpus, client):
    p = make_pipeline(tmp_path, bad_input="fail_fast")
    log = EventLog()
    result = p.run(client=client, listeners=[log])
    assert result.status == "failed"
    assert not (tmp_path / "out").exists()  # nothing published
    failed = log.of("batch_failed")
    first = [e for e in failed if e.data["error_class"] == "BadInputError"]
    assert first, [e.data for e in failed]
    message = first[0].data["error_message"]
    assert "deterministic error (not retried)" in message
    assert any(name in message for name in [*BAD_FILES, "18-mixed.csv", "20-mixed.jsonl"])
    assert all(e.data["attempt"] == 1 for e in first)
    with pytest.raises(dbatch.RunFailedError):
        make_pipeline(tmp_path, bad_input="fail_fast").run(client=client, raise_on_failure=True)


def test_fail_fast_names_file_and_line_of_a_bad_row(tmp_path, client):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.csv").write_text(csv_text([*clean_rows("a", 3), "a-x,A,-1,1,neg"]))
    log = EventLog()
    result = make_pipeline(tmp_path, bad_input="fail_fast").run(client=client, listeners=[log])
    assert result.status == "failed"
    message = log.of("batch_failed")[0].data["error_message"]
    assert f"{tmp_path / 'in' / 'a.csv'}, line 5" in message and "'amount' < 0" in message


def test_max_bad_fraction_fails_the_batch_before_anything_is_committed(tmp_path, corpus, client):
    p = make_pipeline(tmp_path, max_bad_fraction=0.2)
    log = EventLog()
    result = p.run(client=client, listeners=[log])
    # 18-mixed.csv holds 7 bad rows of 17 (41%): its batch fails; the others commit.
    assert result.status == "failed" and result.failed == 1, result
    failed = log.of("batch_failed")[0]
    assert "max_bad_fraction=20.0%" in failed.data["error_message"]
    assert failed.data["attempt"] == 1  # deterministic: tried once
    assert log.started()[failed.batch_id] == 1
    assert not (tmp_path / "out").exists()
    committed = {e.batch_id for e in log.of("batch_committed")}
    assert failed.batch_id not in committed and len(committed) == len(p.plan()) - 1
    batch_dirs = [d.name for d in (tmp_path / "work" / "corpus" / "batches").iterdir()]
    assert not any(d.startswith(failed.batch_id) for d in batch_dirs)


def test_replay_after_fixing_a_file(tmp_path, corpus, client):
    job = tmp_path / "corpus.yaml"
    job.write_text(
        json.dumps(
            {
                "name": "corpus",
                "source": {"type": "files", "path": "in/*", "schema": SCHEMA},
                "batching": {"count": 3},
                "sink": {"type": "parquet", "path": "out"},
                "workdir": "work",
            }
        )
    )
    first = CliRunner().invoke(main, ["run", str(job), "--json"])
    assert first.exit_code == 0, first.output
    before = quarantine(tmp_path)
    assert len(before) == 16

    # Replay without a fix: the batches with bad input run again; nothing is doubled.
    again = CliRunner().invoke(main, ["replay", str(job), "--json"])
    assert again.exit_code == 0, again.output
    summary = json.loads(again.stdout.strip().splitlines()[-1])
    assert summary["batches_committed"] == 6 and summary["batches_skipped"] == 1, summary
    after = quarantine(tmp_path)
    cols = ["source", "line", "kind", "reason", "raw"]
    pd.testing.assert_frame_equal(
        after[cols].sort_values(cols).reset_index(drop=True),
        before[cols].sort_values(cols).reset_index(drop=True),
    )
    assert len(pd.read_parquet(tmp_path / "out")) == len(corpus)

    # Fix the file with the missing column, then replay: its rows arrive, its entry goes.
    fixed = [f"m-{i},A,{i},1,x" for i in range(5)]
    (tmp_path / "in" / "12-missing-column.csv").write_text(csv_text(fixed))
    replay = CliRunner().invoke(main, ["replay", str(job), "--json"])
    assert replay.exit_code == 0, replay.output
    q = quarantine(tmp_path)
    assert len(q) == 15 and not q["source"].str.endswith("12-missing-column.csv").any()
    out = pd.read_parquet(tmp_path / "out").sort_values("id").reset_index(drop=True)
    pd.testing.assert_frame_equal(out, expected_frame(corpus + fixed))


def test_a_damaged_page_behind_a_good_footer_is_quarantined_in_an_aggregate_job(tmp_path, client):
    """The footer reads and its statistics spare the file the bad-row scan, so the
    damage shows only while the steps' query streams its rows: the batch is redone
    through the source's own reader, which quarantines the file."""
    import numpy as np

    from dbatch import Aggregate, Filter

    rng = np.random.default_rng(0)
    folder = tmp_path / "in"
    folder.mkdir()
    tables = []
    for i in range(2):
        table = pa.table({"g": rng.integers(0, 100, 50_000), "amount": rng.random(50_000) * 100})
        pq.write_table(table, folder / f"{i}.parquet", use_dictionary=False)
        tables.append(table)
    damaged = folder / "1.parquet"
    data = bytearray(damaged.read_bytes())
    page = pq.ParquetFile(damaged).metadata.row_group(0).column(1).data_page_offset
    data[page + 80 : page + 110] = bytes(b ^ 0x5A for b in data[page + 80 : page + 110])
    damaged.write_bytes(bytes(data))
    assert pq.ParquetFile(damaged).metadata.num_rows == 50_000  # the footer still reads

    pipeline = Pipeline(
        source=Files(
            str(folder / "*.parquet"),
            schema={"g": "int64", "amount": {"type": "float64", "not_null": True}},
        ),
        steps=[Filter("amount >= 0")],
        aggregate=Aggregate(by="g", metrics={"total": "sum(amount)", "n": "count(*)"}),
        sink=ParquetSink(str(tmp_path / "out")),
        batching=ByCount(2),
        workdir=str(tmp_path / "work"),
    )
    result = pipeline.run(client=client, progress=False)
    assert result.status == "succeeded"
    assert result.batches[0]["files_quarantined"] == 1
    kept = pd.read_parquet(pipeline.work_area() / "quarantine.parquet")
    assert [(Path(s).name, k) for s, k in zip(kept.source, kept.kind, strict=True)] == [
        ("1.parquet", "corrupt")
    ]
    out = pd.read_parquet(tmp_path / "out")
    assert out.n.sum() == 50_000
    assert out.total.sum() == pytest.approx(pc_sum(tables[0]["amount"]))


def pc_sum(column) -> float:
    import pyarrow.compute as pc

    return pc.sum(column).as_py()
