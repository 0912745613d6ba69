"""Job files: YAML (safe loading) -> Pipeline, with errors that name the key, the file and the fix."""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from . import config
from .batching import batcher_from_config
from .cluster import cluster_from_config
from .core import Plan
from .errors import JobSpecError, SourceError
from .monitor.alerts import Alert, alerts_from_config
from .options import build, configure, did_you_mean, refuse_unknown
from .pipeline import BAD_INPUT_MODES, NAME_PATTERN, Pipeline
from .protocols import Trigger
from .registry import component, resolve_class
from .steps.aggregate import Aggregate
from .triggers import trigger_from_config

__all__ = [
    "load_job",
    "JobFile",
    "pipeline_from_dict",
    "safe_load",
    "TOP_KEYS",
    "TOP_ORDER",
    "BAD_INPUT_SCHEMA",
]


class _Loader(yaml.SafeLoader):
    """Safe loading, with YAML 1.2 booleans: only true/false, so `on:` stays a key.

    A key given twice in one mapping is an error, not a silent overwrite.
    """

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if isinstance(key, (str, int, float, bool)) and key in seen:
                raise JobSpecError(
                    f"given twice in one mapping (lines {seen[key]} and {line}); keep one",
                    key=str(key),
                )
            if isinstance(key, (str, int, float, bool)):
                seen[key] = line
        return super().construct_mapping(node, deep=deep)


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool",
    re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
    list("tTfF"),
)


def safe_load(text: str) -> Any:
    """``yaml.safe_load`` with YAML 1.2 booleans."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader derives from SafeLoader


#: The top-level keys of a job file, in the order the docs present them.
TOP_ORDER = (
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
    "alerts",
)
TOP_KEYS = frozenset(TOP_ORDER)


_MODE = {"enum": list(BAD_INPUT_MODES), "description": "What a bad row or file does."}
#: ``bad_input:`` as ``pipeline_from_dict`` reads it: the mode, or the mode and a limit.
BAD_INPUT_SCHEMA: dict[str, Any] = {
    "description": "What happens to rows and files that cannot be read or break the schema.",
    "anyOf": [
        _MODE,
        {
            "type": "object",
            "properties": {
                "mode": dict(_MODE, default="quarantine"),
                "max_bad_fraction": {
                    "type": "number",
                    "minimum": 0,
                    "maximum": 1,
                    "description": "A batch with more bad rows than this fails.",
                },
            },
            "additionalProperties": False,
        },
    ],
}
#: What a job's ``name`` may be.
NAME_SCHEMA: dict[str, Any] = {
    "type": "string",
    "pattern": f"^{NAME_PATTERN}$",
    "not": {"enum": [".", ".."]},
    "description": "The job's name in the ledger and the work area (default: the file's stem).",
}


@dataclass(frozen=True)
class JobFile:
    """A loaded job file: the pipeline and the run options around it.

    Examples
    --------
    >>> job = load_job("job.yaml")  # doctest: +SKIP
    >>> job.plan()  # doctest: +SKIP
    """

    path: Path
    pipeline: Pipeline
    cluster: Mapping[str, Any]
    schedule: Trigger | None
    raw: Mapping[str, Any] = field(repr=False)  # URLs in it may hold passwords
    alerts: tuple[Alert, ...] = ()

    @property
    def source_key(self) -> str:
        """The key that names the input: ``source.path`` for files, else ``source``."""
        source = self.raw.get("source")
        return "source.path" if isinstance(source, Mapping) and "path" in source else "source"

    @contextmanager
    def inputs_checked(self) -> Iterator[None]:
        """Re-raise a missing or empty input with the job file and the key that names it."""
        try:
            yield
        except SourceError as e:
            raise SourceError(f"{self.path}: key '{self.source_key}': {e}") from e

    def plan(self) -> Plan:
        """The job's batches; a missing or empty input names the file and ``source.path``."""
        with self.inputs_checked():
            return self.pipeline.plan()


