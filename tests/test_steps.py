"""Built-in steps on real batches: map, filter, derive, sql, enrich (sent once per worker)."""

from __future__ import annotations

import pickle

import pandas as pd
import pyarrow as pa
import pytest

from dbatch import ByCount, Derive, Enrich, Files, Filter, Map, ParquetSink, Pipeline, Sql
from dbatch.context import BatchContext
from dbatch.core import Batch
from dbatch.errors import JobSpecError


def ctx():
    return BatchContext(batch=Batch("b", (), "f"))


def table():
    return pa.table({"k": ["a", "b", "c", "a"], "v": [1, 2, 3, 4]})


def test_map_on_pandas_and_arrow_counts_dropped_rows_as_filtered():
    c = ctx()
    out = Map(lambda df: df[df.v > 1]).apply(table(), c)
    assert out.num_rows == 3 and c.rows_filtered == 1
    out = Map(lambda t: t.slice(0, 2), on="arrow").apply(table(), c)
    assert out.num_rows == 2 and c.rows_filtered == 3


def test_map_rejects_bad_return_values():
    with pytest.raises(TypeError, match="return a pandas DataFrame or a pyarrow Table"):
        Map(lambda df: 42).apply(table(), ctx())


def test_filter_derive_sql():
    c = ctx()
    out = Filter("v >= 2").apply(table(), c)
    assert out.column("v").to_pylist() == [2, 3, 4] and c.rows_filtered == 1
    out = Derive({"w": "v * 10", "v": "v + 1"}).apply(table(), c)
    assert out.column("w").to_pylist() == [10, 20, 30, 40]
    assert out.column("v").to_pylist() == [2, 3, 4, 5]
    out = Sql("SELECT k, sum(v) AS s FROM batch GROUP BY k ORDER BY k").apply(table(), c)
    assert out.to_pydict() == {"k": ["a", "b", "c"], "s": [5, 2, 3]}


def test_function_edits_change_the_token():
    def f(df):
        return df

    def g(df):
        return df.head()

    assert Map(f).token() != Map(g).token()


@pytest.mark.parametrize(
    "unmatched,rows,filtered,quarantined",
    [("keep", 4, 0, 0), ("filter", 3, 1, 0), ("quarantine", 3, 0, 1)],
)
def test_enrich_unmatched_modes(unmatched, rows, filtered, quarantined):
    lookup = pd.DataFrame({"k": ["a", "b"], "label": ["A", "B"]})
    c = ctx()
    out = Enrich(lookup, on="k", unmatched=unmatched).apply(table(), c)
    assert out.num_rows == rows
    assert c.rows_filtered == filtered and c.rows_quarantined == quarantined
    if unmatched == "quarantine":
        q = c.quarantined_rows().to_pylist()
        assert q[0]["kind"] == "no_match" and "k='c'" in q[0]["reason"]


def test_enrich_checks_its_columns():
    with pytest.raises(JobSpecError, match="no column"):
        Enrich(pd.DataFrame({"x": [1]}), on="k")


def test_enrich_pickles_without_its_table():
    lookup = pd.DataFrame({"k": [f"k{i}" for i in range(200_000)], "label": ["x" * 20] * 200_000})
    step = Enrich(lookup, on="k")
    assert len(pickle.dumps(step)) < 2_000  # the table travels once per worker, not in tasks
    clone = pickle.loads(pickle.dumps(step))
    with pytest.raises(RuntimeError, match="was not sent to this worker"):
        clone.apply(table(), ctx())


def test_enrich_lookup_is_sent_to_each_worker_once(tmp_path, client):
    (tmp_path / "in").mkdir()
    for f in range(12):
        pd.DataFrame({"k": ["a", "b", "c"] * 10, "v": range(30)}).to_csv(
            tmp_path / "in" / f"{f}.csv", index=False
        )
    lookup = pd.DataFrame({"k": ["a", "b", "c"], "label": ["A", "B", "C"]})

    def incoming(dask_worker):
        return dask_worker.state.transfer_incoming_count_total

    before = sum(client.run(incoming).values())
    p = Pipeline(
        Files(str(tmp_path / "in" / "*.csv")),
        ParquetSink(str(tmp_path / "out")),
        steps=[Enrich(lookup, on="k")],
        batching=ByCount(1),
        workdir=str(tmp_path / "w"),
    )
    result = p.run(client=client)
    assert result.committed == 12
    # Twelve batches ran, yet each worker received the lookup (and the pipeline) at most
    # once: they were broadcast up front, not sent along with each task.
    workers = len(client.scheduler_info()["workers"])
    assert sum(client.run(incoming).values()) - before <= 2 * workers < 12
    assert set(pd.read_parquet(tmp_path / "out")["label"]) == {"A", "B", "C"}
