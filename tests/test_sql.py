"""SqlSource and SqlSink on real SQLite files and the real PostgreSQL server."""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from dbatch import Aggregate, ByCount, ByWindow, Filter, Pipeline
from dbatch.batching import make_batches
from dbatch.context import BatchContext
from dbatch.errors import CommitError, JobSpecError, SourceError
from dbatch.sinks.base import Part
from dbatch.sinks.sql import SqlSink
from dbatch.sources.sql import SqlSource
from dbatch.spec import load_job
from dbatch.testing import RaiseOn
from dbatch.watermark import committed_watermark

START = dt.datetime(2026, 1, 1)


def make_orders(url: str, table: str, ids: range, *, start: dt.datetime = START) -> None:
    """``orders``-like rows: id, ts (every 37 minutes), currency, amount."""
    eng = sa.create_engine(url)
    meta = sa.MetaData()
    t = sa.Table(
        table,
        meta,
        sa.Column("id", sa.BigInteger),
        sa.Column("ts", sa.DateTime),
        sa.Column("currency", sa.String(3)),
        sa.Column("amount", sa.Float),
    )
    meta.create_all(eng)
    rows = [
        {
            "id": i,
            "ts": start + dt.timedelta(minutes=37 * i),
            "currency": ("EUR", "USD", "GBP")[i % 3],
            "amount": i * 1.25,
        }
        for i in ids
    ]
    with eng.begin() as con:
        if rows:
            con.execute(t.insert(), rows)
    eng.dispose()


def read_table(url: str, table: str) -> pd.DataFrame:
    eng = sa.create_engine(url)
    with eng.connect() as con:
        frame = pd.read_sql(sa.select(sa.Table(table, sa.MetaData(), autoload_with=con)), con)
    eng.dispose()
    return frame


def execute(url: str, sql: str, **params) -> None:
    eng = sa.create_engine(url)
    with eng.begin() as con:
        con.execute(sa.text(sql), params)
    eng.dispose()


def load_everything(source, batching=None) -> tuple[list, list[pa.Table], list[BatchContext]]:
    batches = make_batches(source.list_units(), batching or ByCount(1))
    ctxs = [BatchContext(batch=b) for b in batches]
    return batches, [source.load(b, c) for b, c in zip(batches, ctxs, strict=True)], ctxs


@pytest.fixture
def shop(tmp_path) -> str:
    url = f"sqlite:///{tmp_path / 'shop.db'}"
    make_orders(url, "orders", range(1, 1001))
    return url


@pytest.fixture
def pg(postgres_url):
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


# -- the source ---------------------------------------------------------------------------


def test_key_ranges_sit_on_a_fixed_grid_and_only_the_last_one_grows(shop):
    src = SqlSource(shop, table="orders", key="id", chunk=300)
    units = src.list_units()
    assert [u.key for u in units] == ["id:[0,300)", "id:[300,600)", "id:[600,900)", "id:[900,1200)"]
    assert dict(units[0].identity)["lo"] == 1 and dict(units[-1].identity)["hi"] == 1001
    before = make_batches(units, ByCount(1))
    make_orders(shop, "orders", range(1001, 1051))
    after = make_batches(src.list_units(), ByCount(1))
    assert [b.id for b in after] == [b.id for b in before]
    changed = [a.id for a, b in zip(after, before, strict=True) if a.fingerprint != b.fingerprint]
    assert changed == [before[-1].id]


def test_load_streams_chunks_into_arrow_and_counts_rows(shop):
    src = SqlSource(shop, table="orders", key="id", chunk=300, fetch_rows=64)
    batches, tables, ctxs = load_everything(src)
    assert [t.num_rows for t in tables] == [299, 300, 300, 101]
    assert tables[1].column("id").num_chunks == 5  # 300 rows fetched 64 at a time
    assert tables[0].schema.field("ts").type == pa.timestamp("us")
    assert tables[0].schema.field("currency").type == pa.string()
    ids = [i for t in tables for i in t.column("id").to_pylist()]
    assert ids == list(range(1, 1001))
    assert sum(c.rows_in for c in ctxs) == 1000


def test_postgres_reads_through_a_server_side_cursor(pg):
    import psycopg

    from dbatch.database import engine

    url, prefix = pg
    make_orders(url, f"{prefix}_orders", range(1, 501))
    cursors = []

    def seen(conn, cursor, statement, *args):
        if f"{prefix}_orders" in statement and "min(" not in statement.lower():
            cursors.append(type(cursor))

    sa.event.listen(engine(url), "after_cursor_execute", seen)
    try:
        src = SqlSource(url, table=f"{prefix}_orders", key="id", chunk=1000, fetch_rows=100)
        _, tables, _ = load_everything(src)
    finally:
        sa.event.remove(engine(url), "after_cursor_execute", seen)
    assert tables[0].num_rows == 500 and tables[0].column("id").num_chunks == 5
    assert cursors == [psycopg.ServerCursor]


