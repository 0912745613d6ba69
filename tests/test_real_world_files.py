"""Real-world files without surprises: null markers, every Arrow type, one record per line."""

from __future__ import annotations

import decimal
import gzip
import json
from datetime import UTC, datetime, time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dbatch import ByCount, Files, JobSpecError, ParquetSink, Pipeline
from dbatch.context import BatchContext
from dbatch.schema import parse_type


def load(source: Files):
    """Every batch of ``source`` loaded in this process: (table, context) of the first."""
    pipeline = Pipeline(source, ParquetSink("out"), batching=ByCount(100))
    batch = pipeline.plan()[0]
    ctx = BatchContext(batch=batch)
    return pipeline.physical(aggregate=False).run(batch, ctx), ctx


def balanced(ctx: BatchContext, table: pa.Table) -> bool:
    return ctx.rows_in == table.num_rows + ctx.rows_filtered + ctx.rows_quarantined


# -- 1. missing values -----------------------------------------------------------------

FLIGHTS = (
    "flight,dep_delay,cancelled,carrier\n"
    "1,5,0,AA\n"
    "2,NA,1,NA\n"  # a cancelled flight: no delay; the carrier is the text 'NA'
    "3,,1,UA\n"
    "4,-3,0,\n"
)


def test_null_markers_mean_the_same_with_and_without_a_schema(tmp_path):
    (tmp_path / "f.csv").write_text(FLIGHTS)
    untyped, _ = load(Files(str(tmp_path / "f.csv")))
    typed, ctx = load(
        Files(
            str(tmp_path / "f.csv"),
            schema={
                "flight": "int64",
                "dep_delay": "float64",
                "cancelled": "int8",
                "carrier": "string",
            },
        )
    )
    assert ctx.rows_quarantined == 0  # a declared type plus a null marker is a null, not a bad row
    assert typed["dep_delay"].to_pylist() == untyped["dep_delay"].to_pylist() == [5, None, None, -3]
    # A string column keeps its text, as Arrow does without a schema.
    assert typed["carrier"].to_pylist() == untyped["carrier"].to_pylist() == ["AA", "NA", "UA", ""]
    assert typed["cancelled"].to_pylist() == [0, 1, 1, 0]
    assert balanced(ctx, typed)


def test_declared_null_markers_at_source_and_column_level(tmp_path):
    (tmp_path / "f.csv").write_text("id,temp,station\n1,-999,n/a\n2,12.5,-\n3,NA,X\n")
    table, ctx = load(
        Files(
            str(tmp_path / "f.csv"),
            null_values=["-", "NA"],
            schema={
                "id": "int64",
                "temp": {"type": "float64", "null_values": ["-999", "NA"]},
                "station": "string",
            },
        )
    )
    assert table["temp"].to_pylist() == [None, 12.5, None]
    assert table["station"].to_pylist() == ["n/a", None, "X"]  # the source's markers apply
    assert ctx.rows_quarantined == 0


def test_null_markers_are_validated(tmp_path):
    with pytest.raises(JobSpecError, match="null_values.*list of text"):
        Files("x.csv", null_values="NA")
    with pytest.raises(JobSpecError, match="quote numbers"):
        Files("x.csv", schema={"a": {"type": "int64", "null_values": [-999]}})


# -- 2. types ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name,expected",
    [
        ("decimal128(12, 2)", pa.decimal128(12, 2)),
        ("timestamp[us, tz=UTC]", pa.timestamp("us", tz="UTC")),
        ("timestamp[ms, tz=Europe/Berlin]", pa.timestamp("ms", tz="Europe/Berlin")),
        ("timestamp[ns]", pa.timestamp("ns")),
        ("uint16", pa.uint16()),
        ("float32", pa.float32()),
        ("large_string", pa.large_string()),
        ("binary", pa.binary()),
        ("date32", pa.date32()),
        ("time64[us]", pa.time64("us")),
        ("bool", pa.bool_()),
        ("timestamp", pa.timestamp("us")),
    ],
)
def test_every_type_a_real_file_holds_is_declarable_by_its_pyarrow_name(name, expected):
    assert parse_type(name) == expected


def test_an_unknown_type_or_zone_names_the_fix():
    with pytest.raises(JobSpecError, match="decimal128.*timestamp"):
        parse_type("money")
    with pytest.raises(JobSpecError, match="unknown time zone 'Mars/Base'"):
        parse_type("timestamp[us, tz=Mars/Base]")
    with pytest.raises(JobSpecError, match="1 to 38 digits"):
        parse_type("decimal128(40, 2)")


