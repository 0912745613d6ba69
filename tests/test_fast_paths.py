"""The fast paths give what the plain ones give: fused SQL steps, Parquet read by DuckDB, bucket files."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dbatch import Aggregate, ByCount, Derive, Enrich, Files, Filter, ParquetSink, Pipeline
from dbatch.compile import SqlChain
from dbatch.compile.sql import BatchStream
from dbatch.context import BatchContext
from dbatch.core import Batch
from dbatch.engine import Relation

LOOKUP = pa.table(
    {"k": list(range(10)), "c": ["a"] * 5 + ["b"] * 5, "r": [float(i) for i in range(10)]}
)
BY_C = pa.table({"c": ["a", "b"], "z": [1.5, 2.5]})

STEPS = {
    "filter": Filter("v > -1"),
    "filter_null": Filter("w IS NOT NULL"),
    "derive": Derive({"d": "v * 2"}),
    "replace": Derive({"v": "v + 1"}),
    "quarantine": Enrich(LOOKUP, on=["k"], columns=["r"], unmatched="quarantine"),
    "drop": Enrich(LOOKUP, on=["k"], columns=["r"], unmatched="filter"),
    "keep": Enrich(BY_C, on=["c"], unmatched="keep"),
    "after": Derive({"e": "r * v"}),
}


def batch_table(n: int = 3000, seed: int = 1) -> pa.Table:
    rng = np.random.default_rng(seed)
    return pa.table(
        {
            "k": rng.integers(0, 12, n),
            "c": rng.choice(["a", "b", "x"], n),
            "v": rng.normal(size=n),
            "w": pa.array(rng.normal(size=n), mask=rng.random(n) < 0.1),
        }
    )


def one_by_one(steps, data, ctx):
    for step in steps:
        data = step.apply(data, ctx)
    return data


def fused(steps, data, ctx, keep=None):
    return SqlChain(tuple(steps), keep=tuple(keep) if keep else None).apply(data, ctx)


def run_steps(p: Pipeline, batch, ctx):
    """What a run does with a batch up to the steps' output."""
    return p.physical(aggregate=False).run(batch, ctx)


def same_table(a: pa.Table, b: pa.Table) -> bool:
    """Equal schemas and values, NaN equal to NaN."""
    return a.schema.equals(b.schema) and a.to_pandas().equals(b.to_pandas())


def new_ctx() -> BatchContext:
    return BatchContext(batch=Batch("b", (), "f"))


def same_context(a: BatchContext, b: BatchContext) -> None:
    assert (a.rows_in, a.rows_filtered, a.rows_quarantined) == (
        b.rows_in,
        b.rows_filtered,
        b.rows_quarantined,
    )
    assert a.quarantined_rows().equals(b.quarantined_rows())


@pytest.mark.parametrize(
    "names",
    [
        ("filter", "derive", "quarantine", "after"),
        ("filter_null", "replace", "drop", "after", "keep"),
        ("keep", "filter", "quarantine", "replace", "derive"),
        ("quarantine", "filter", "derive"),
        ("derive", "keep", "quarantine", "drop"),
        ("filter", "filter_null", "replace", "derive"),
    ],
)
def test_fused_steps_give_the_same_rows_counts_and_quarantine(names):
    steps = [STEPS[n] for n in names]
    queries = SqlChain(tuple(steps)).groups(batch_table().column_names, new_ctx())
    assert len(queries) < len(steps)  # some steps share a query
    data = batch_table()
    a, b = new_ctx(), new_ctx()
    assert same_table(one_by_one(steps, data, a), fused(steps, data, b))
    same_context(a, b)
    assert a.rows_filtered + a.rows_quarantined > 0


def test_every_pair_and_triple_of_steps_fuses_exactly():
    data = batch_table(800, seed=2)
    for size in (2, 3):
        for names in itertools.permutations(STEPS, size):
            steps = [STEPS[n] for n in names]
            a, b = new_ctx(), new_ctx()
            try:
                want = one_by_one(steps, data, a)
            except Exception as e:  # noqa: BLE001 - then fused must fail too
                with pytest.raises(type(e)):
                    fused(steps, data, b)
                continue
            assert same_table(want, fused(steps, data, b)), names
            same_context(a, b)


def test_the_last_query_hands_back_only_the_kept_columns():
    steps = [STEPS["filter"], STEPS["quarantine"], STEPS["after"]]
    a, b = new_ctx(), new_ctx()
    want = one_by_one(steps, batch_table(), a).select(["k", "e"])
    got = fused(steps, batch_table(), b, keep=["k", "e"])
    assert same_table(got, want)
    same_context(a, b)