def test_time_windows_become_units_with_times(shop):
    src = SqlSource(shop, table="orders", time_key="ts", window="6h", columns=["id", "amount"])
    units = src.list_units()
    last = START + dt.timedelta(minutes=37 * 1000)
    assert len(units) == (last - START) // dt.timedelta(hours=6) + 1
    assert units[1].key == "ts:[2026-01-01T06:00:00,2026-01-01T12:00:00)"
    batches, tables, _ = load_everything(src, ByWindow("1D"))
    assert len(batches) == 26  # 6-hour units grouped by day
    assert tables[0].column_names == ["id", "amount", "ts"]
    assert sorted(i for t in tables for i in t.column("id").to_pylist()) == list(range(1, 1001))


def test_a_query_with_bound_parameters(shop):
    src = SqlSource(
        shop,
        query="SELECT id, ts, amount * 2 AS double FROM orders WHERE currency = :cur",
        params={"cur": "EUR"},
        time_key="ts",
        window="1D",
    )
    _, tables, _ = load_everything(src, ByCount(100))
    [table] = tables
    assert table.num_rows == 333 and table.schema.field("ts").type == pa.timestamp("us")
    assert table.column("double").to_pylist()[:2] == [7.5, 15.0]


def test_query_dtypes_convert_text_and_set_aside_what_does_not_fit(tmp_path):
    url = f"sqlite:///{tmp_path / 'days.db'}"
    execute(url, "CREATE TABLE t (id INTEGER, day TEXT)")
    execute(url, "INSERT INTO t VALUES (1, '2026-03-01'), (2, 'not a day'), (3, '2026-03-03')")
    src = SqlSource(url, query="SELECT id, day FROM t", key="id", dtypes={"day": "date"})
    _, [table], [ctx] = load_everything(src)
    assert table.schema.field("day").type == pa.date32()
    assert table.column("id").to_pylist() == [1, 3]
    [row] = ctx.quarantined_rows().to_pylist()
    assert "'not a day'" in row["reason"] and "date32" in row["reason"]


def test_rows_without_a_key_are_a_unit_of_their_own(shop):
    execute(shop, "INSERT INTO orders (id, currency, amount) VALUES (NULL, 'EUR', 1.0)")
    units = SqlSource(shop, table="orders", key="id", chunk=500).list_units()
    assert units[-1].key == "id:NULL"
    _, tables, _ = load_everything(SqlSource(shop, table="orders", key="id", chunk=500))
    assert sum(t.num_rows for t in tables) == 1001


def test_values_of_the_wrong_type_are_quarantined_with_the_row(shop):
    # SQLite keeps what it is given: a text value in a REAL column.
    execute(shop, "UPDATE orders SET amount = 'n/a' WHERE id = 7")
    _, tables, ctxs = load_everything(SqlSource(shop, table="orders", key="id", chunk=300))
    assert tables[0].num_rows == 298
    [row] = ctxs[0].quarantined_rows().to_pylist()
    assert row["kind"] == "type" and "'n/a'" in row["reason"] and '"id": 7' in row["raw"]
    c = ctxs[0]
    assert c.rows_in == tables[0].num_rows + c.rows_quarantined


def test_bad_options_are_named():
    url = "sqlite:///x.db"
    with pytest.raises(JobSpecError, match="exactly one of table or query"):
        SqlSource(url, key="id")
    with pytest.raises(JobSpecError, match="exactly one of key"):
        SqlSource(url, table="t")
    with pytest.raises(JobSpecError, match="pandas frequency"):
        SqlSource(url, table="t", time_key="ts", window="fortnightly")
    with pytest.raises(JobSpecError, match="watermark_table"):
        SqlSource(url, table="t", key="id", incremental=True)
    with pytest.raises(JobSpecError, match="in-memory SQLite"):
        SqlSource("sqlite://", table="t", key="id")


def test_missing_file_table_and_column_are_clear(tmp_path, shop):
    with pytest.raises(SourceError, match="does not exist"):
        SqlSource(f"sqlite:///{tmp_path / 'nope.db'}", table="t", key="id").list_units()
    assert not (tmp_path / "nope.db").exists()  # not created as a side effect
    with pytest.raises(SourceError, match="there is no table nope"):
        SqlSource(shop, table="nope", key="id").list_units()
    with pytest.raises(JobSpecError, match=r"no column\(s\) \['idx'\]"):
        SqlSource(shop, table="orders", key="idx").list_units()