def test_text_reads_into_every_declared_type(tmp_path):
    (tmp_path / "t.csv").write_text(
        "amount,at,local,day,clock,flag,n\n"
        "12.34,2026-11-01T10:00:00Z,2026-11-01T10:00:00+02:00,2026-11-01,10:30:00.25,yes,65535\n"
        "0.5,2026-11-01 12:00:00,2026-11-01 12:00:00,2026-11-02,23:59:59,0,0\n"
    )
    table, ctx = load(
        Files(
            str(tmp_path / "t.csv"),
            schema={
                "amount": "decimal128(12, 2)",
                "at": "timestamp[us, tz=UTC]",
                "local": "timestamp[us]",
                "day": "date32",
                "clock": "time64[us]",
                "flag": "bool",
                "n": "uint16",
            },
        )
    )
    assert ctx.rows_quarantined == 0, ctx.quarantined_rows().to_pylist()
    assert table["amount"].to_pylist() == [decimal.Decimal("12.34"), decimal.Decimal("0.50")]
    assert table["at"].to_pylist() == [
        datetime(2026, 11, 1, 10, tzinfo=UTC),
        datetime(2026, 11, 1, 12, tzinfo=UTC),
    ]
    # Text with an offset into a column without a zone: the instant, in UTC.
    assert table["local"].to_pylist() == [datetime(2026, 11, 1, 8), datetime(2026, 11, 1, 12)]
    assert table["clock"].to_pylist() == [time(10, 30, 0, 250000), time(23, 59, 59)]
    assert table["flag"].to_pylist() == [True, False] and table["n"].to_pylist() == [65535, 0]


# Values that test where Arrow's typed CSV reading and the casts of text could part:
# spaces, signs, exponents, markers with spaces, offsets, fractions, out of range.
TRICKY = {
    "int64": ["7", " 7 ", "+7", "-0", "007", "1e3", "7.0", "0x1F", "9223372036854775808", "1_0"],
    "int8": ["127", "128", "-129", " -5"],
    "uint16": ["65535", "65536", "-1", "+3"],
    "float64": ["1.5", " 2.5 ", "1e400", "-1E-3", ".5", "5.", "inf", "-Infinity", "1,5", "+1"],
    "float32": ["3.4e38", "3.5e38", "1e-46", "0.1"],
    "date32": ["2026-11-01", " 2026-11-01", "2026-11-1", "2026-02-30", "20261101"],
    "timestamp[us]": [
        "2026-11-01 10:00:00",
        "2026-11-01T10:00:00",
        "2026-11-01",
        "2026-11-01 10:00",
        "2026-11-01 10:00:00.1234567",
        "2026-11-01T10:00:00Z",
        "2026-11-01T10:00:00+02:00",
        " 2026-11-01 10:00:00 ",
    ],
    "timestamp[ms]": ["2026-11-01 10:00:00.123", "2026-11-01 10:00:00.1234"],
}
MARKERS = ["", "NA", " NA", "n/a", "null ", "NaN", "nan", "-", "#N/A"]


@pytest.mark.parametrize("kind", sorted(TRICKY))
def test_typed_reading_of_csv_gives_what_the_casts_of_text_give(tmp_path, kind, monkeypatch):
    """Numbers, dates and times without a zone are converted by Arrow as it parses, the
    rest is cast from text: for every value, alone in a file, the rows, values, bad rows
    (reason, raw text, line) and counts are those of reading all of it as text."""
    import dbatch.sources.files.csv as csv_module

    kept_typed, parse = [], csv_module._parse

    def spy(*args):
        parsed = parse(*args)
        if "x" in args[-1]:  # read with x typed: did it stay so?
            kept_typed.append(parsed is not None and "x" in parsed.typed)
        return parsed

    monkeypatch.setattr(csv_module, "_parse", spy)
    for i, value in enumerate(TRICKY[kind] + MARKERS):
        folder = tmp_path / f"v{i}"
        folder.mkdir()
        (folder / "f.csv").write_text(f"id,x,note\n1,{value},a\n2,{TRICKY[kind][0]},b\n")
        source = Files(str(folder / "f.csv"), schema={"id": "int64", "x": kind, "note": "string"})
        assert set(csv_module._typed(source)) == {"id", "x"}
        typed, typed_ctx = load(source)
        with monkeypatch.context() as m:
            m.setattr(csv_module, "_typed", lambda source: {})
            text, text_ctx = load(source)
        assert typed.equals(text), (kind, value, typed.to_pylist(), text.to_pylist())
        assert typed.schema == text.schema
        assert typed_ctx.quarantined_rows().equals(text_ctx.quarantined_rows()), (kind, value)
        assert (typed_ctx.rows_in, typed_ctx.rows_quarantined) == (
            text_ctx.rows_in,
            text_ctx.rows_quarantined,
        )
    assert any(kept_typed) and not all(kept_typed)  # both ways were taken


