"""The JSON Schema of job files: derived from the loader's definitions, shipped, and true.

Every job file of the repository (the demo's, the ``dbatch init`` templates, the
tests' full job, the YAML blocks of README.md and docs/, any in the notebooks) validates; wrong files are refused
by the schema where the loader refuses them, at the same key.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from dbatch.cli import main
from dbatch.cli.templates import TEMPLATES
from dbatch.demo import JOB_YAML
from dbatch.errors import JobSpecError
from dbatch.jobschema import SCHEMA_FILE, job_schema, shipped_schema
from dbatch.options import Configurable, DeclaresJobSchema, options_schema
from dbatch.registry import entries
from dbatch.spec import TOP_KEYS, load_job, safe_load

jsonschema = pytest.importorskip("jsonschema")

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = job_schema(plugins=False)
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)
FRAGMENT = jsonschema.Draft202012Validator({k: v for k, v in SCHEMA.items() if k != "required"})


def as_json(data: Any) -> Any:
    """What an editor sees: YAML dates and times as the text they were written as."""
    return json.loads(json.dumps(data, default=str))


def errors(data: Any, validator=VALIDATOR) -> list[str]:
    found = sorted(validator.iter_errors(as_json(data)), key=lambda e: list(e.absolute_path))
    return [f"{'.'.join(map(str, e.absolute_path)) or '<top>'}: {e.message}" for e in found]


# -- the corpus: every job file and job-file fragment of the repository -----------------


def yaml_blocks(text: str) -> list[tuple[int, str]]:
    return [
        (text[: m.start()].count("\n") + 1, m.group(1))
        for m in re.finditer(r"```ya?ml\n(.*?)```", text, re.S)
    ]


def documents(block: str) -> list[Any]:
    """A block's mapping; a block showing two forms of one key (``bad_input:``) is two."""
    try:
        return [safe_load(block)]
    except JobSpecError:
        chunks = re.split(r"\n(?=\S)", block.strip())
        return [safe_load(chunk) for chunk in chunks]


def notebook_blocks(path: Path) -> list[tuple[int, str]]:
    """YAML blocks of a notebook's markdown cells and job files its code cells write."""
    out = []
    for i, cell in enumerate(json.loads(path.read_text())["cells"]):
        text = "".join(cell["source"])
        if cell["cell_type"] == "markdown":
            out += [(i, block) for _, block in yaml_blocks(text)]
        else:
            out += [(i, m.group(1)) for m in re.finditer(r'"""\n?(.*?\bsource:.*?)"""', text, re.S)]
    return out


def corpus() -> list[tuple[str, Any]]:
    found = [("dbatch/demo.py JOB_YAML", safe_load(JOB_YAML.format(batch_files=4)))]
    for name, template in sorted(TEMPLATES.items()):
        text = template.job_text(Path("job-folder"))
        found.append((f"dbatch init --template {name}", safe_load(text)))
    spec_tests = (ROOT / "tests" / "test_spec.py").read_text()
    full = re.search(r'FULL_JOB = """\\\n(.*?)"""', spec_tests, re.S)
    assert full, "tests/test_spec.py lost its FULL_JOB"
    found.append(("tests/test_spec.py FULL_JOB", safe_load(full.group(1).replace("\\\\", "\\"))))
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    pages += sorted((ROOT / "docs" / "how-to").glob("*.md"))
    for page in pages:
        for line, block in yaml_blocks(page.read_text()):
            for doc in documents(block):
                found.append((f"{page.relative_to(ROOT)}:{line}", doc))
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        for cell, block in notebook_blocks(nb):
            for doc in documents(block):
                found.append((f"{nb.relative_to(ROOT)} cell {cell}", doc))
    return found


CORPUS = corpus()
FILES_OPTIONS = set(
    options_schema(entries("source")["files"].load("source", "files", key="", file=None))[
        "properties"
    ]
)


def as_job_fragment(doc: Any) -> tuple[Any, Any]:
    """A doc block as a (fragment of a) job file, and the validator it is checked with."""
    if isinstance(doc, list):  # a list of steps
        return {"steps": doc}, FRAGMENT
    assert isinstance(doc, dict), f"a YAML block that is no job-file part: {doc!r}"
    if set(doc) <= TOP_KEYS:
        return doc, VALIDATOR if {"source", "sink"} <= set(doc) else FRAGMENT
    assert set(doc) <= FILES_OPTIONS, f"a YAML block that is no job-file part: {sorted(doc)}"
    return {"source": {"type": "files", "path": "in/*.csv", **doc}}, FRAGMENT


