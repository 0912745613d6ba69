"""Job files: YAML (safe loading) -> Pipeline, with errors that name the key, the file and the fix."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .batching import ByCount, BySize, ByThreshold, ByWindow
from .errors import JobSpecError
from .pipeline import Pipeline
from .registry import build, import_object, resolve_class
from .steps.aggregate import Aggregate
from .steps.base import Derive, Filter, Map, Sql

__all__ = ["load_job", "JobFile", "pipeline_from_dict", "safe_load"]


class _Loader(yaml.SafeLoader):
    """Safe loading, with YAML 1.2 booleans: only true/false, so `on:` stays a key."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool",
    __import__("re").compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
    list("tTfF"),
)


def safe_load(text: str) -> Any:
    """``yaml.safe_load`` with YAML 1.2 booleans."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader derives from SafeLoader


TOP_KEYS = {
    "name",
    "description",
    "source",
    "batching",
    "steps",
    "aggregate",
    "sink",
    "bad_input",
    "ledger",
    "workdir",
    "cluster",
    "schedule",
}


@dataclass(frozen=True)
class JobFile:
    """A loaded job file: the pipeline and the run options around it."""

    path: Path
    pipeline: Pipeline
    cluster: Mapping[str, Any]
    schedule: Mapping[str, Any] | None
    raw: Mapping[str, Any]


def load_job(path: str | Path) -> JobFile:
    """Read ``path`` with ``yaml.safe_load`` and build its pipeline.

    Relative paths inside the file are taken from the file's folder, which is
    also put on ``sys.path`` so ``map: {function: mymodule:clean}`` finds a
    module that sits next to the job file.
    """
    path = Path(path)
    if not path.exists():
        raise JobSpecError(f"job file {str(path)!r} does not exist")
    try:
        raw = safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise JobSpecError(f"not valid YAML: {e}", file=str(path)) from None
    if not isinstance(raw, Mapping):
        raise JobSpecError("a job file is a mapping with source, steps and sink", file=str(path))
    base = path.resolve().parent
    if str(base) not in sys.path:
        sys.path.insert(0, str(base))
    pipeline = pipeline_from_dict(raw, file=str(path), base_dir=base)
    return JobFile(
        path=path,
        pipeline=pipeline,
        cluster=raw.get("cluster") or {},
        schedule=raw.get("schedule"),
        raw=raw,
    )


def pipeline_from_dict(
    raw: Mapping[str, Any], *, file: str | None = None, base_dir: Path | None = None
) -> Pipeline:
    unknown = sorted(set(raw) - TOP_KEYS)
    if unknown:
        raise JobSpecError(
            f"unknown top-level key(s) {unknown}; allowed: {sorted(TOP_KEYS)}", file=file
        )
    for required in ("source", "sink"):
        if required not in raw:
            raise JobSpecError(f"missing required key '{required}'", file=file)
    name = raw.get("name") or (Path(file).stem if file else "job")
    if not isinstance(name, str):
        raise JobSpecError("expected a string", key="name", file=file)
    source = _component("source", raw["source"], file, base_dir)
    sink = _component("sink", raw["sink"], file, base_dir)
    steps = [
        _step(i, s, file, base_dir)
        for i, s in enumerate(_list(raw.get("steps") or [], "steps", file))
    ]
    bad = raw.get("bad_input") or {}
    if isinstance(bad, str):
        bad = {"mode": bad}
    if not isinstance(bad, Mapping) or set(bad) - {"mode", "max_bad_fraction"}:
        raise JobSpecError(
            "expected {mode: quarantine|drop|fail_fast, max_bad_fraction: 0..1}",
            key="bad_input",
            file=file,
        )
    options: dict[str, Any] = {}
    if "mode" in bad:
        options["bad_input"] = bad["mode"]
    if "max_bad_fraction" in bad:
        v = bad["max_bad_fraction"]
        if not isinstance(v, (int, float)) or isinstance(v, bool):
            raise JobSpecError(
                f"expected a number between 0 and 1, got {v!r}",
                key="bad_input.max_bad_fraction",
                file=file,
            )
        options["max_bad_fraction"] = float(v)
    if raw.get("batching") is not None:
        options["batching"] = _batching(raw["batching"], file)
    if raw.get("aggregate") is not None:
        options["aggregate"] = build(
            Aggregate, raw["aggregate"], key="aggregate", file=file, base_dir=None
        )
    if raw.get("workdir") is not None:
        wd = Path(str(raw["workdir"]))
        options["workdir"] = str(wd if wd.is_absolute() or base_dir is None else base_dir / wd)
    if raw.get("ledger") is not None:
        options["ledger"] = _ledger_url(raw["ledger"], base_dir, file)
    elif base_dir is not None and "workdir" not in options:
        options["workdir"] = str(base_dir / ".dbatch")
    try:
        return Pipeline(source=source, sink=sink, steps=steps, name=name, **options)
    except JobSpecError as e:
        raise JobSpecError(str(e), file=file) from None


def _list(value: Any, key: str, file: str | None) -> list:
    if not isinstance(value, list):
        raise JobSpecError(f"expected a list, got {type(value).__name__}", key=key, file=file)
    return value


def _component(kind: str, spec: Any, file: str | None, base_dir: Path | None) -> Any:
    if not isinstance(spec, Mapping) or "type" not in spec:
        raise JobSpecError(
            "expected a mapping with a 'type' (and its options)", key=kind, file=file
        )
    options = {k: v for k, v in spec.items() if k != "type"}
    cls = resolve_class(kind, str(spec["type"]), key=f"{kind}.type", file=file)
    return build(cls, options, key=kind, file=file, base_dir=base_dir)


def _step(i: int, spec: Any, file: str | None, base_dir: Path | None) -> Any:
    key = f"steps[{i}]"
    if not isinstance(spec, Mapping) or len(spec) != 1:
        raise JobSpecError(
            'each step is a mapping with one key, such as `filter: "amount > 0"` or '
            "`map: {function: pkg.module:func}`",
            key=key,
            file=file,
        )
    ((kind, options),) = spec.items()
    key = f"{key}.{kind}"
    if kind == "filter" and isinstance(options, str):
        return Filter(options)
    if kind == "sql" and isinstance(options, str):
        return Sql(options)
    if kind == "derive":
        if not isinstance(options, Mapping) or not all(
            isinstance(v, str) for v in options.values()
        ):
            raise JobSpecError(
                "expected a mapping of new column -> SQL expression", key=key, file=file
            )
        return Derive(dict(options))
    if kind == "map":
        if isinstance(options, str):
            options = {"function": options}
        if not isinstance(options, Mapping) or "function" not in options:
            raise JobSpecError(
                "expected {function: package.module:name, on: pandas|arrow}", key=key, file=file
            )
        extra = set(options) - {"function", "on"}
        if extra:
            raise JobSpecError(
                f"unknown key(s) {sorted(extra)}; allowed: ['function', 'on']", key=key, file=file
            )
        func = import_object(options["function"], key=f"{key}.function", file=file)
        return Map(func, on=options.get("on", "pandas"))
    cls = resolve_class("step", str(kind), key=key, file=file)
    if not isinstance(options, Mapping):
        raise JobSpecError("expected a mapping of options", key=key, file=file)
    return build(cls, options, key=key, file=file, base_dir=base_dir)


def _batching(spec: Any, file: str | None):
    key = "batching"
    if not isinstance(spec, Mapping) or len(spec) != 1:
        raise JobSpecError(
            "give one of {size: 64MiB}, {count: 8}, {window: 1D}, {threshold: {count: 10}}",
            key=key,
            file=file,
        )
    ((kind, value),) = spec.items()
    try:
        if kind == "size":
            return BySize(value)
        if kind == "count":
            if not isinstance(value, int) or isinstance(value, bool):
                raise JobSpecError(f"expected a whole number, got {value!r}", key="batching.count")
            return ByCount(value)
        if kind == "window":
            return ByWindow(str(value))
        if kind == "threshold":
            if not isinstance(value, Mapping):
                raise JobSpecError("expected {count: N} or {bytes: SIZE}", key="batching.threshold")
            return ByThreshold(**value)
    except JobSpecError as e:
        raise JobSpecError(str(e), file=file) from None
    except (TypeError, ValueError) as e:
        raise JobSpecError(str(e), key=f"batching.{kind}", file=file) from None
    raise JobSpecError(
        f"unknown batching {kind!r}; use size, count, window or threshold", key=key, file=file
    )


def _ledger_url(value: Any, base_dir: Path | None, file: str | None) -> str:
    if not isinstance(value, str):
        raise JobSpecError("expected a SQLAlchemy URL or a file path", key="ledger", file=file)
    if "://" not in value:
        p = Path(value)
        if not p.is_absolute() and base_dir is not None:
            p = base_dir / p
        return f"sqlite:///{p}"
    return value
