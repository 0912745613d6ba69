"""YAML job files: a full job round trip, and messages that name the key, the file and the fix."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

from dbatch import (
    Aggregate,
    ByCount,
    BySize,
    ByThreshold,
    ByWindow,
    CsvSink,
    Derive,
    Enrich,
    Files,
    Filter,
    JobSpecError,
    Map,
    ParquetSink,
    Pipeline,
    SourceError,
    Sql,
)
from dbatch.registry import STEPS, Entry, register
from dbatch.spec import load_job, safe_load

FULL_JOB = """\
name: spec-roundtrip
description: every top-level key, with YAML 1.2 booleans
source:
  type: files
  path: landing/*.csv
  format: csv
  time_pattern: '(\\d{4}-\\d{2}-\\d{2})'
  schema:
    txn_id: {type: string, not_null: true, unique: true}
    day: date
    account: string
    currency: {type: string, allowed: [USD, EUR]}
    amount: {type: float64, min: 0}
    status: string
batching:
  count: 2
steps:
  - filter: "status = 'settled'"
  - enrich:
      lookup: fx.csv
      on: [currency]
      columns: [rate]
      unmatched: quarantine
  - derive: {amount_usd: "amount * rate"}
  - map: {function: "cleaning:tag_large", on: pandas}
  - sql: "SELECT * FROM batch WHERE amount_usd < 1e6"
aggregate:
  by: [account, currency]
  metrics: {total_usd: sum(amount_usd), n: count(*), largest: max(amount_usd)}
sink:
  type: parquet
  path: out/totals
bad_input:
  mode: quarantine
  max_bad_fraction: 0.5
ledger: state/ledger.sqlite
workdir: work
cluster: {workers: 2}
"""

CLEANING = '''\
def tag_large(df):
    """Mark big transactions; drop nothing."""
    return df.assign(large=df["amount_usd"] > 100)


def explode(df):
    raise ValueError("this step always fails")
'''


def write_landing(root: Path, days: int = 4) -> None:
    """One CSV file per day, two accounts, two currencies, one bad row in the last file."""
    landing = root / "landing"
    landing.mkdir(parents=True, exist_ok=True)
    for d in range(days):
        day = f"2026-03-{d + 1:02d}"
        lines = ["txn_id,day,account,currency,amount,status"]
        for i in range(10):
            status = "settled" if i % 4 else "pending"
            lines.append(
                f"T{d}-{i},{day},A{i % 2},{'USD' if i % 3 else 'EUR'},{10 * i + d},{status}"
            )
        if d == days - 1:
            lines.append(f"T{d}-bad,{day},A0,USD,-5,settled")  # breaks amount >= 0
        (landing / f"tx-{day}.csv").write_text("\n".join(lines) + "\n")
    (root / "fx.csv").write_text("currency,rate\nUSD,1.0\nEUR,1.1\n")


@pytest.fixture
def job_dir(tmp_path: Path):
    root = tmp_path / "job"
    write_landing(root)
    (root / "cleaning.py").write_text(CLEANING)
    (root / "job.yaml").write_text(FULL_JOB)
    yield root
    # Job files put their folder on sys.path; forget this test's modules and folder.
    for name in ("cleaning", "shout"):
        sys.modules.pop(name, None)
    while str(root.resolve()) in sys.path:
        sys.path.remove(str(root.resolve()))


def write_job(root: Path, text: str, name: str = "job.yaml") -> Path:
    path = root / name
    path.write_text(textwrap.dedent(text))
    return path


MINIMAL = """\
source: {type: files, path: landing/*.csv}
sink: {type: parquet, path: out/result}
"""


# -- the round trip -------------------------------------------------------------------


def test_full_job_builds_the_same_pipeline_as_python(job_dir: Path) -> None:
    job = load_job(job_dir / "job.yaml")
    p = job.pipeline
    assert p.name == "spec-roundtrip"
    assert isinstance(p.source, Files) and p.source.format == "csv"
    assert p.source.path == str(job_dir / "landing" / "*.csv")  # relative to the job file
    assert p.sink == ParquetSink(str(job_dir / "out" / "totals"))
    assert p.batching == ByCount(2)
    assert [type(s).__name__ for s in p.steps] == ["Filter", "Enrich", "Derive", "Map", "Sql"]
    assert p.steps[1].on == ("currency",)  # `on:` stayed a key, not True
    assert p.bad_input == "quarantine" and p.max_bad_fraction == 0.5
    assert p.workdir == str(job_dir / "work")
    assert p.ledger == f"sqlite:///{job_dir / 'state' / 'ledger.sqlite'}"
    assert job.cluster == {"workers": 2}

    import cleaning  # importable: the job file's folder is on sys.path

    by_hand = Pipeline(
        source=Files(
            str(job_dir / "landing" / "*.csv"),
            format="csv",
            time_pattern=r"(\d{4}-\d{2}-\d{2})",
            schema={
                "txn_id": {"type": "string", "not_null": True, "unique": True},
                "day": "date",
                "account": "string",
                "currency": {"type": "string", "allowed": ["USD", "EUR"]},
                "amount": {"type": "float64", "min": 0},
                "status": "string",
            },
        ),
        steps=[
            Filter("status = 'settled'"),
            Enrich(
                str(job_dir / "fx.csv"), on=["currency"], columns=["rate"], unmatched="quarantine"
            ),
            Derive({"amount_usd": "amount * rate"}),
            Map(cleaning.tag_large, on="pandas"),
            Sql("SELECT * FROM batch WHERE amount_usd < 1e6"),
        ],
        aggregate=Aggregate(
            by=["account", "currency"],
            metrics={"total_usd": "sum(amount_usd)", "n": "count(*)", "largest": "max(amount_usd)"},
        ),
        sink=ParquetSink(str(job_dir / "out" / "totals")),
        batching=ByCount(2),
        name="spec-roundtrip",
    )
    assert p.definition_token == by_hand.definition_token
    assert [(b.id, b.fingerprint) for b in job.plan()] == [
        (b.id, b.fingerprint) for b in by_hand.plan()
    ]


def test_full_job_runs_and_its_output_matches_pandas(job_dir: Path, client) -> None:
    job = load_job(job_dir / "job.yaml")
    preview = job.pipeline.preview()
    assert "large" in preview.columns  # the map step from the module next to the job file ran
    result = job.pipeline.run(client=client)
    assert result.status == "succeeded", result
    assert result.batches_frame()["state"].tolist() == ["committed", "committed"]
    assert result.rows_quarantined == 1  # the negative amount
    got = pd.read_parquet(job_dir / "out" / "totals").sort_values(["account", "currency"])

    raw = pd.concat(pd.read_csv(f) for f in sorted((job_dir / "landing").glob("*.csv")))
    raw = raw[(raw.status == "settled") & (raw.amount >= 0)]
    raw["amount_usd"] = raw.amount * raw.currency.map({"USD": 1.0, "EUR": 1.1})
    want = (
        raw.groupby(["account", "currency"])
        .agg(total_usd=("amount_usd", "sum"), n=("amount_usd", "size"))
        .reset_index()
    )
    assert got["total_usd"].tolist() == pytest.approx(want["total_usd"].tolist())
    assert got["n"].tolist() == want["n"].tolist()
    assert (job_dir / "state" / "ledger.sqlite").exists()
    assert (job_dir / "work" / "spec-roundtrip" / "batches").is_dir()


def test_yaml_12_booleans_keep_on_as_a_key() -> None:
    loaded = safe_load("on: [day]\nyes: no\noff: true\nflag: false\n")
    assert loaded == {"on": ["day"], "yes": "no", "off": True, "flag": False}


def test_relative_paths_follow_the_job_file_not_the_cwd(job_dir: Path, tmp_path: Path, monkeypatch):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    job = load_job(Path("..") / "job" / "job.yaml")
    assert Path(job.pipeline.source.path).parent.resolve() == (job_dir / "landing").resolve()
    assert Path(job.pipeline.sink.path).resolve() == (job_dir / "out" / "totals").resolve()
    assert len(job.plan()) == 2
    # Without a workdir key the work area sits next to the job file too.
    bare = load_job(write_job(job_dir, MINIMAL, "bare.yaml")).pipeline
    assert bare.name == "bare"  # the file's stem when the job has no name
    assert bare.work_area().resolve() == (job_dir / ".dbatch" / "bare").resolve()


@pytest.mark.parametrize(
    ("batching", "expected"),
    [
        ("{size: 1MiB}", BySize(1024**2)),
        ("{count: 3}", ByCount(3)),
        ("{window: 1D}", ByWindow("1D")),
        ("{window: MS}", ByWindow("MS")),
        ("{threshold: {count: 2}}", ByThreshold(count=2)),
        ("{threshold: {bytes: 1KiB}}", ByThreshold(bytes=1024)),
    ],
)
def test_batching_forms(job_dir: Path, batching: str, expected) -> None:
    path = write_job(job_dir, MINIMAL + f"batching: {batching}\n", "b.yaml")
    assert load_job(path).pipeline.batching == expected


def test_map_step_by_import_path_next_to_the_job_file_runs_on_workers(job_dir: Path, client):
    (job_dir / "shout.py").write_text(
        "def upper_accounts(table):\n"
        "    import pyarrow.compute as pc\n"
        "    return table.set_column(table.schema.get_field_index('account'), 'account',"
        " pc.utf8_lower(table['account']))\n"
    )
    path = write_job(
        job_dir,
        MINIMAL + "steps:\n  - map: {function: 'shout:upper_accounts', on: arrow}\n",
        "shout.yaml",
    )
    result = load_job(path).pipeline.run(client=client)
    assert result.ok, result
    assert set(pd.read_parquet(job_dir / "out" / "result")["account"]) == {"a0", "a1"}


def test_csv_sink_and_string_forms(job_dir: Path) -> None:
    path = write_job(
        job_dir,
        """\
        source: {type: files, path: landing/*.csv}
        sink: {type: csv, path: export}
        bad_input: drop
        steps:
          - map: cleaning:tag_large
        """,
        "csv.yaml",
    )
    p = load_job(path).pipeline
    assert p.sink == CsvSink(str(job_dir / "export")) and p.bad_input == "drop"


# -- bad job files ------------------------------------------------------------------------


def refused(root: Path, text: str, *parts: str, error=JobSpecError) -> str:
    """Load (and plan) ``text``; the error names the file and every one of ``parts``."""
    path = write_job(root, text, "bad.yaml")
    with pytest.raises(error) as info:
        load_job(path).plan()
    message = str(info.value)
    assert str(path) in message, message
    for part in parts:
        assert part in message, f"{part!r} not in {message!r}"
    return message


def test_unknown_top_level_key(job_dir):
    refused(
        job_dir,
        MINIMAL + "sourse_options: 1\n",
        "unknown top-level key",
        "'sourse_options'",
        "allowed",
        "'source'",
    )


def test_unknown_key_in_source_suggests_the_right_one(job_dir):
    refused(
        job_dir,
        "source: {type: files, path: landing/*.csv, pattern: x}\nsink: {type: parquet, path: o}\n",
        "key 'source'",
        "unknown key(s) ['pattern']",
        "allowed",
        "'path'",
    )
    refused(
        job_dir,
        "source: {type: files, pth: landing/*.csv}\nsink: {type: parquet, path: o}\n",
        "key 'source'",
        "'pth'",
        "did you mean 'path'",
    )


def test_unknown_key_in_sink(job_dir):
    refused(
        job_dir,
        "source: {type: files, path: landing/*.csv}\nsink: {type: parquet, path: o, compresion: zstd}\n",
        "key 'sink'",
        "'compresion'",
        "did you mean 'compression'",
    )


def test_unknown_key_in_steps(job_dir):
    refused(
        job_dir,
        MINIMAL
        + "steps:\n  - filter: \"status = 'settled'\"\n  - enrich: {lookup: fx.csv, on: [currency], colums: [rate]}\n",
        "key 'steps[1].enrich'",
        "'colums'",
        "did you mean 'columns'",
    )
    refused(
        job_dir,
        MINIMAL + "steps:\n  - map: {function: 'cleaning:tag_large', engine: pandas}\n",
        "key 'steps[0].map'",
        "'engine'",
        "allowed: ['function', 'on']",
    )


def test_unknown_keys_in_bad_input_and_cluster(job_dir):
    refused(
        job_dir,
        MINIMAL + "bad_input: {mode: drop, max_bad: 0.1}\n",
        "key 'bad_input'",
        "'max_bad'",
        "'max_bad_fraction'",
    )
    refused(
        job_dir,
        MINIMAL + "cluster: {schedular: tcp://127.0.0.1:8786}\n",
        "key 'cluster'",
        "'schedular'",
        "'scheduler'",
    )


@pytest.mark.parametrize(
    ("extra", "key", "expected"),
    [
        ('batching: {count: "four"}\n', "batching.count", "expected a whole number"),
        ("batching: {count: 0}\n", "batching.count", "positive whole number"),
        ("batching: {size: lots}\n", "batching.size", "expected a size such as 64MiB"),
        ("batching: {window: fortnightly}\n", "batching.window", "pandas frequency"),
        ("batching: {threshold: 5}\n", "batching.threshold", "{count: N} or {bytes: SIZE}"),
        ("batching: {count: 2, size: 1MiB}\n", "batching", "give one of"),
        (
            'bad_input: {max_bad_fraction: "x"}\n',
            "bad_input.max_bad_fraction",
            "a number between 0 and 1",
        ),
        (
            "bad_input: {max_bad_fraction: 1.5}\n",
            "bad_input.max_bad_fraction",
            "a number between 0 and 1",
        ),
        ("bad_input: {mode: ignore}\n", "bad_input.mode", "quarantine, drop, fail_fast"),
        ("name: 42\n", "name", "expected a string"),
        ("name: nightly job\n", "name", "letters, digits"),
        ("ledger: 5\n", "ledger", "SQLAlchemy URL"),
        ("steps: {filter: x}\n", "steps", "expected a list"),
        ("steps:\n  - filter: 5\n", "steps[0].filter", "SQL condition as a string"),
        ("steps:\n  - derive: {day: 5}\n", "steps[0].derive", "column -> SQL expression"),
        ("steps:\n  - {filter: a, derive: {b: c}}\n", "steps[0]", "one key"),
        (
            "steps:\n  - map: {function: 'cleaning:tag_large', on: polars}\n",
            "steps[0].map.on",
            "pandas or arrow",
        ),
        (
            "steps:\n  - enrich: {lookup: fx.csv, on: currency, unmatched: maybe}\n",
            "steps[0].enrich.unmatched",
            "keep",
        ),
        (
            "steps:\n  - enrich: {lookup: fx.csv, on: [currency], columns: rate}\n",
            "steps[0].enrich.columns",
            "expected a list",
        ),
        (
            "aggregate: {by: [account], metrics: {m: median(amount)}}\n",
            "aggregate.metrics.m",
            "sum(col)",
        ),
        ("aggregate: {metrics: {n: count(*)}}\n", "aggregate", "missing required key(s) ['by']"),
        ("cluster: {workers: many}\n", "cluster.workers", "positive whole number"),
    ],
)
def test_wrong_types_name_the_key_and_what_is_expected(job_dir, extra, key, expected):
    refused(job_dir, MINIMAL + extra, f"key '{key}'", expected)


def test_wrong_types_inside_source_and_sink(job_dir):
    refused(
        job_dir,
        "source: {type: files, path: landing/*.csv, delimiter: 5}\nsink: {type: parquet, path: o}\n",
        "key 'source.delimiter'",
        "expected a string",
    )
    refused(
        job_dir,
        "source: {type: files, path: landing/*.csv, schema: {amount: {type: money}}}\n"
        "sink: {type: parquet, path: o}\n",
        "key 'source.schema.amount",
        "unknown column type 'money'",
        "float64",
    )
    refused(
        job_dir,
        "source: {type: files, path: landing/*.csv}\nsink: {type: parquet, path: o, partition_by: 3}\n",
        "key 'sink.partition_by'",
        "expected",
    )


def test_missing_required_sections(job_dir):
    refused(
        job_dir,
        "source: {type: files, path: landing/*.csv}\n",
        "missing required key 'sink'",
        "type: parquet",
    )
    refused(
        job_dir, "sink: {type: parquet, path: o}\n", "missing required key 'source'", "type: files"
    )
    refused(
        job_dir,
        "source: files\nsink: {type: parquet, path: o}\n",
        "key 'source'",
        "mapping with a 'type'",
    )
    refused(job_dir, "- source\n- sink\n", "expected a mapping", "got list")


def test_missing_input_file(job_dir):
    refused(
        job_dir,
        MINIMAL.replace("landing/*.csv", "landing/tx-1999-01-01.csv"),
        "key 'source.path'",
        "tx-1999-01-01.csv",
        "does not exist",
        error=SourceError,
    )


def test_glob_that_matches_nothing_is_an_empty_input(job_dir):
    refused(
        job_dir,
        MINIMAL.replace("landing/*.csv", "landing/*.parquet"),
        "key 'source.path'",
        "no input files match",
        "*.parquet",
        error=SourceError,
    )


def test_missing_lookup_file(job_dir):
    refused(
        job_dir,
        MINIMAL + "steps:\n  - enrich: {lookup: rates.csv, on: [currency]}\n",
        "key 'steps[0].enrich.lookup'",
        "rates.csv",
        "does not exist",
    )


def test_import_path_that_does_not_resolve(job_dir):
    refused(
        job_dir,
        MINIMAL + "steps:\n  - map: {function: 'no_such_module:clean'}\n",
        "key 'steps[0].map.function'",
        "cannot import module 'no_such_module'",
        "PYTHONPATH",
    )
    refused(
        job_dir,
        MINIMAL + "steps:\n  - map: {function: 'cleaning:no_such_function'}\n",
        "key 'steps[0].map.function'",
        "module 'cleaning' has no attribute 'no_such_function'",
    )
    refused(
        job_dir,
        MINIMAL + "steps:\n  - map: {function: 'cleaning.tag_large'}\n",
        "key 'steps[0].map.function'",
        "package.module:function",
    )
    refused(
        job_dir,
        MINIMAL + "steps:\n  - map: {function: 'textwrap:__doc__'}\n",
        "key 'steps[0].map.function'",
        "not a function",
    )


@pytest.mark.parametrize(
    ("text", "key", "known"),
    [
        (MINIMAL.replace("type: files", "type: ftp"), "source.type", "'files'"),
        (MINIMAL.replace("type: parquet", "type: excel"), "sink.type", "'parquet'"),
        (MINIMAL + "steps:\n  - filtr: 'a > 1'\n", "steps[0].filtr", "'filter'"),
    ],
)
def test_unknown_source_sink_and_step_types(job_dir, text, key, known):
    refused(job_dir, text, f"key '{key}'", "unknown", "known:", known)


def test_unknown_types_suggest_the_near_miss(job_dir):
    refused(
        job_dir,
        MINIMAL + "steps:\n  - filtr: 'a > 1'\n",
        "key 'steps[0].filtr'",
        "unknown step type 'filtr' (did you mean 'filter'?)",
    )
    refused(
        job_dir,
        MINIMAL.replace("type: parquet", "type: parqet"),
        "key 'sink.type'",
        "(did you mean 'parquet'?)",
    )
    message = refused(job_dir, MINIMAL + "steps:\n  - zzz: 1\n", "unknown step type 'zzz'")
    assert "did you mean" not in message


def test_a_type_whose_module_is_missing_names_the_pip_command(job_dir, monkeypatch):
    monkeypatch.setitem(STEPS, "fancy", Entry("no_such_dbatch_plugin.steps:Fancy"))
    monkeypatch.setitem(STEPS, "scored", Entry("placeholder:Scored"))  # removed after the test
    register("step", "scored", "no_such_dbatch_plugin.models:Scored", extra="ml")
    assert STEPS["scored"] == Entry("no_such_dbatch_plugin.models:Scored", extra="ml")
    refused(
        job_dir,
        MINIMAL + "steps:\n  - fancy: {}\n",
        "key 'steps[0].fancy'",
        "step type 'fancy' needs the module 'no_such_dbatch_plugin'",
        "install it with: pip install no_such_dbatch_plugin",
    )
    refused(
        job_dir,
        MINIMAL + "steps:\n  - scored: {}\n",
        "key 'steps[0].scored'",
        "needs the module 'no_such_dbatch_plugin'",
        "install it with: pip install 'dbatch[ml]'",
    )
    assert STEPS["predict"].install_command() == "pip install 'dbatch[ml]'"
    assert Entry("a.b:C", packages=("torch",)).install_command() == "pip install torch"


def test_invalid_yaml_names_the_line(job_dir):
    message = refused(job_dir, MINIMAL + "steps: [\n  - filter: x\n", "not valid YAML", "line ")
    assert "indentation" in message
    refused(
        job_dir,
        MINIMAL + "source: {type: files, path: x}\n",
        "key 'source'",
        "given twice",
        "lines 1 and 3",
    )


def test_unsafe_yaml_tags_are_refused(job_dir):
    message = refused(
        job_dir, MINIMAL + "name: !!python/object/apply:os.getcwd []\n", "not valid YAML"
    )
    assert "python/object" in message


def test_job_file_that_does_not_exist(tmp_path):
    with pytest.raises(JobSpecError, match="does not exist"):
        load_job(tmp_path / "nope.yaml")


def test_a_leading_tilde_is_the_home_folder(job_dir, tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    path = write_job(
        job_dir,
        """\
        source: {type: files, path: ~/landing/*.csv}
        sink: {type: parquet, path: ~/out/result}
        ledger: ~/state/ledger.sqlite
        workdir: ~/work
        alerts: [{on: [failed], command: "~/bin/notify --loud"}]
        """,
        "home.yaml",
    )
    job = load_job(path)
    assert job.pipeline.sink.path == str(home / "out" / "result")
    assert job.pipeline.ledger_url() == f"sqlite:///{home / 'state' / 'ledger.sqlite'}"
    assert job.pipeline.work_area() == home / "work" / "home"
    assert job.alerts[0].command == (str(home / "bin" / "notify"), "--loud")
    # From Python too: a sink path or work area given with ~ lands in the home folder.
    assert ParquetSink("~/out").path == str(home / "out")
    in_home = Pipeline(Files("x.csv"), ParquetSink("o"), workdir="~/w")
    assert in_home.work_area() == home / "w" / "job"


def test_schema_rules_take_booleans_and_lists_not_lookalike_strings(job_dir):
    """YAML 1.2 keeps `no` a string: `not_null: no` used to switch the rule on."""
    schema = "source:\n  type: files\n  path: landing/*.csv\n  schema:\n    txn_id: {}\n"
    sink = "sink: {type: parquet, path: out/result}\n"
    for rule, expected in (
        ("{type: string, not_null: no}", "expected true or false, got 'no'"),
        ("{type: string, unique: yes}", "expected true or false, got 'yes'"),
        ("{type: string, allowed: USD}", "expected a list of values"),
    ):
        refused(job_dir, schema.replace("{}", rule) + sink, "source.schema.txn_id", expected)