def test_a_hostile_table_name_is_only_ever_a_name(shop):
    with pytest.raises(SourceError, match="there is no table"):
        SqlSource(shop, table='orders"; DROP TABLE orders; --', key="id").list_units()
    assert len(read_table(shop, "orders")) == 1000


def test_database_down_names_the_server_and_hides_the_password():
    src = SqlSource("postgresql+psycopg://etl:hunter2@127.0.0.1:1/test", table="t", key="id")
    with pytest.raises(SourceError) as info:
        src.list_units()
    text = str(info.value)
    assert "127.0.0.1:1" in text and "etl:***@" in text and "hunter2" not in text
    assert "server running" in text
    assert "hunter2" not in src.describe() and "hunter2" not in repr(src.token())


def test_wrong_credentials_say_what_to_check(postgres_url):
    host = postgres_url.split("@", 1)[1]
    src = SqlSource(f"postgresql+psycopg://nobody_x:pw-secret@{host}", table="t", key="id")
    with pytest.raises(SourceError) as info:
        src.list_units()
    text = str(info.value)
    assert "user name and password" in text and "pw-secret" not in text


# -- the sink -----------------------------------------------------------------------------


def stage(sink: SqlSink, tmp_path: Path, batch_id: str, table: pa.Table) -> Part:
    folder = tmp_path / "staged" / f"{batch_id}-{uuid.uuid4().hex[:6]}"
    folder.mkdir(parents=True)
    sink.stage(table, folder, batch_id)
    return Part(batch_id, folder, table.num_rows)


def rows(ids, amount=1.0) -> pa.Table:
    return pa.table({"id": list(ids), "amount": [float(amount)] * len(ids)})


@pytest.mark.parametrize("mode", ["replace", "upsert"])
def test_a_batch_committed_twice_lands_once(tmp_path, mode):
    url = f"sqlite:///{tmp_path / 'wh.db'}"
    sink = SqlSink(url, table="facts", mode=mode, key="id" if mode == "upsert" else None)
    part = stage(sink, tmp_path, "b-1", rows(range(10)))
    assert not sink.find_commit("b-1", "fp1")
    sink.commit_batch("b-1", "fp1", part)
    sink.commit_batch("b-1", "fp1", part)
    assert sink.find_commit("b-1", "fp1") and not sink.find_commit("b-1", "fp2")
    # The batch changed: its new rows replace the old ones.
    sink.commit_batch("b-1", "fp2", stage(sink, tmp_path, "b-1", rows(range(5, 15), 2.0)))
    frame = read_table(url, "facts").sort_values("id")
    expected = list(range(5, 15)) if mode == "replace" else list(range(15))
    assert frame["id"].tolist() == expected
    assert frame.loc[frame.id >= 5, "amount"].eq(2.0).all()
    assert sink.find_commit("b-1", "fp2")


def test_a_commit_that_fails_midway_leaves_nothing(pg, tmp_path):
    url, prefix = pg
    sink = SqlSink(url, table=f"{prefix}_facts", mode="upsert", key="id", chunk_rows=4)
    sink.commit_batch("b-0", "fp", stage(sink, tmp_path, "b-0", rows(range(100, 103))))
    bad = pa.table({"id": [1, 2, 3, 4, 5, None], "amount": [1.0] * 6})  # NULL key in chunk 2
    with pytest.raises(CommitError) as info:
        sink.commit_batch("b-1", "fp", stage(sink, tmp_path, "b-1", bad))
    assert "b-1" in str(info.value) and f"{prefix}_facts" in str(info.value)
    assert read_table(url, f"{prefix}_facts")["id"].tolist() == [100, 101, 102]
    assert not sink.find_commit("b-1", "fp")