def load_job(path: str | Path) -> JobFile:
    """Read ``path`` with ``yaml.safe_load`` and build its pipeline.

    Relative paths inside the file are taken from the file's folder, which is
    also put on ``sys.path`` so ``map: {function: mymodule:clean}`` finds a
    module that sits next to the job file. Everything is checked before
    anything runs; a wrong file raises ``JobSpecError`` naming the file and key.

    Examples
    --------
    >>> job = load_job("dbatch-demo/job.yaml")  # doctest: +SKIP
    >>> job.pipeline.run()  # doctest: +SKIP
    """
    path = Path(path)
    text = _read(path)
    try:
        raw = safe_load(text)
    except JobSpecError as e:
        raise JobSpecError(str(e), file=str(path)) from None
    except yaml.YAMLError as e:
        raise JobSpecError(_yaml_problem(e), file=str(path)) from None
    if not isinstance(raw, Mapping):
        raise JobSpecError(
            "expected a mapping with at least source and sink (see docs/job-files.md), "
            f"got {type(raw).__name__}",
            file=str(path),
        )
    _refuse_nul(raw, "", str(path))
    base = path.resolve().parent
    if str(base) not in sys.path:
        sys.path.insert(0, str(base))
    pipeline = pipeline_from_dict(raw, file=str(path), base_dir=base)
    return JobFile(
        path=path,
        pipeline=pipeline,
        cluster=cluster_from_config(raw.get("cluster"), file=str(path), base_dir=base),
        schedule=trigger_from_config(raw.get("schedule"), file=str(path)),
        raw=raw,
        alerts=alerts_from_config(raw.get("alerts"), file=str(path), base_dir=base),
    )


def _read(path: Path) -> str:
    """The text of the job file at ``path``; a folder or an unreadable file is a ``JobSpecError``."""
    if "\0" in str(path):
        raise JobSpecError(f"job file {str(path)!r} holds a NUL byte, which no file name can")
    if path.is_dir():
        found = sorted(p.name for p in path.glob("*.y*ml"))
        example = "job.yaml" if "job.yaml" in found or not found else found[0]
        hint = f"; it holds {', '.join(found[:5])}" if found else ""
        raise JobSpecError(
            f"{str(path)!r} is a folder, not a job file; give the job's YAML file, "
            f"such as {str(path / example)!r}{hint}"
        )
    if not path.exists():
        raise JobSpecError(f"job file {str(path)!r} does not exist")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise JobSpecError(f"not UTF-8 text ({e}); save it as UTF-8", file=str(path)) from None
    except OSError as e:
        raise JobSpecError(f"cannot read the job file: {e.strerror or e}", file=str(path)) from None


def _refuse_nul(value: Any, key: str, file: str) -> None:
    """Refuse a NUL byte in any string of the job file: no path, URL or name can hold one."""
    if isinstance(value, str) and "\0" in value:
        raise JobSpecError(
            f"{value!r} holds a NUL byte, which no path, URL or name can; remove it",
            key=key or None,
            file=file,
        )
    if isinstance(value, Mapping):
        for k, v in value.items():
            _refuse_nul(v, f"{key}.{k}" if key else str(k), file)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _refuse_nul(v, f"{key}[{i}]", file)


def _yaml_problem(e: yaml.YAMLError) -> str:
    if not isinstance(e, yaml.MarkedYAMLError):
        return f"not valid YAML: {e}; check the indentation, quotes and brackets there"
    mark = e.problem_mark
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    problem = e.problem or str(e)
    what = f"{e.context}, {problem}" if e.context else problem
    return f"not valid YAML{where}: {what}; check the indentation, quotes and brackets there"


def pipeline_from_dict(
    raw: Mapping[str, Any], *, file: str | None = None, base_dir: Path | None = None
) -> Pipeline:
    """Build a Pipeline from a job file's mapping; ``file`` names it in error messages.

    Relative paths are taken from ``base_dir`` (the job file's folder) when given.

    Examples
    --------
    >>> p = pipeline_from_dict(
    ...     {"source": {"type": "files", "path": "in/*.csv"},
    ...      "sink": {"type": "parquet", "path": "out"}, "batching": {"count": 4}}
    ... )
    >>> p.batching
    ByCount(count=4)
    """
    name = _checked_top_level(raw, file)
    source = component("source", raw["source"], key="source", file=file, base_dir=base_dir)
    sink = component("sink", raw["sink"], key="sink", file=file, base_dir=base_dir)
    steps = [
        _step(i, s, file, base_dir)
        for i, s in enumerate(_list(raw.get("steps") or [], "steps", file))
    ]
    options = _bad_input(raw.get("bad_input"), file)
    if raw.get("batching") is not None:
        options["batching"] = batcher_from_config(raw["batching"], file=file)
    if raw.get("aggregate") is not None:
        options["aggregate"] = build(
            Aggregate, raw["aggregate"], key="aggregate", file=file, base_dir=None
        )
    if raw.get("workdir") is not None:
        wd = Path(str(raw["workdir"])).expanduser()
        options["workdir"] = str(wd if wd.is_absolute() or base_dir is None else base_dir / wd)
    elif base_dir is not None:
        # The job's work area follows the job file, wherever the command runs from.
        options["workdir"] = str(config.workdir(base_dir))
    if raw.get("ledger") is not None:
        options["ledger"] = _ledger_url(raw["ledger"], base_dir, file)
    try:
        return Pipeline(source=source, sink=sink, steps=steps, name=name, **options)
    except JobSpecError as e:
        raise JobSpecError(str(e), file=file) from None


