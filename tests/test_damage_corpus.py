"""A damaged landing area, generated here: every kind of bad file and bad row among harmless
variations, in CSV, csv.gz, JSON lines and Parquet, in one job.

The job must lose no clean row, let no bad row through, and keep each bad file and row in the
quarantine with its kind, file, line (or row) number and raw text.
"""

from __future__ import annotations

import gzip
import json
import random
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dbatch import ByCount, Files, ParquetSink, Pipeline

SCHEMA = {
    "id": {"type": "int64", "not_null": True, "unique": True},
    "day": "date32",
    "amount": {"type": "float64", "min": 0},
    "currency": {"type": "string", "allowed": ["USD", "EUR"]},
    "memo": "string",
}
HEADER = "id,day,amount,currency,memo"


@dataclass
class Landing:
    """What the generator wrote: the clean ids, and each bad row and file expected back."""

    clean: set[int] = field(default_factory=set)
    bad_rows: dict[tuple[str, int], tuple[str, str]] = field(default_factory=dict)  # (file, line)
    bad_files: dict[str, str] = field(default_factory=dict)  # file -> kind


def clean_row(rng: random.Random, i: int) -> dict:
    return {
        "id": i,
        "day": f"2026-11-{rng.randint(1, 28):02d}",
        "amount": round(rng.uniform(0, 500), 2),
        "currency": rng.choice(["USD", "EUR"]),
        "memo": rng.choice(["plain", "with, comma", 'say "hi"', "", "NA"]),
    }


def csv_field(value) -> str:
    text = "" if value is None else str(value)
    if any(c in text for c in ',"') or text == "":
        return '"' + text.replace('"', '""') + '"' if text else ""
    return text


def csv_line(row: dict) -> str:
    return ",".join(csv_field(row[c]) for c in HEADER.split(","))


# Bad rows as text lines, with the quarantine kind each must get.
BAD_CSV = [
    ("field_count", lambda i: f"{i},2026-11-02,1.0,USD"),
    ("field_count", lambda i: f"{i},2026-11-02,1.0,USD,memo,extra"),
    ("unclosed_quote", lambda i: f'{i},2026-11-02,1.0,USD,"never closed'),
    ("type", lambda i: f"{i},2026-11-02,lots,USD,memo"),
    ("type", lambda i: f"{i},2026-02-30,1.0,USD,memo"),  # an impossible date
    ("range", lambda i: f"{i},2026-11-02,-5,USD,memo"),
    ("allowed", lambda i: f"{i},2026-11-02,1.0,XXX,memo"),
    ("not_null", lambda i: ",2026-11-02,1.0,USD,memo"),
]


def write_csv(path: Path, rng: random.Random, ids, landing: Landing, *, crlf=False, bom=False):
    lines = [HEADER]
    name = path.name
    for i in ids:
        if rng.random() < 0.15:
            kind, make = rng.choice(BAD_CSV)
            lines.append(make(i))
            landing.bad_rows[(name, len(lines))] = (kind, lines[-1])
        else:
            lines.append(csv_line(clean_row(rng, i)))
            landing.clean.add(i)
        if rng.random() < 0.05:
            lines.append("")  # a blank line: no record
    # A duplicate key: the second of two rows with the same id (unique within a file).
    dup = next(i for i in ids if i in landing.clean)
    lines.append(csv_line(clean_row(rng, dup)))
    landing.bad_rows[(name, len(lines))] = ("unique", lines[-1])
    text = ("\r\n" if crlf else "\n").join(lines)  # no final line break
    data = text.encode()
    data = b"\xef\xbb\xbf" + data if bom else data
    if path.suffix == ".gz":
        data = gzip.compress(data)
    path.write_bytes(data)


def write_jsonl(path: Path, rng: random.Random, ids, landing: Landing):
    lines = []
    for i in ids:
        row = clean_row(rng, i)
        roll = rng.random()
        if roll < 0.05:
            lines.append("{not json")
            landing.bad_rows[(path.name, len(lines))] = ("json", lines[-1])
        elif roll < 0.10:
            row["amount"] = "many"
            lines.append(json.dumps(row))
            landing.bad_rows[(path.name, len(lines))] = ("type", lines[-1])
        elif roll < 0.15:
            row["currency"] = "GBP"
            lines.append(json.dumps(row))
            landing.bad_rows[(path.name, len(lines))] = ("allowed", lines[-1])
        else:
            row["amount"] = "NA" if rng.random() < 0.1 else row["amount"]  # a null marker
            lines.append(json.dumps(row))
            landing.clean.add(i)
    path.write_text("\n".join(lines) + "\n")


