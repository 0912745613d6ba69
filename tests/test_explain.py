"""The optimizer pass: what every batch does is decided before any runs, and explain() shows it."""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq

from dbatch import (
    Aggregate,
    ByCount,
    Derive,
    Enrich,
    Files,
    Filter,
    Map,
    ParquetSink,
    Pipeline,
    Sql,
)
from dbatch.compile import Handoff, SqlStage, StepStage
from dbatch.context import BatchContext
from dbatch.core import Batch

SCHEMA = {"k": "int64", "v": "float64", "c": "string"}


def files(tmp_path, fmt="parquet"):
    folder = tmp_path / "in"
    folder.mkdir()
    table = pa.table({"k": [1, 2, 3], "v": [0.5, -1.0, 2.0], "c": ["a", "b", "a"]})
    if fmt == "parquet":
        pq.write_table(table, folder / "a.parquet")
    else:
        (folder / "a.csv").write_text("k,v,c\n1,0.5,a\n2,-1.0,b\n3,2.0,a\n")
    return Files(str(folder / f"*.{fmt}"), schema=SCHEMA)


def test_sql_steps_fuse_into_stages_and_other_steps_stand_alone(tmp_path):
    p = Pipeline(
        files(tmp_path),
        ParquetSink(str(tmp_path / "out")),
        steps=[
            Filter("v > 0"),
            Derive({"w": "v * 2"}),
            Map(lambda df: df),
            Sql("SELECT * FROM batch"),
            Enrich(pa.table({"c": ["a"], "z": [1]}), on="c"),
        ],
    )
    stages = p.physical().stages
    assert [type(s) for s in stages] == [SqlStage, StepStage, StepStage, SqlStage]
    assert len(stages[0].steps) == 2
    assert p.physical().scan  # the first stage's query reads the Parquet files itself
    text = p.explain()
    assert "stage 1  SQL  Filter -> Derive" in text and "step Map" in text and "scan" in text


@dataclass(frozen=True)
class PositiveOnly(Filter):
    """A user's own filter: a subclass fuses like the built-in one."""

    where: str = "v > 0"


def test_a_subclass_of_a_sql_step_is_fused_too(tmp_path):
    p = Pipeline(
        files(tmp_path),
        ParquetSink(str(tmp_path / "out")),
        steps=[PositiveOnly(), Derive({"w": "v * 2"})],
    )
    [stage] = p.physical().stages
    assert isinstance(stage, SqlStage) and len(stage.steps) == 2
    ctx = BatchContext(batch=Batch("b", (), "f"))
    out = stage.chain().apply(pa.table({"v": [1.0, -1.0]}), ctx)
    assert out.to_pydict() == {"v": [1.0], "w": [2.0]} and ctx.rows_filtered == 1


def test_the_read_path_says_why_it_is_not_a_scan(tmp_path):
    csv = Pipeline(
        files(tmp_path, "csv"), ParquetSink(str(tmp_path / "o")), steps=[Filter("v > 0")]
    )
    assert csv.physical().scan  # planned; each batch's footers decide (a CSV file has none)
    no_schema = Pipeline(Files(str(tmp_path / "in" / "*.csv")), ParquetSink(str(tmp_path / "o")))
    assert "no declared schema" in no_schema.explain()
    fail_fast = csv.replace(bad_input="fail_fast")
    assert not fail_fast.physical().scan and "fail_fast" in fail_fast.explain()


def test_with_an_aggregate_the_last_query_streams_only_what_it_reads(tmp_path):
    agg = Aggregate(by="c", metrics={"total": "sum(v)"})
    p = Pipeline(
        files(tmp_path),
        ParquetSink(str(tmp_path / "out")),
        steps=[Filter("v > 0")],
        aggregate=agg,
        batching=ByCount(1),
    )
    plan = p.physical()
    assert plan.handoff is Handoff.STREAM
    assert plan.stages[-1].keep == ("c", "v")
    assert "stream into the aggregate's hash buckets" in p.explain()
    # Without SQL steps the scan still hands on just those columns, in a query of its own.
    bare = p.replace(steps=[]).physical()
    assert [type(s) for s in bare.stages] == [SqlStage] and bare.stages[0].steps == ()
    # A Python step last: its table goes into the buckets.
    mapped = p.replace(steps=[Map(lambda df: df)]).physical()
    assert mapped.handoff is Handoff.BUCKETS and not mapped.scan
