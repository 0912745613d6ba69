"""The JSON Schema of job files, derived from the definitions the loader reads them with.

Nothing here describes an option a second time: a source's or sink's options are
its signature (``options.options_schema``), a step's or schedule's YAML
shorthand is declared next to the ``from_config`` that parses it
(``job_schema``), and the top-level keys are ``spec.TOP_KEYS``. The loader stays
the full check (it also opens files, imports functions and compiles SQL); the
schema lets an editor complete and check a job file as it is typed.

Examples
--------
>>> schema = job_schema()
>>> schema["required"]
['source', 'sink']
>>> "files" in schema["properties"]["source"]["properties"]["type"]["enum"]
True
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .batching import batching_schema
from .cluster import cluster_schema
from .errors import JobSpecError
from .monitor.alerts import Alert
from .options import DeclaresJobSchema, options_schema, schema_of, summary
from .registry import Entry, entries
from .spec import BAD_INPUT_SCHEMA, NAME_SCHEMA, TOP_KEYS
from .steps.aggregate import Aggregate
from .triggers import schedule_schema

__all__ = ["DRAFT", "SCHEMA_FILE", "job_schema", "schema_text", "shipped_schema"]

#: The JSON Schema dialect of the schema.
DRAFT = "https://json-schema.org/draft/2020-12/schema"
#: The schema of dbatch's own components, shipped in the package for editors and CI.
SCHEMA_FILE = Path(__file__).with_name("job.schema.json")

_KINDS = {"source": "Where the units come from", "sink": "Where the output goes"}


def job_schema(*, plugins: bool = True) -> dict[str, Any]:
    """The JSON Schema of a job file.

    Parameters
    ----------
    plugins
        Include the types registered by other packages (entry points, ``register``);
        without them, only dbatch's own: the schema shipped as ``job.schema.json``.

    Returns
    -------
    dict
        A JSON Schema (draft 2020-12) object.
    """
    defs: dict[str, Any] = {}
    builders: dict[str, Callable[[], dict[str, Any]]] = {
        "name": lambda: dict(NAME_SCHEMA),
        "description": lambda: _text("What the job does, for people reading the file."),
        "source": lambda: _typed("source", plugins, defs),
        "batching": batching_schema,
        "steps": lambda: _steps(plugins, defs),
        "aggregate": lambda: options_schema(Aggregate),
        "sink": lambda: _typed("sink", plugins, defs),
        "bad_input": lambda: dict(BAD_INPUT_SCHEMA),
        "ledger": lambda: _text(
            "The ledger: a SQLAlchemy URL, or a SQLite file path from the job file's folder."
        ),
        "workdir": lambda: _text("The work area (staging, batches), from the job file's folder."),
        "cluster": cluster_schema,
        "schedule": schedule_schema,
        "alerts": lambda: {
            "type": "array",
            "description": "Who is told when a run ends, and on which statuses.",
            "items": schema_of(Alert),
        },
    }
    unknown = sorted(TOP_KEYS - set(builders))
    if unknown:
        raise NotImplementedError(f"top-level key(s) {unknown} have no schema in dbatch.jobschema")
    properties = {key: builders[key]() for key in builders if key in TOP_KEYS}
    return {
        "$schema": DRAFT,
        "title": "dbatch job file",
        "description": "A dbatch job: its source, steps and sink, and the options of its runs.",
        "type": "object",
        "properties": properties,
        "required": ["source", "sink"],
        "additionalProperties": False,
        "$defs": defs,
    }


def schema_text(schema: dict[str, Any] | None = None) -> str:
    """``schema`` (by default ``job_schema()``) as the indented JSON text of the shipped file."""
    return json.dumps(job_schema() if schema is None else schema, indent=2) + "\n"


def shipped_schema() -> dict[str, Any]:
    """The schema shipped in the package (dbatch's own components)."""
    result: dict[str, Any] = json.loads(SCHEMA_FILE.read_text())
    return result


def _text(description: str) -> dict[str, Any]:
    return {"type": "string", "description": description}


def _table(kind: str, plugins: bool) -> dict[str, Entry]:
    table = entries(kind)
    if plugins:
        return table
    return {name: e for name, e in table.items() if e.target.startswith("dbatch.")}


def _typed(kind: str, plugins: bool, defs: dict[str, Any]) -> dict[str, Any]:
    """``source:`` or ``sink:``: a ``type`` from the registry and that class's options."""
    table = _table(kind, plugins)
    branches = []
    for name, entry in table.items():
        schema = _component(kind, name, entry, build_options=True)
        schema["properties"] = {"type": {"const": name}, **schema.get("properties", {})}
        defs[f"{kind}.{name}"] = schema
        when = {"properties": {"type": {"const": name}}, "required": ["type"]}
        branches.append({"if": when, "then": {"$ref": f"#/$defs/{kind}.{name}"}})
    return {
        "type": "object",
        "description": f"{_KINDS[kind]}: a `type` and its options.",
        "properties": {"type": {"enum": list(table)}},
        "required": ["type"],
        "allOf": branches,
    }


def _steps(plugins: bool, defs: dict[str, Any]) -> dict[str, Any]:
    """``steps:``: a list of one-key mappings, the key a registered step type."""
    table = _table("step", plugins)
    for name, entry in table.items():
        defs[f"step.{name}"] = _component("step", name, entry, build_options=False)
    one_step = {
        "type": "object",
        "properties": {name: {"$ref": f"#/$defs/step.{name}"} for name in table},
        "additionalProperties": False,
        "minProperties": 1,
        "maxProperties": 1,
    }
    return {
        "type": "array",
        "description": "What is done to each batch, in order: one `kind: options` per step.",
        "items": one_step,
    }


def _component(kind: str, name: str, entry: Entry, *, build_options: bool) -> dict[str, Any]:
    """A class's schema: its options (sources, sinks) or its job-file value (steps).

    A class whose module cannot be imported here (an optional library is missing)
    gets an open schema that says what to install.
    """
    try:
        cls = entry.load(kind, name, key=f"{kind}.type", file=None)
    except JobSpecError as e:
        missing: dict[str, Any] = {"description": e.message}
        return {"type": "object", **missing} if build_options else missing
    own = isinstance(cls, DeclaresJobSchema)  # a source that reads its own options (hybrid)
    schema = options_schema(cls) if build_options and not own else schema_of(cls)
    if "description" not in schema and (text := summary(cls)):
        schema["description"] = text
    return schema