def write_parquet(path: Path, rng: random.Random, ids, landing: Landing):
    rows = []
    for i in ids:
        row = clean_row(rng, i)
        if rng.random() < 0.1:
            row["amount"] = -1.0
            landing.bad_rows[(path.name, len(rows) + 1)] = ("range", "")
        else:
            landing.clean.add(i)
        rows.append(row)
    table = pa.Table.from_pylist(rows).set_column(
        1, "day", pa.array([pd.Timestamp(r["day"]).date() for r in rows], pa.date32())
    )
    pq.write_table(table, path)


def write_bad_files(root: Path, landing: Landing, next_id: int):
    good = "\n".join([HEADER, f"{next_id},2026-11-01,1.0,USD,x"]) + "\n"
    (root / "zero.csv").write_bytes(b"")
    landing.bad_files["zero.csv"] = "empty"
    (root / "truncated.csv.gz").write_bytes(gzip.compress(good.encode() * 50)[:40])
    landing.bad_files["truncated.csv.gz"] = "corrupt"
    table = pa.table({"id": [next_id + 1], "day": pa.array([None], pa.date32())})
    pq.write_table(table, root / "whole.parquet")
    data = (root / "whole.parquet").read_bytes()
    (root / "whole.parquet").unlink()
    (root / "truncated.parquet").write_bytes(data[: len(data) // 2])
    landing.bad_files["truncated.parquet"] = "corrupt"
    (root / "latin1.csv").write_bytes(
        f"{HEADER}\n{next_id + 2},2026-11-01,1.0,EUR,caf\xe9\n".encode("latin-1")
    )
    landing.bad_files["latin1.csv"] = "encoding"
    (root / "renamed.csv").write_text(good.replace("amount", "amt"))
    landing.bad_files["renamed.csv"] = "renamed_columns"
    drift = pa.table(
        {
            "id": [next_id + 3],
            "day": pa.array([pd.Timestamp("2026-11-01").date()], pa.date32()),
            "amount": ["1.0"],  # text where the schema says float64
            "currency": ["USD"],
            "memo": ["x"],
        }
    )
    pq.write_table(drift, root / "drift.parquet")
    landing.bad_files["drift.parquet"] = "schema_drift"


def make_landing(root: Path, seed: int) -> Landing:
    rng = random.Random(seed)
    root.mkdir(parents=True)
    landing = Landing()
    next_id = 0
    plans = [
        ("a.csv", {}),
        ("b.csv", {"crlf": True, "bom": True}),
        ("c.csv.gz", {}),
        ("d.csv.gz", {"crlf": True}),
    ]
    for name, options in plans:
        write_csv(root / name, rng, range(next_id, next_id + 120), landing, **options)
        next_id += 120
    write_jsonl(root / "e.jsonl", rng, range(next_id, next_id + 120), landing)
    next_id += 120
    for name in ("f.parquet", "g.parquet"):
        write_parquet(root / name, rng, range(next_id, next_id + 150), landing)
        next_id += 150
    write_bad_files(root, landing, next_id)
    return landing


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_nothing_lost_nothing_let_through_everything_accounted_for(tmp_path, client, seed):
    landing = make_landing(tmp_path / "landing", seed)
    pipeline = Pipeline(
        Files(str(tmp_path / "landing" / "*"), schema=SCHEMA),
        ParquetSink(str(tmp_path / "out")),
        batching=ByCount(3),
        name="corpus",
        workdir=str(tmp_path / "work"),
        max_bad_fraction=1.0,
    )
    result = pipeline.run(client=client)
    assert result.ok, result
    out = pd.read_parquet(tmp_path / "out")
    assert set(out["id"]) == landing.clean  # 0 clean rows lost, 0 bad rows let through
    assert len(out) == len(landing.clean)
    assert result.rows_in == result.rows_out + result.rows_filtered + result.rows_quarantined

    quarantine = pd.read_parquet(pipeline.work_area() / "quarantine.parquet")
    quarantine["file"] = quarantine["source"].map(lambda s: Path(s).name)
    files = quarantine[quarantine["line"].isna()]
    assert dict(zip(files["file"], files["kind"], strict=True)) == landing.bad_files
    rows = quarantine[quarantine["line"].notna()]
    found = {(f, int(n)): (k, raw) for f, n, k, raw in rows[["file", "line", "kind", "raw"]].values}
    assert set(found) == set(landing.bad_rows)  # each bad row once, at its file and line
    for where, (kind, raw) in landing.bad_rows.items():
        assert found[where][0] == kind, (where, found[where], kind)
        if raw:  # text formats keep the line as it was
            assert found[where][1] == raw, where
        else:  # Parquet keeps the row's values
            assert json.loads(found[where][1])["amount"] == -1.0
    assert result.rows_quarantined == len(landing.bad_rows)
    assert result.files_quarantined == len(landing.bad_files)