def test_postgres_replace_copies_in_the_transaction_and_fails_whole(pg, tmp_path):
    url, prefix = pg
    name = f"{prefix}_copy"
    execute(
        url,
        f'CREATE TABLE "{name}" (id BIGINT, amount DOUBLE PRECISION NOT NULL, _dbatch_batch TEXT)',
    )
    sink = SqlSink(url, table=name, chunk_rows=4)
    part = stage(sink, tmp_path, "b-1", rows(range(10)))
    sink.commit_batch("b-1", "fp", part)
    sink.commit_batch("b-1", "fp", part)
    assert sorted(read_table(url, name)["id"]) == list(range(10))
    bad = pa.table({"id": list(range(10, 16)), "amount": [1.0] * 5 + [None]})
    with pytest.raises(CommitError, match="b-2"):
        sink.commit_batch("b-2", "fp", stage(sink, tmp_path, "b-2", bad))
    assert sorted(read_table(url, name)["id"]) == list(range(10))  # none of b-2
    # Replacing b-1 with new content removes its old rows in the same transaction.
    sink.commit_batch("b-1", "fp2", stage(sink, tmp_path, "b-1", rows(range(3), 9.0)))
    frame = read_table(url, name)
    assert sorted(frame["id"]) == [0, 1, 2] and frame["amount"].eq(9.0).all()


def test_an_existing_table_without_the_columns_is_refused_clearly(tmp_path):
    url = f"sqlite:///{tmp_path / 'wh.db'}"
    execute(url, "CREATE TABLE facts (id INTEGER)")
    sink = SqlSink(url, table="facts")
    with pytest.raises(CommitError, match=r"no column\(s\) \['amount'\].*ALTER TABLE"):
        sink.commit_batch("b-1", "fp", stage(sink, tmp_path, "b-1", rows(range(3))))


def test_upsert_into_a_table_without_a_unique_key_explains(tmp_path):
    url = f"sqlite:///{tmp_path / 'wh.db'}"
    execute(url, "CREATE TABLE facts (id INTEGER, amount REAL, _dbatch_batch TEXT)")
    sink = SqlSink(url, table="facts", mode="upsert", key="id")
    with pytest.raises(CommitError, match="primary key or unique index"):
        sink.commit_batch("b-1", "fp", stage(sink, tmp_path, "b-1", rows(range(3))))


def test_hostile_names_are_quoted_not_executed(tmp_path):
    url = f"sqlite:///{tmp_path / 'wh.db'}"
    name = 'facts"; DROP TABLE keep; --'
    execute(url, "CREATE TABLE keep (x INTEGER)")
    sink = SqlSink(url, table=name)
    table = pa.table({"id": [1], "odd name'); --": ["v"]})
    sink.commit_batch("b-1", "fp", stage(sink, tmp_path, "b-1", table))
    eng = sa.create_engine(url)
    assert set(sa.inspect(eng).get_table_names()) >= {"keep", name}
    eng.dispose()


def test_sink_database_down_is_a_clear_commit_error(tmp_path):
    sink = SqlSink("postgresql+psycopg://etl:hunter2@127.0.0.1:1/dw", table="facts")
    part = stage(sink, tmp_path, "b-1", rows(range(3)))
    with pytest.raises(CommitError) as info:
        sink.commit_batch("b-1", "fp", part)
    assert "127.0.0.1:1" in str(info.value) and "hunter2" not in str(info.value)


# -- end to end ---------------------------------------------------------------------------


def test_postgres_to_postgres_run_rerun_and_growth(pg, tmp_path, client):
    url, prefix = pg
    make_orders(url, f"{prefix}_orders", range(1, 2001))
    sink = SqlSink(url, table=f"{prefix}_clean", mode="upsert", key="id")
    pipeline = Pipeline(
        SqlSource(url, table=f"{prefix}_orders", key="id", chunk=500, fetch_rows=200),
        sink,
        steps=[Filter("currency <> 'GBP'")],
        batching=ByCount(1),
        name="pg",
        workdir=str(tmp_path / "work"),
    )
    first = pipeline.run(client=client)
    assert first.status == "succeeded" and first.committed == 5, first
    assert first.rows_in == 2000 and first.rows_in == first.rows_out + first.rows_filtered
    frame = read_table(url, f"{prefix}_clean")
    assert len(frame) == first.rows_out and frame["id"].is_unique
    assert pipeline.run(client=client).status == "nothing_to_do"
    make_orders(url, f"{prefix}_orders", range(2001, 2101))
    third = pipeline.run(client=client)
    assert third.committed == 1 and third.skipped == 4, third
    frame = read_table(url, f"{prefix}_clean")
    assert len(frame) == third.rows_out == 1400  # 2100 orders, the GBP third filtered out
    assert frame["id"].is_unique and frame["id"].max() == 2100