# -- Parquet read inside the query ------------------------------------------------

SCHEMA = {
    "id": "int64",
    "account": {"type": "string", "not_null": True},
    "currency": {"type": "string", "allowed": ["EUR", "USD"]},
    "amount": {"type": "float64", "not_null": True, "min": 0, "max": 1000},
    "status": "string",
}


def write_files(folder, n_files=3, rows=400, seed=0, narrow_ids=False, clean=False):
    """Parquet files with every kind of bad row (none if ``clean``), and NaN (no bound breaks)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n_files):
        amount = rng.uniform(0, 1000, rows) if clean else rng.uniform(-50, 1100, rows)
        amount[::37] = math.nan
        account = [None if j % 53 == 0 and not clean else f"A{j % 17}" for j in range(rows)]
        ids = np.arange(rows) + i * rows
        table = pa.table(
            {
                "status": rng.choice(["ok", "late"], rows),
                "id": pa.array(ids, pa.int32() if narrow_ids else pa.int64()),
                "account": account,
                "currency": rng.choice(["EUR"] if clean else ["EUR", "USD", "GBP"], rows),
                "amount": pa.array(amount, mask=None if clean else rng.random(rows) < 0.03),
                "extra": rng.integers(0, 5, rows),
            }
        )
        pq.write_table(table, folder / f"part-{i}.parquet")


def pipeline(folder, **options) -> Pipeline:
    return Pipeline(
        Files(str(folder / "*.parquet"), schema=options.pop("schema", SCHEMA)),
        ParquetSink(str(folder.parent / "out")),
        steps=[
            Filter("status = 'ok'"),
            Enrich(
                pa.table({"currency": ["EUR"], "rate": [1.1]}),
                on="currency",
                unmatched="quarantine",
            ),
            Derive({"usd": "amount * rate"}),
        ],
        batching=ByCount(3),
        **options,
    )


def through_load(p: Pipeline, batch, ctx):
    data = p.source.load(batch, ctx)
    return one_by_one(p.steps, data, ctx)


@pytest.mark.parametrize("narrow_ids,clean", [(False, False), (True, False), (False, True)])
def test_parquet_read_by_duckdb_matches_load(tmp_path, narrow_ids, clean):
    write_files(tmp_path / "in", narrow_ids=narrow_ids, clean=clean)
    p = pipeline(tmp_path / "in")
    batch = p.plan()[0]
    probe = new_ctx()
    assert p.physical().scan
    assert isinstance(p.source.scan(batch, probe), Relation)  # the fast path is taken
    a, b = new_ctx(), new_ctx()
    want = through_load(p, batch, a)
    got = run_steps(p, batch, b)
    assert same_table(got, want)
    same_context(a, b)
    kinds = set(b.quarantined_rows().column("kind").to_pylist())
    assert kinds == set() if clean else {"not_null", "range", "allowed", "no_match"} <= kinds


def test_what_the_statistics_prove_is_not_checked_again_row_by_row(tmp_path):
    """A column without nulls needs no null test (and DuckDB can push its `allowed`
    check into the Parquet reader); a clean file needs no check at all. Files
    with nulls keep them: a null currency is allowed."""
    folder = tmp_path / "in"
    write_files(folder, n_files=2)
    with_nulls = pq.read_table(folder / "part-1.parquet")
    currency = with_nulls["currency"].to_pylist()
    currency[5] = currency[9] = None
    pq.write_table(
        with_nulls.set_column(3, "currency", pa.array(currency, pa.string())),
        folder / "part-1.parquet",
    )
    write_files(tmp_path / "clean", n_files=1, clean=True)
    (tmp_path / "clean" / "part-0.parquet").rename(folder / "part-2.parquet")
    p = pipeline(folder)
    batch = p.plan()[0]
    scan = p.source.scan(batch, new_ctx())
    parts = scan.sql.split(" UNION ALL ")
    assert len(parts) == 3
    assert '"currency" IS NULL OR' not in parts[0] and '"currency" IN (' in parts[0]
    assert '"currency" IS NULL OR "currency" IN (' in parts[1]
    assert parts[2].endswith("WHERE TRUE")
    a, b = new_ctx(), new_ctx()
    got = run_steps(p, batch, b)
    assert same_table(got, through_load(p, batch, a))
    same_context(a, b)
    assert b.rows_quarantined > 0


@pytest.mark.parametrize("narrow_ids,clean", [(False, False), (True, False), (False, True)])
def test_dropped_rows_are_counted_without_being_read(tmp_path, monkeypatch, narrow_ids, clean):
    """bad_input='drop' needs only how many rows are bad: one count per file, not the rows."""
    import dbatch.sources.files.scan as parquet_scan

    write_files(tmp_path / "in", narrow_ids=narrow_ids, clean=clean)
    p = pipeline(tmp_path / "in", bad_input="drop")
    batch = p.plan()[0]
    want_ctx = BatchContext(batch=batch, mode="drop")
    want = through_load(p, batch, want_ctx)
    full_ctx = BatchContext(batch=batch, mode="quarantine")
    run_steps(p, batch, full_ctx)

    def no_reading(*args):
        raise AssertionError("drop mode read the bad rows")

    monkeypatch.setattr(parquet_scan, "_bad_rows", no_reading)
    ctx = BatchContext(batch=batch, mode="drop")
    assert isinstance(p.source.scan(batch, BatchContext(batch=batch, mode="drop")), Relation)
    got = run_steps(p, batch, ctx)
    assert same_table(got, want)
    same_context(want_ctx, ctx)
    assert ctx.quarantined_rows().num_rows == 0  # counted, not kept
    # The same rows are bad as in quarantine mode (which reads them).
    assert (ctx.rows_in, ctx.rows_quarantined) == (full_ctx.rows_in, full_ctx.rows_quarantined)
    assert (ctx.rows_quarantined == 0) == clean


def test_a_sample_leaves_bad_rows_out_without_looking_for_them(tmp_path, monkeypatch):
    """The partial-aggregates estimate reads a unit only for its keys: no query for
    the bad rows (neither the rows nor their count), yet none of them in its rows."""
    import dbatch.sources.files.scan as parquet_scan

    write_files(tmp_path / "in")
    p = pipeline(tmp_path / "in", bad_input="drop")
    batch = p.plan()[0]
    full = BatchContext(batch=batch, mode="drop")
    want = run_steps(p, batch, full)
    assert full.rows_quarantined > 0

    def no_looking(*args):
        raise AssertionError("a sample looked for its bad rows")

    monkeypatch.setattr(parquet_scan, "_bad_rows", no_looking)
    monkeypatch.setattr(parquet_scan, "_bad_count", no_looking)
    ctx = BatchContext(batch=batch, mode="drop", sample=True)
    got = run_steps(p, batch, ctx)
    assert same_table(got, want)
    assert ctx.rows_in == full.rows_in and ctx.files == []


def test_drop_rows_belongs_to_drop_mode():
    with pytest.raises(RuntimeError, match="bad_input='drop'"):
        BatchContext(batch=Batch("b", (), "f"), mode="quarantine").drop_rows(3)


@pytest.mark.parametrize(
    "change",
    ["drift", "corrupt", "unique", "fail_fast"],
)
def test_parquet_read_falls_back_to_load_when_that_alone_is_exact(tmp_path, change):
    write_files(tmp_path / "in")
    schema = dict(SCHEMA)
    if change == "drift":
        pq.write_table(
            pq.read_table(tmp_path / "in" / "part-1.parquet").set_column(
                1, "id", pa.array([str(x) for x in range(400)])
            ),
            tmp_path / "in" / "part-1.parquet",
        )
    elif change == "corrupt":
        (tmp_path / "in" / "part-2.parquet").write_bytes(b"PAR1 not really")
    elif change == "unique":
        schema["id"] = {"type": "int64", "unique": True}
    mode = "fail_fast" if change == "fail_fast" else "quarantine"
    p = pipeline(tmp_path / "in", schema=schema, bad_input=mode)
    batch = p.plan()[0]
    if change in ("unique", "fail_fast"):  # decided for the whole plan, before any batch
        assert not p.physical().scan
        assert p.source.scan_obstacle(p.bad_input) is not None
        assert "not scanned" in p.explain()
    else:  # decided per batch from the files' footers, before a row is read
        assert p.physical().scan
        ctx = BatchContext(batch=batch, mode=mode)
        assert p.source.scan(batch, ctx) is None
        assert (ctx.rows_in, ctx.rows_quarantined, ctx.files) == (0, 0, [])
    if change == "fail_fast":
        return
    a, b = new_ctx(), new_ctx()
    assert same_table(run_steps(p, batch, b), through_load(p, batch, a))
    same_context(a, b)
    assert [f.key for f in a.files] == [f.key for f in b.files]


# -- aggregate: raw rows or partials per batch, one reduce per bucket -------------


def test_rows_split_by_bucket_keep_their_order():
    from dbatch.steps.aggregate import _by_bucket

    ids = pa.array([2, 0, 2, 1, 0, 2, 0], pa.int32())
    rows = pa.record_batch({"x": list(range(7)), "b": ids})
    pieces = _by_bucket(rows, ids, 4)
    assert [piece.column("x").to_pylist() for piece in pieces] == [[1, 4, 6], [3], [0, 2, 5], []]
    table = pa.Table.from_batches([rows.slice(0, 3), rows.slice(3)])
    assert [t.column("x").to_pylist() for t in _by_bucket(table, table["b"], 3)][2] == [0, 2, 5]
    with pytest.raises(ValueError, match="0..1"):
        _by_bucket(rows, ids, 2)


def test_buckets_of_raw_rows_and_of_partials_combine_to_the_exact_totals(tmp_path):
    rng = np.random.default_rng(3)
    wide = pa.table({"g": rng.integers(0, 50_000, 20_000), "x": rng.normal(size=20_000)})
    narrow = pa.table({"g": rng.integers(0, 20, 20_000), "x": rng.normal(size=20_000)})
    agg = Aggregate(
        by="g",
        metrics={"s": "sum(x)", "n": "count(*)", "m": "mean(x)", "lo": "min(x)", "hi": "max(x)"},
        buckets=3,
    )
    kinds = []
    for name, table in (("wide", wide), ("narrow", narrow)):
        (tmp_path / name).mkdir()
        kinds.append(agg.map_side(table, tmp_path / name, 3)["preaggregated"])
    assert kinds == [False, True]  # one batch of raw rows, one of partials
    parts = [
        agg.reduce_side([tmp_path / d / f"bucket-{k:03d}.arrow" for d in ("wide", "narrow")])
        for k in range(3)
    ]
    got = pa.concat_tables(parts).to_pandas().set_index("g").sort_index()
    assert got.index.is_unique
    both = pd.concat([wide.to_pandas(), narrow.to_pandas()])
    want = both.groupby("g").x.agg(["sum", "count", "mean", "min", "max"])
    assert (got.n == want["count"]).all()
    for col, ref in (("s", "sum"), ("m", "mean"), ("lo", "min"), ("hi", "max")):
        np.testing.assert_allclose(got[col], want[ref], rtol=1e-9, atol=1e-9)


# -- streamed rows: an aggregate's map side reads the last query a chunk at a time --


@pytest.mark.parametrize(
    "names",
    [
        ("filter", "derive", "quarantine", "after"),
        ("filter_null", "replace", "drop", "after", "keep"),
        ("derive", "keep"),
    ],
)
def test_streamed_rows_counts_and_quarantine_match_the_whole_table(names):
    step = SqlChain(tuple(STEPS[n] for n in names), keep=("k", "v"))
    data = batch_table(300_000, seed=4)  # more than two chunks of 2**17 rows
    a, b = new_ctx(), new_ctx()
    want = step.apply(data, a)
    stream = step.stream(data, b)
    assert isinstance(stream, BatchStream)
    chunks = list(stream)
    assert len(chunks) >= 2
    assert stream.rows == want.num_rows
    assert same_table(pa.Table.from_batches(chunks), want)
    same_context(a, b)
    with pytest.raises(RuntimeError, match="only once"):
        list(stream)


def test_map_side_writes_a_streamed_batch_chunk_by_chunk(tmp_path):
    import pyarrow.ipc as ipc

    rng = np.random.default_rng(5)
    n = 400_000
    wide = pa.table({"g": rng.integers(0, 300_000, n), "x": rng.normal(size=n)})
    narrow = pa.table({"g": rng.integers(0, 20, n), "x": rng.normal(size=n)})
    agg = Aggregate(by="g", metrics={"s": "sum(x)", "n": "count(*)"}, buckets=3)
    keep = SqlChain(
        (Filter("x > -10"),), keep=("g", "x"), extra=tuple(agg.bucket_column(3).items())
    )
    for name, table in (("wide", wide), ("narrow", narrow)):
        for how in ("table", "stream"):
            (tmp_path / name / how).mkdir(parents=True)
            data = getattr(keep, "apply" if how == "table" else "stream")(table, new_ctx())
            info = agg.map_side(data, tmp_path / name / how, 3)
            assert info["preaggregated"] is (name == "narrow")
            assert sum(info["bucket_rows"]) == (n if name == "wide" else 20)
        for k in range(3):
            files = [tmp_path / name / how / f"bucket-{k:03d}.arrow" for how in ("table", "stream")]
            tables = [ipc.open_file(f).read_all() for f in files]
            got = [t.sort_by([(c, "ascending") for c in t.column_names]) for t in tables]
            assert got[0].equals(got[1]), (name, k)
            if name == "wide":  # written as the chunks came: several record batches
                assert ipc.open_file(files[1]).num_record_batches >= 2