def test_a_column_with_a_value_arrow_will_not_convert_is_read_as_text_again(tmp_path):
    """A time with an offset in a column without a zone: Arrow refuses it, the text
    cast reads it as the instant in UTC; the other typed column stays typed."""
    import dbatch.sources.files.csv as csv_module
    from dbatch.core import Batch

    (tmp_path / "f.csv").write_text("n,at\n1,2026-11-01T10:00:00+02:00\n2,2026-11-01 12:00:00\n")
    source = Files(str(tmp_path / "f.csv"), schema={"n": "int64", "at": "timestamp[us]"})
    ctx = BatchContext(batch=Batch("b", (), ""))
    data = (tmp_path / "f.csv").read_bytes()
    lines = csv_module.Lines(data)
    parsed = csv_module._parse(
        source,
        "f.csv",
        lines,
        lines.odd_quotes()[:0],
        ctx,
        {
            "n": pa.int64(),
            "at": pa.timestamp("us"),
        },
    )
    assert parsed is not None and parsed.typed == {"n": pa.int64()}
    assert parsed.table.schema.field("n").type == pa.int64()
    assert parsed.table.schema.field("at").type == pa.string()
    table, ctx = load(source)
    assert table["at"].to_pylist() == [datetime(2026, 11, 1, 8), datetime(2026, 11, 1, 12)]


def test_columns_that_will_not_convert_cost_at_most_two_more_parses(tmp_path, monkeypatch):
    """Bad values in three typed columns: the first is read as text again, at the
    second every column is; the source's next files read the columns that failed as
    text at once."""
    import dbatch.sources.files.csv as csv_module

    schema = {"a": "int64", "b": "float64", "c": "date32", "note": "string"}
    for name in ("f1", "f2", "f3"):
        (tmp_path / f"{name}.csv").write_text(
            "a,b,c,note\n1,1.5,2026-11-01,x\nzz,nope,never,y\n3,3.5,2026-11-03,z\n"
        )
    parses, arrow_csv = [], csv_module._arrow_csv

    def counted(source, text, typed, records, bad):
        parses.append(sorted(typed))
        return arrow_csv(source, text, typed, records, bad)

    monkeypatch.setattr(csv_module, "_arrow_csv", counted)
    table, ctx = load(Files(str(tmp_path / "*.csv"), schema=schema))
    assert parses == [
        ["a", "b", "c"],  # f1: a will not convert,
        ["b", "c"],  # nor b: everything as text
        [],
        ["c"],  # f2: a and b as text at once; c will not convert
        [],
        [],  # f3: all three as text at once
    ]
    assert table["a"].to_pylist() == [1, 3] * 3
    assert ctx.rows_quarantined == 3
    assert set(ctx.quarantined_rows().column("kind").to_pylist()) == {"type"}


def parquet(path, **columns):
    pq.write_table(pa.table(columns), path)


def test_safe_parquet_widenings_are_not_drift_and_real_drift_names_both_types(tmp_path):
    money = pa.array([decimal.Decimal("1.25"), decimal.Decimal("-3.10")], pa.decimal128(10, 2))
    parquet(tmp_path / "a.parquet", id=pa.array([1, 2], pa.int32()), amount=money)
    parquet(
        tmp_path / "b.parquet",
        id=pa.array([3, 4], pa.int64()),
        amount=pa.array([decimal.Decimal("2.00"), decimal.Decimal("5.55")], pa.decimal128(12, 2)),
    )
    parquet(tmp_path / "c.parquet", id=pa.array([5], pa.int64()), amount=pa.array(["x"]))
    for declared in ("decimal128(12, 2)", "float64"):
        table, ctx = load(
            Files(str(tmp_path / "*.parquet"), schema={"id": "int64", "amount": declared})
        )
        assert table.num_rows == 4  # every clean row of the decimal files
        [drift] = ctx.files
        assert drift.kind == "schema_drift" and drift.key.endswith("c.parquet")
        assert f"is string in the file, the schema says {declared}" in drift.message
    assert table["amount"].to_pylist() == [1.25, -3.1, 2.0, 5.55]