def test_aggregate_output_replaces_the_previous_one_in_one_transaction(shop, tmp_path, client):
    url = f"sqlite:///{tmp_path / 'wh.db'}"
    sink = SqlSink(url, table="totals")
    pipeline = Pipeline(
        SqlSource(shop, table="orders", key="id", chunk=250),
        sink,
        aggregate=Aggregate(by=["currency"], metrics={"total": "sum(amount)", "n": "count(*)"}),
        batching=ByCount(1),
        name="agg",
        workdir=str(tmp_path / "work"),
    )
    assert pipeline.run(client=client).status == "succeeded"
    got = read_table(url, "totals").set_index("currency")
    assert got["n"].sum() == 1000 and len(got) == 3
    make_orders(shop, "orders", range(1001, 1301))
    assert pipeline.run(client=client).status == "succeeded"
    got = read_table(url, "totals").set_index("currency")
    orders = read_table(shop, "orders")
    want = orders.groupby("currency")["amount"].sum()
    assert len(got) == 3 and got["n"].sum() == 1300
    assert got["total"].sort_index().tolist() == pytest.approx(want.sort_index().tolist())
    assert sink.current_manifest()["output_rows"] == 3


def test_incremental_reads_only_rows_above_the_published_watermark(shop, tmp_path, client):
    wh = f"sqlite:///{tmp_path / 'wh.db'}"
    source = SqlSource(
        shop,
        table="orders",
        key="id",
        chunk=300,
        incremental=True,
        watermark_table="orders",
        watermark_url=wh,
    )
    sink = SqlSink(wh, table="orders")
    pipeline = Pipeline(
        source, sink, batching=ByCount(1), name="inc", workdir=str(tmp_path / "work")
    )
    assert pipeline.run(client=client).committed == 4
    assert committed_watermark(wh, "orders", "id") == 1000
    # Old rows are purged upstream, new ones arrive: only the new ones are read.
    execute(shop, "DELETE FROM orders WHERE id < 500")
    make_orders(shop, "orders", range(1001, 1701))
    plan = pipeline.plan()
    assert [b.units[0].key for b in plan] == ["id:[1001,1200)", "id:[1200,1500)", "id:[1500,1800)"]
    # A failed run does not move the watermark past the batch that failed.
    failed = pipeline.run(client=client, fault=RaiseOn((plan[0].id,)))
    assert failed.status == "failed" and failed.committed == 2
    assert committed_watermark(wh, "orders", "id") == 1000
    assert [b.id for b in pipeline.plan()] == [b.id for b in plan]
    done = pipeline.run(client=client)
    assert done.status == "succeeded" and done.committed == 1 and done.skipped == 2, done
    frame = read_table(wh, "orders")
    assert sorted(frame["id"]) == list(range(1, 1701))  # nothing lost, nothing twice
    assert committed_watermark(wh, "orders", "id") == 1700
    # Nothing new upstream: an empty plan and a run that does nothing (not an error).
    assert len(pipeline.plan()) == 0
    idle = pipeline.run(client=client)
    assert idle.status == "nothing_to_do" and idle.committed == 0, idle
    assert sorted(read_table(wh, "orders")["id"]) == list(range(1, 1701))


def test_job_file_from_sqlite_to_a_warehouse_table(shop, tmp_path, client):
    job = tmp_path / "job.yaml"
    job.write_text(
        f"""
name: sql_job
source:
  type: sql
  url: {shop}
  table: orders
  time_key: ts
  window: 1D
  columns: [id, currency, amount]
batching: {{count: 7}}
steps:
  - derive: {{amount_x2: "amount * 2"}}
sink:
  type: sql
  url: sqlite:///{tmp_path / "wh.db"}
  table: orders_x2
  mode: upsert
  key: id
"""
    )
    pipeline = load_job(job).pipeline
    assert isinstance(pipeline.source, SqlSource) and isinstance(pipeline.sink, SqlSink)
    result = pipeline.run(client=client)
    assert result.status == "succeeded" and result.committed == 4, result
    frame = read_table(f"sqlite:///{tmp_path / 'wh.db'}", "orders_x2")
    assert len(frame) == 1000 and (frame.amount_x2 == frame.amount * 2).all()


def test_job_file_errors_name_the_key(tmp_path):
    job = tmp_path / "job.yaml"
    job.write_text(
        "source: {type: sql, url: 'sqlite:///x.db', table: t, key: id, chunk: -5}\n"
        "sink: {type: sql, url: 'sqlite:///y.db', table: t, mode: merge}\n"
    )
    with pytest.raises(JobSpecError, match="chunk"):
        load_job(job)


def test_staged_file_is_plain_parquet(tmp_path):
    sink = SqlSink(f"sqlite:///{tmp_path / 'wh.db'}", table="t")
    part = stage(sink, tmp_path, "b-9", rows(range(4)))
    [f] = part.directory.glob("*.parquet")
    assert pq.read_table(f).num_rows == 4