@pytest.mark.parametrize("where,doc", CORPUS, ids=[w for w, _ in CORPUS])
def test_every_job_file_of_the_repository_validates(where, doc):
    if isinstance(doc, dict) and list(doc) == ["dbatch"]:
        pytest.skip("a dbatch.yaml configuration block, not a job file")
    if isinstance(doc, dict) and "scrape_configs" in doc:
        pytest.skip("a Prometheus configuration block, not a job file")
    data, validator = as_job_fragment(doc)
    assert errors(data, validator) == [], where


def test_the_corpus_holds_the_documented_full_jobs():
    full = [w for w, d in CORPUS if isinstance(d, dict) and {"source", "sink"} <= set(d)]
    assert any(w.startswith("README.md") for w in full)
    assert {f"dbatch init --template {name}" for name in TEMPLATES} <= set(full)
    assert any(w.startswith("docs/job-files.md") for w in full)
    assert any(w.startswith("docs/how-to/") for w in full)
    assert len(CORPUS) >= 25


# -- the schema: up to date, valid, printed ----------------------------------------------


def test_the_shipped_schema_is_up_to_date():
    assert shipped_schema() == SCHEMA, (
        f"{SCHEMA_FILE.name} is out of date: run `dbatch schema > dbatch/job.schema.json`"
    )


def test_the_schema_is_a_valid_draft_2020_12_schema():
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    assert set(SCHEMA["properties"]) == TOP_KEYS


def test_dbatch_schema_prints_the_schema_with_installed_plugins(monkeypatch):
    from dbatch import registry

    monkeypatch.setitem(registry.STEPS, "decode", registry.Entry("json:JSONDecoder"))
    result = CliRunner().invoke(main, ["schema"])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.output)
    assert printed["properties"]["steps"]["items"]["properties"]["decode"] == {
        "$ref": "#/$defs/step.decode"
    }
    assert "strict" in printed["$defs"]["step.decode"]["properties"]
    assert "step.decode" not in job_schema(plugins=False)["$defs"]
    printed["properties"]["steps"]["items"]["properties"].pop("decode")
    printed["$defs"].pop("step.decode")
    assert printed == SCHEMA


def test_built_in_shorthands_declare_their_schema():
    """A from_config that declared nothing would leave its step open to any value."""
    for name, entry in entries("step").items():
        if not entry.target.startswith("dbatch."):
            continue
        cls = entry.load("step", name, key="", file=None)
        if isinstance(cls, Configurable):
            assert isinstance(cls, DeclaresJobSchema), f"step {name!r} declares no job_schema"


def test_descriptions_come_from_the_docstrings():
    files = SCHEMA["$defs"]["source.files"]
    assert files["description"].startswith("Files matched by a glob pattern")
    assert "fsspec URL" in files["properties"]["path"]["description"]
    assert files["properties"]["delimiter"]["default"] == ","
    assert files["required"] == ["path"]


# -- refused where the loader refuses, at the same key --------------------------------------

GOOD = {"source": {"type": "files", "path": "in/*.csv"}, "sink": {"type": "parquet", "path": "out"}}


def load(data: dict[str, Any], folder: Path):
    """The loader's verdict on ``data`` written as a job file (JSON is YAML)."""
    path = folder / "job.yaml"
    path.write_text(json.dumps(data))
    return load_job(path)


def job(**changes: Any) -> dict[str, Any]:
    out = json.loads(json.dumps(GOOD))
    out.update(changes)
    return out


