"""Pages of the dbatch documentation made at build time, from the package itself.

- ``reference/job-file.md``: the job-file reference, written from the JSON Schema
  of job files (``dbatch.jobschema.job_schema``), so it lists exactly the keys,
  types, options and defaults the loader accepts;
- ``notebooks/*.ipynb``: the repository's notebooks, each executed in a kernel of
  its own (``dbatch_notebooks``), with their outputs.

Both are made when the builder starts and are not kept in version control.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import dbatch_notebooks
from sphinx.application import Sphinx

from dbatch.spec import TOP_ORDER


def setup(app: Sphinx) -> dict[str, Any]:
    app.setup_extension("dbatch_notebooks")
    app.connect("builder-inited", _make_pages)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}


def _make_pages(app: Sphinx) -> None:
    docs = Path(app.srcdir)
    _copy_notebooks(app, docs.parent / "notebooks", docs / "notebooks")
    from dbatch.jobschema import job_schema

    page = docs / "reference" / "job-file.md"
    text = reference_page(job_schema(plugins=False))
    if not page.exists() or page.read_text() != text:  # keep the page's age: no re-read
        page.parent.mkdir(exist_ok=True)
        page.write_text(text)


def _copy_notebooks(app: Sphinx, source: Path, target: Path) -> None:
    target.mkdir(exist_ok=True)
    wanted = {p.name for p in source.glob("*.ipynb")}
    for old in target.glob("*.ipynb"):
        if old.name not in wanted:
            old.unlink()
    for nb in sorted(source.glob("*.ipynb")):
        copy = target / nb.name
        shown = dbatch_notebooks.prepared(app, nb)
        if not copy.exists() or copy.read_bytes() != shown:  # unchanged: not read again
            copy.write_bytes(shown)


# -- the job-file reference --------------------------------------------------------------


def reference_page(schema: dict[str, Any]) -> str:
    """The job-file reference as MyST Markdown, from the JSON Schema of job files."""
    defs = schema["$defs"]
    props = schema["properties"]
    out = [
        "# Job-file reference",
        "",
        "Every key of a job file, made from the JSON Schema that `dbatch schema` prints",
        "(and the package ships as `dbatch/job.schema.json`), which is derived from",
        "what the loader reads. [Job files](../job-files.md) explains them with examples.",
        "",
        "| key | required | what |",
        "| --- | --- | --- |",
    ]
    keys = [k for k in TOP_ORDER if k in props] + sorted(set(props) - set(TOP_ORDER))
    for key in keys:
        required = "yes" if key in schema.get("required", ()) else ""
        out.append(f"| [`{key}`](#{_anchor(key)}) | {required} | {_cell(_about(props[key]))} |")
    for key in keys:
        out += ["", f"## `{key}`", "", _about(props[key]), ""]
        out += _section(key, props[key], defs)
    return "\n".join(out).rstrip() + "\n"


def _section(key: str, schema: dict[str, Any], defs: dict[str, Any]) -> list[str]:
    if key in ("source", "sink"):
        names = schema["properties"]["type"]["enum"]
        out = [f"`type`: one of {', '.join(f'`{n}`' for n in names)}.", ""]
        for name in names:
            typed = defs[f"{key}.{name}"]
            out += [f"### `{key}` type `{name}`", "", _about(typed), ""]
            out += _options(typed, skip=("type",))
        return out
    if key == "steps":
        out = ["Each step is a one-key mapping: the step type, and its value.", ""]
        for name in schema["items"]["properties"]:
            step = defs[f"step.{name}"]
            out += [f"### step `{name}`", "", _about(step), ""]
            out += _forms(step)
        return out
    if key in ("batching",):
        out = ["Exactly one of:", ""]
        for form, sub in schema["properties"].items():
            out += [f"### `{key}: {{{form}: ...}}`", "", _about(sub), ""]
            out += _forms(sub)
        return out
    if key == "schedule":
        out = ["Exactly one of:", ""]
        for sub in schema["oneOf"]:
            (form,) = sub["required"]
            out += [f"### `{key}: {{{form}: ...}}`", "", _about(sub), ""]
            nested = sub["properties"][form]
            out += _options(nested if nested.get("properties") else sub)
        return out
    if key == "alerts":
        return ["A list; each entry:", "", *_options(schema["items"])]
    return _forms(schema)


def _forms(schema: dict[str, Any]) -> list[str]:
    """The forms a value takes: options of a mapping, or its type."""
    forms = schema.get("anyOf", [schema])
    out = []
    for form in forms:
        if form.get("type") == "object" and form.get("properties"):
            out += _options(form)
        else:
            about = _about(form) if form is not schema else ""
            out += [f"- {_type(form)}" + (f": {about}" if about else ""), ""]
    return out


def _options(schema: dict[str, Any], skip: tuple[str, ...] = ()) -> list[str]:
    required = set(schema.get("required", ()))
    rows = [
        "| option | type | default | what |",
        "| --- | --- | --- | --- |",
    ]
    for name, sub in schema.get("properties", {}).items():
        if name in skip:
            continue
        default = "*required*" if name in required else _default(sub)
        rows.append(f"| `{name}` | {_cell(_type(sub))} | {_cell(default)} | {_cell(_about(sub))} |")
    if len(rows) == 2:
        return [_about(schema) or "No options.", ""]
    return [*rows, ""]


def _type(schema: dict[str, Any]) -> str:
    if "const" in schema:
        return f"`{schema['const']}`"
    if "enum" in schema:
        return " or ".join(f"`{v}`" for v in schema["enum"])
    kinds = schema.get("type")
    if kinds is None and "anyOf" in schema:
        forms = schema["anyOf"]
        if len(forms) == 2 and forms[1].get("items") == forms[0]:  # X, or a list of X
            return f"{_type(forms[0])}, or a list of them"
        return " or ".join(_type(s) for s in forms)
    if kinds is None:
        return "any"
    kinds = kinds if isinstance(kinds, list) else [kinds]
    names = []
    for kind in kinds:
        if kind == "array" and "items" in schema:
            names.append(f"list of {_type(schema['items'])}")
        elif kind == "object" and isinstance(schema.get("additionalProperties"), dict):
            names.append(f"mapping of {_type(schema['additionalProperties'])}")
        else:
            names.append(
                {"integer": "whole number", "object": "mapping", "array": "list"}.get(kind, kind)
            )
    text = " or ".join(names)
    if "minimum" in schema and "maximum" in schema:
        return f"{text} from {schema['minimum']} to {schema['maximum']}"
    if "minimum" in schema:
        text += f" ≥ {schema['minimum']}"
    return text


def _default(schema: dict[str, Any]) -> str:
    return f"`{json.dumps(schema['default'])}`" if "default" in schema else ""


def _about(schema: dict[str, Any]) -> str:
    return str(schema.get("description", ""))


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _anchor(key: str) -> str:
    return key