def test_rules_are_checked_on_decimal_columns_in_both_read_paths(tmp_path):
    money = pa.array([decimal.Decimal(v) for v in ("1.25", "-3.10", "7.00")], pa.decimal128(12, 2))
    parquet(tmp_path / "a.parquet", amount=money)
    source = Files(
        str(tmp_path / "a.parquet"), schema={"amount": {"type": "decimal128(12, 2)", "min": 0}}
    )
    table, ctx = load(source)
    assert table.num_rows == 2 and ctx.rows_quarantined == 1
    pipeline = Pipeline(source, ParquetSink("o"), steps=[__import__("dbatch").Filter("TRUE")])
    assert pipeline.physical().scan  # decimals have an exact DuckDB form


# -- 3. one record per line ------------------------------------------------------------------


def test_an_unclosed_quote_is_one_bad_row_and_the_lines_after_it_are_read(tmp_path):
    (tmp_path / "q.csv").write_bytes(b'id,memo\n1,ok\n2,"open quote\n3,fine\n4,also fine\n')
    table, ctx = load(Files(str(tmp_path / "q.csv"), schema={"id": "int64", "memo": "string"}))
    assert table.to_pydict() == {"id": [1, 3, 4], "memo": ["ok", "fine", "also fine"]}
    [bad] = ctx.quarantined_rows().to_pylist()
    assert (bad["kind"], bad["line"], bad["raw"]) == ("unclosed_quote", 3, '2,"open quote')
    assert ctx.rows_in == 4 and balanced(ctx, table)


def test_line_numbers_hold_with_blank_lines_crlf_bom_and_no_final_newline(tmp_path):
    data = (
        b'\xef\xbb\xbfid,memo\r\n1,"a,b"\r\n\r\n2,"say ""hi"""\r\n3,x,y\r\n4,O"Brien\r\n5\r\n6,last'
    )
    (tmp_path / "a.csv").write_bytes(data)
    (tmp_path / "b.csv.gz").write_bytes(gzip.compress(data))
    for name in ("a.csv", "b.csv.gz"):
        table, ctx = load(Files(str(tmp_path / name), schema={"id": "int64", "memo": "string"}))
        assert table.to_pydict() == {
            "id": [1, 2, 4, 6],
            "memo": ["a,b", 'say "hi"', 'O"Brien', "last"],
        }
        bad = {r["line"]: (r["kind"], r["raw"]) for r in ctx.quarantined_rows().to_pylist()}
        assert bad == {5: ("field_count", "3,x,y"), 7: ("field_count", "5")}
        assert ctx.rows_in == 6 and balanced(ctx, table)


def test_multiline_fields_when_the_source_says_so(tmp_path):
    (tmp_path / "m.csv").write_bytes(b'id,memo\n1,"two\nlines"\n2,one\n')
    table, ctx = load(
        Files(str(tmp_path / "m.csv"), schema={"id": "int64", "memo": "string"}, multiline=True)
    )
    assert table["memo"].to_pylist() == ["two\nlines", "one"] and ctx.rows_quarantined == 0


def test_an_unclosed_quote_in_the_header_quarantines_the_file(tmp_path):
    (tmp_path / "h.csv").write_bytes(b'id,"memo\n1,a\n')
    table, ctx = load(Files(str(tmp_path / "h.csv"), schema={"id": "int64", "memo": "string"}))
    assert table.num_rows == 0 and [f.kind for f in ctx.files] == ["header"]


def test_json_lines_null_markers_and_types(tmp_path):
    rows = [{"id": 1, "v": "NA", "at": "2026-11-01T00:00:00Z"}, {"id": 2, "v": 2.5, "at": None}]
    (tmp_path / "j.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    table, ctx = load(
        Files(
            str(tmp_path / "j.jsonl"),
            schema={"id": "int64", "v": "float64", "at": "timestamp[us, tz=UTC]"},
        )
    )
    assert ctx.rows_quarantined == 0
    assert table["v"].to_pylist() == [None, 2.5]
    assert table["at"].to_pylist() == [datetime(2026, 11, 1, tzinfo=UTC), None]


# -- 4. globs, 5. time patterns -----------------------------------------------------------


def monthly(folder, months=(1, 2, 11)):
    folder.mkdir(parents=True, exist_ok=True)
    for m in months:
        (folder / f"flights-2013-{m:02d}.csv").write_text("id\n1\n")