NEGATIVE = [
    ("unknown top-level key", job(sourc={}), "", "sourc"),
    ("missing sink", {"source": GOOD["source"]}, "", "'sink'"),
    ("unknown source type", job(source={"type": "fils", "path": "x"}), "source.type", "fils"),
    ("misspelled source option", job(source={"type": "files", "pth": "x"}), "source", "pth"),
    (
        "wrong option type",
        job(source={"type": "files", "path": "x", "multiline": "yes"}),
        "source.multiline",
        "boolean",
    ),
    ("unknown step", job(steps=[{"filtr": "a > 0"}]), "steps.0", "filtr"),
    ("step with two keys", job(steps=[{"filter": "a > 0", "sql": "SELECT 1"}]), "steps.0", ""),
    ("filter not text", job(steps=[{"filter": 3}]), "steps.0.filter", ""),
    (
        "map option misspelled",
        job(steps=[{"map": {"function": "m:f", "onn": "arrow"}}]),
        "steps.0.map",
        "",
    ),
    ("derive to a number", job(steps=[{"derive": {"x": 1}}]), "steps.0.derive.x", ""),
    ("two batchings", job(batching={"count": 2, "size": "1MiB"}), "batching", ""),
    ("count not positive", job(batching={"count": 0}), "batching.count", "minimum"),
    ("unknown batching", job(batching={"every": 3}), "batching", "every"),
    ("bad_input mode", job(bad_input={"mode": "ignore"}), "bad_input", ""),
    ("bad fraction", job(bad_input={"max_bad_fraction": 2}), "bad_input", ""),
    ("cluster workers", job(cluster={"workers": 0}), "cluster.workers", "minimum"),
    ("cluster typo", job(cluster={"worker": 2}), "cluster", "worker"),
    ("schedule of two forms", job(schedule={"cron": "0 2 * * *", "every": "1h"}), "schedule", ""),
    ("arrival typo", job(schedule={"arrival": {"cont": 3}}), "schedule", ""),
    ("alert status", job(alerts=[{"on": ["broken"], "command": "true"}]), "alerts.0.on", ""),
    ("alert without target", job(alerts=[{"on": "failed"}]), "alerts.0", ""),
    ("name with a slash", job(name="a/b"), "name", "does not match"),
    ("aggregate typo", job(aggregate={"by": ["a"], "metric": {"n": "count(*)"}}), "aggregate", ""),
    (
        "column rule typo",
        job(
            source={"type": "files", "path": "x", "schema": {"a": {"type": "int64", "uniq": True}}}
        ),
        "source.schema.a",
        "",
    ),
]


@pytest.mark.parametrize("what,data,path,fragment", NEGATIVE, ids=[n[0] for n in NEGATIVE])
def test_the_schema_and_the_loader_refuse_the_same_files(what, data, path, fragment, tmp_path):
    found = errors(data)
    assert found, f"the schema accepts a file with a {what}"
    assert any(e.startswith(f"{path or '<top>'}") and fragment in e for e in found), found
    with pytest.raises(JobSpecError, match=re.escape(path.split(".")[0] or fragment)):
        load(data, tmp_path)


POSITIVE = [
    job(),
    job(batching={"size": "64MiB"}, bad_input="drop", cluster={"scheduler": "tls://h:8786"}),
    job(batching={"threshold": {"bytes": "1GiB"}}, schedule={"arrival": {"count": 3}}),
    job(steps=[{"filter": {"where": "a > 0"}}, {"derive": {"b": "a * 2"}}, {"sql": "SELECT 1"}]),
    job(schedule={"cron": "0 2 * * *", "tz": "Europe/Berlin"}, name="nightly.v2"),
    job(alerts=[{"on": "failed", "webhook": "https://hooks.example.org/x", "retries": 1}]),
    job(
        source={
            "type": "files",
            "path": ["a.csv", "b.csv"],
            "schema": {"a": "int64", "b": {"type": "string", "not_null": True}},
        }
    ),
]


@pytest.mark.parametrize("data", POSITIVE)
def test_the_schema_and_the_loader_accept_the_same_files(data, tmp_path):
    assert errors(data) == []
    load(data, tmp_path)


@pytest.mark.parametrize("kind", ["source", "sink", "step"])
def test_every_type_refuses_an_unknown_option_in_both(kind, tmp_path):
    """For each registered type: an unknown option, and a missing required one."""
    for name, entry in entries(kind).items():
        if not entry.target.startswith("dbatch.") or name == "derive":  # derive: any column
            continue
        options_of = SCHEMA["$defs"][f"{kind}.{name}"]
        mapping = next(
            (s for s in options_of.get("anyOf", [options_of]) if s.get("type") == "object"), None
        )
        assert mapping is not None, f"{kind} {name!r} has no mapping form"
        required = {k: _example(mapping["properties"][k]) for k in mapping.get("required", [])}
        value = {**required, "no_such_option": 1}
        data = _placed(kind, name, value)
        assert errors(data), f"the schema accepts an unknown option of {kind} {name!r}"
        with pytest.raises(JobSpecError, match="no_such_option"):
            load(data, tmp_path)


def _example(schema: dict[str, Any]) -> Any:
    kinds = schema.get("type") or [s.get("type") for s in schema.get("anyOf", [{}])][0]
    kind = kinds[0] if isinstance(kinds, list) else kinds
    return {"string": "m:f", "integer": 1, "number": 1.0, "array": ["a"], "object": {}}.get(
        kind, "x"
    )


def _placed(kind: str, name: str, value: dict[str, Any]) -> dict[str, Any]:
    if kind == "step":
        return job(steps=[{name: value}])
    return job(**{kind: {"type": name, **value}})