def _checked_top_level(raw: Mapping[str, Any], file: str | None) -> str:
    """Refuse unknown or missing top-level keys and a name or text of the wrong type; the name."""
    unknown = sorted(map(str, set(raw) - TOP_KEYS))
    if unknown:
        raise JobSpecError(
            f"unknown top-level key(s) {unknown}{did_you_mean(unknown, TOP_KEYS)}; "
            f"allowed: {sorted(TOP_KEYS)}",
            file=file,
        )
    for required, example in (
        ("source", "{type: files, path: landing/*.csv}"),
        ("sink", "{type: parquet, path: out/result}"),
    ):
        if required not in raw:
            raise JobSpecError(
                f"missing required key '{required}'; add, for example, {required}: {example}",
                file=file,
            )
    name = raw.get("name") or (Path(file).stem if file else "job")
    if not isinstance(name, str):
        raise JobSpecError(
            f"expected a string of letters, digits, '-', '_' and '.', got {name!r}",
            key="name",
            file=file,
        )
    for key in ("description", "workdir"):
        if raw.get(key) is not None and not isinstance(raw[key], str):
            raise JobSpecError(f"expected a string, got {raw[key]!r}", key=key, file=file)
    return name


def _bad_input(bad: Any, file: str | None) -> dict[str, Any]:
    """``bad_input: {mode, max_bad_fraction}`` (or just the mode) -> Pipeline options."""
    if bad is None:
        return {}
    if isinstance(bad, str):
        bad = {"mode": bad}
    if not isinstance(bad, Mapping):
        raise JobSpecError(
            "expected {mode: quarantine|drop|fail_fast, max_bad_fraction: 0..1}, "
            f"got {type(bad).__name__} {bad!r}",
            key="bad_input",
            file=file,
        )
    refuse_unknown(bad, BAD_INPUT_SCHEMA["anyOf"][1]["properties"], key="bad_input", file=file)
    options: dict[str, Any] = {}
    if "mode" in bad:
        if bad["mode"] not in BAD_INPUT_MODES:
            raise JobSpecError(
                f"expected one of {', '.join(BAD_INPUT_MODES)}, got {bad['mode']!r}",
                key="bad_input.mode",
                file=file,
            )
        options["bad_input"] = bad["mode"]
    if "max_bad_fraction" in bad:
        v = bad["max_bad_fraction"]
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not 0 <= v <= 1:
            raise JobSpecError(
                f"expected a number between 0 and 1, got {v!r}",
                key="bad_input.max_bad_fraction",
                file=file,
            )
        options["max_bad_fraction"] = float(v)
    return options


def _list(value: Any, key: str, file: str | None) -> list:
    if not isinstance(value, list):
        raise JobSpecError(f"expected a list, got {type(value).__name__}", key=key, file=file)
    return value


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
    cls = resolve_class("step", str(kind), key=key, file=file)
    return configure(cls, options, key=key, file=file, base_dir=base_dir)


def _ledger_url(value: Any, base_dir: Path | None, file: str | None) -> str:
    if not isinstance(value, str):
        raise JobSpecError("expected a SQLAlchemy URL or a file path", key="ledger", file=file)
    if "://" not in value:
        p = Path(value).expanduser()
        if not p.is_absolute() and base_dir is not None:
            p = base_dir / p
        return f"sqlite:///{p}"
    return value