@pytest.mark.parametrize(
    "pattern,expected",
    [
        ("flights-2013-0?.csv", ["01", "02"]),
        ("flights-2013-0[12].csv", ["01", "02"]),
        ("flights-2013-[!0]*.csv", ["11"]),
        ("**/flights-2013-11.csv", ["11"]),
    ],
)
def test_full_glob_syntax_locally_and_on_fsspec_urls(tmp_path, pattern, expected):
    import fsspec

    monthly(tmp_path / "landing")
    memory = fsspec.filesystem("memory")
    for name in ("flights-2013-01.csv", "flights-2013-02.csv", "flights-2013-11.csv"):
        memory.pipe(f"/globs/landing/{name}", b"id\n1\n")
    for root in (str(tmp_path / "landing"), "memory://globs/landing"):
        units = Files(f"{root}/{pattern}").list_units()
        assert [u.key[-6:-4] for u in units] == expected, (root, pattern)


def test_a_missing_file_from_python_names_where_it_was_looked_for(tmp_path, monkeypatch):
    from dbatch import SourceError

    monkeypatch.chdir(tmp_path)
    with pytest.raises(SourceError) as e:
        Files("landing/nothing.csv").list_units()
    assert str(tmp_path / "landing" / "nothing.csv") in str(e.value)
    assert "job file" not in str(e.value)
    with pytest.raises(JobSpecError, match="NUL byte"):
        Files("landing/a\x00.csv")


def test_year_month_and_year_patterns_give_one_window_per_month(tmp_path):
    from dbatch import ByWindow

    monthly(tmp_path / "l", months=range(1, 13))
    p = Pipeline(
        Files(str(tmp_path / "l" / "*.csv"), time_pattern=r"flights-(\d{4}-\d{2})"),
        ParquetSink("o"),
        batching=ByWindow("MS"),
    )
    assert len(p.plan()) == 12
    yearly = Files(str(tmp_path / "l" / "*.csv"), time_pattern=r"flights-(\d{4})-")
    assert {u.time for u in yearly.list_units()} == {datetime(2013, 1, 1, tzinfo=UTC).timestamp()}


@pytest.mark.parametrize(
    "pattern,message",
    [
        (r"(\d{4})-(\d{2})", "has 2 groups; it needs exactly one"),
        (r"\d{4}", "has 0 groups"),
        (r"([", "not a regular expression"),
    ],
)
def test_a_time_pattern_without_exactly_one_group_is_refused(pattern, message):
    with pytest.raises(JobSpecError, match=message):
        Files("x/*.csv", time_pattern=pattern)


def test_a_file_the_time_pattern_does_not_match_is_an_error_naming_it(tmp_path):
    monthly(tmp_path / "l")
    (tmp_path / "l" / "flights-latest.csv").write_text("id\n1\n")
    with pytest.raises(JobSpecError, match="does not match .*flights-latest.csv"):
        Files(str(tmp_path / "l" / "*.csv"), time_pattern=r"(\d{4}-\d{2})").list_units()
    (tmp_path / "l" / "flights-latest.csv").unlink()
    (tmp_path / "l" / "flights-2013-13.csv").write_text("id\n1\n")
    with pytest.raises(JobSpecError, match="found '2013-13' in .*which is not a date"):
        Files(str(tmp_path / "l" / "*.csv"), time_pattern=r"(\d{4}-\d{2})").list_units()


# -- 8. a batch over max_bad_fraction keeps its quarantine ------------------------------------


def test_the_default_refuses_a_batch_of_mostly_bad_rows_and_keeps_them(tmp_path, client):
    import dask

    from dbatch import config

    lines = ["id,amount"] + [f"{i},{'x' if i % 3 else i}" for i in range(300)]
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.csv").write_text("\n".join(lines) + "\n")
    (tmp_path / "in" / "b.csv").write_text("id,amount\n1,2.5\n2,3.5\n")
    with dask.config.set({"dbatch.bad-input.max-bad-fraction": 0.05}):
        assert config.get("bad-input.max-bad-fraction") == 0.05
        p = Pipeline(
            Files(str(tmp_path / "in" / "*.csv"), schema={"id": "int64", "amount": "float64"}),
            ParquetSink(str(tmp_path / "out")),
            batching=ByCount(1),
            workdir=str(tmp_path / "work"),
        )
        result = p.run(client=client)
    assert result.status == "failed" and result.failed == 1 and result.committed == 1
    [failed] = [b for b in result.batches if b["state"] == "failed"]
    assert failed["rows_in"] == 300 and failed["rows_quarantined"] == 200
    message = failed["error_message"]
    assert "200 of 300 rows are bad (66.7%)" in message
    assert "type, column 'amount' (200)" in message  # the top reasons, with counts
    kept = pq.read_table(failed["quarantine"])
    assert kept.num_rows == 200 and set(kept.column("kind").to_pylist()) == {"type"}
    assert failed["batch_id"] in result.message  # the summary names the failed batch's error
    assert "200 of 300 rows are bad" in result.message
