"""A component's job-file options, checked against its signature before it is built."""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import os
import re
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from .errors import JobSpecError

__all__ = [
    "PATH_KEYS",
    "Configurable",
    "DeclaresJobSchema",
    "build",
    "configure",
    "did_you_mean",
    "refuse_unknown",
    "options_schema",
    "schema_of",
]

#: Options that name files: a relative path is taken from the job file's folder.
PATH_KEYS = {"path", "lookup", "model", "paths", "climatology"}


def build(
    cls: Callable[..., Any],
    options: Mapping[str, Any],
    *,
    key: str,
    file: str | None,
    base_dir: Path | None,
) -> Any:
    """Call ``cls(**options)`` after checking names and simple types against its signature."""
    if not isinstance(options, Mapping):
        raise JobSpecError(
            f"expected a mapping of options, got {type(options).__name__}", key=key, file=file
        )
    params = _parameters(cls)
    refuse_unknown(options, params, key=key, file=file)
    required = [n for n, p in params.items() if p.default is inspect.Parameter.empty]
    missing = [n for n in required if n not in options]
    if missing:
        raise JobSpecError(f"missing required key(s) {missing}", key=key, file=file)
    hints = _hints(cls)
    kwargs = {}
    for name, value in options.items():
        if name in PATH_KEYS and base_dir is not None:
            value = _resolve_path(value, base_dir)
        _check_type(value, hints.get(name), key=f"{key}.{name}", file=file)
        kwargs[name] = value
    try:
        return cls(**kwargs)
    except JobSpecError as e:
        if e.file is None:
            raise JobSpecError(e.message, key=_nested_key(key, e.key), file=file) from None
        raise
    except (TypeError, ValueError) as e:
        raise JobSpecError(str(e), key=key, file=file) from None


def refuse_unknown(
    given: Iterable[Any], allowed: Iterable[Any], *, key: str | None, file: str | None
) -> None:
    """Raise ``JobSpecError`` for keys of ``given`` not in ``allowed``, suggesting near misses.

    Examples
    --------
    >>> refuse_unknown({"pth": 1}, ["path", "format"], key="source", file=None)
    Traceback (most recent call last):
    ...
    dbatch.errors.JobSpecError: key 'source': unknown key(s) ['pth'] (did you mean 'path'?); allowed: ['format', 'path']
    """
    names = sorted(map(str, allowed))
    unknown = sorted({str(k) for k in given} - set(names))
    if unknown:
        raise JobSpecError(
            f"unknown key(s) {unknown}{did_you_mean(unknown, names)}; allowed: {names}",
            key=key,
            file=file,
        )


def did_you_mean(unknown: Sequence[str], allowed: Iterable[str]) -> str:
    """``" (did you mean 'source'?)"`` for a near miss, else an empty string."""
    allowed = [str(a) for a in allowed]
    hints = [m for u in unknown for m in difflib.get_close_matches(str(u), allowed, n=1)]
    return f" (did you mean {', '.join(map(repr, hints))}?)" if hints else ""


def _nested_key(outer: str, inner: str | None) -> str:
    """Place a component's own key (``steps.enrich.lookup``) under where it sits in the file."""
    if not inner:
        return outer
    if inner == outer or inner.startswith(outer + "."):
        return inner
    generic = re.sub(r"\[\d+\]", "", outer)  # steps[2].enrich -> steps.enrich
    if inner == generic or inner.startswith(generic + "."):
        return outer + inner[len(generic) :]
    if inner.split(".")[0] in ("source", "sink", "steps", "aggregate", "batching"):
        return inner
    return f"{outer}.{inner}"


def _parameters(cls) -> dict[str, inspect.Parameter]:
    sig = inspect.signature(cls)
    return {
        n: p for n, p in sig.parameters.items() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    }


def _hints(cls: Callable[..., Any]) -> dict[str, Any]:
    generated_init = dataclasses.is_dataclass(cls) and "__init__" not in vars(cls)
    target = cls if generated_init else cls.__init__
    try:
        return typing.get_type_hints(target)
    except Exception:  # noqa: BLE001 - unresolvable hints: skip the type check
        return {}


def _resolve_path(value: Any, base: Path) -> Any:
    """A relative path from the job file's folder; ``~`` is the user's home, as in a shell."""
    if isinstance(value, str) and "://" not in value:
        expanded = os.path.expanduser(value)
        return expanded if os.path.isabs(expanded) else str(base / value)
    if isinstance(value, list):
        return [_resolve_path(v, base) for v in value]
    return value


#: The YAML types ``build`` checks: what the message calls each, and its JSON Schema type.
_SIMPLE = {
    str: ("a string", "string"),
    int: ("a whole number", "integer"),
    float: ("a number", "number"),
    bool: ("true or false", "boolean"),
}


def _check_type(value: Any, hint: Any, *, key: str, file: str | None) -> None:
    if hint is None or value is None:
        return
    options = (
        typing.get_args(hint)
        if typing.get_origin(hint) in (typing.Union, types.UnionType)
        else (hint,)
    )
    expected = []
    for opt in options:
        origin = typing.get_origin(opt) or opt
        if opt is Any:
            return
        if opt is type(None):
            continue  # value is not None here (checked above)
        if origin in _SIMPLE:
            expected.append(_SIMPLE[origin][0])
            if origin is float and isinstance(value, (int, float)) and not isinstance(value, bool):
                return
            if origin is int and isinstance(value, int) and not isinstance(value, bool):
                return
            if origin in (str, bool) and isinstance(value, origin):
                return
        elif origin in (Mapping, dict, typing.Mapping):
            expected.append("a mapping")
            if isinstance(value, Mapping):
                return
        elif origin in (Sequence, list, tuple, typing.Sequence):
            expected.append("a list")
            if isinstance(value, (list, tuple)):
                return
        else:
            return  # a type we do not check from YAML (objects, callables)
    if expected:
        raise JobSpecError(
            f"expected {' or '.join(dict.fromkeys(expected))}, got {type(value).__name__} {value!r}",
            key=key,
            file=file,
        )


@runtime_checkable
class Configurable(Protocol):
    """A component with a YAML shorthand of its own (``filter: "a > 0"``)."""

    @classmethod
    def from_config(
        cls, value: Any, *, key: str, file: str | None, base_dir: Path | None
    ) -> Any: ...


def configure(cls: Any, value: Any, *, key: str, file: str | None, base_dir: Path | None) -> Any:
    """Build a component from its job-file value: its own ``from_config``, else its options."""
    try:
        if isinstance(cls, Configurable):
            return cls.from_config(value, key=key, file=file, base_dir=base_dir)
    except JobSpecError as e:
        if e.file is None:
            raise JobSpecError(e.message, key=_nested_key(key, e.key), file=file) from None
        raise
    if not isinstance(value, Mapping):
        raise JobSpecError("expected a mapping of options", key=key, file=file)
    return build(cls, value, key=key, file=file, base_dir=base_dir)


# -- the JSON Schema of what build() and configure() accept ------------------------------


@runtime_checkable
class DeclaresJobSchema(Protocol):
    """A component whose ``from_config`` says in a JSON Schema which job-file values it takes."""

    @classmethod
    def job_schema(cls) -> dict[str, Any]: ...


def schema_of(cls: Any) -> dict[str, Any]:
    """The JSON Schema of a component's job-file value, as ``configure`` reads it.

    A component's own declaration (``job_schema``) for its YAML shorthand, else the
    options of its signature (``options_schema``). A ``from_config`` that declares
    nothing may take any value, so its schema is open.

    Examples
    --------
    >>> from dbatch.steps.sql import Filter
    >>> schema_of(Filter)["anyOf"][0]["type"]
    'string'
    """
    if isinstance(cls, DeclaresJobSchema):
        schema = cls.job_schema()
    elif isinstance(cls, Configurable):
        schema = {}
    else:
        return options_schema(cls)
    if "description" not in schema and (text := summary(cls)):
        schema = {"description": text, **schema}
    return schema


def options_schema(cls: Any, keys: Iterable[str] | None = None) -> dict[str, Any]:
    """The JSON Schema of the options mapping ``build(cls, ...)`` accepts.

    Names, required options and the simple types come from the signature and its
    type hints, as ``build`` checks them; descriptions from the numpydoc
    ``Parameters`` section of the class. ``keys`` keeps only those options.

    Examples
    --------
    >>> from dbatch.steps.sql import Sql
    >>> options_schema(Sql)["required"]
    ['sql']
    """
    params = _parameters(cls)
    hints = _hints(cls)
    docs = parameter_docs(cls)
    allowed = None if keys is None else set(keys)
    properties: dict[str, Any] = {}
    for name, p in params.items():
        if allowed is not None and name not in allowed:
            continue
        schema = hint_schema(hints.get(name))
        if p.default is None and schema:
            schema = _nullable(schema)
        if (default := _json_default(p.default)) is not None:
            schema["default"] = default
        if name in docs:
            schema["description"] = docs[name]
        properties[name] = schema
    out: dict[str, Any] = {"type": "object"}
    if text := summary(cls):
        out["description"] = text
    out.update(properties=properties, additionalProperties=False)
    required = [n for n in properties if params[n].default is inspect.Parameter.empty]
    if required:
        out["required"] = required
    return out


def hint_schema(hint: Any) -> dict[str, Any]:
    """The JSON Schema of the values ``build`` lets through for a type hint (``{}``: any).

    Examples
    --------
    >>> hint_schema(str | None)
    {'type': ['string', 'null']}
    >>> hint_schema(Sequence[str])
    {'type': 'array', 'items': {'type': 'string'}}
    """
    if hint is None or hint is Any:
        return {}
    union = typing.get_origin(hint) in (typing.Union, types.UnionType)
    alternatives = typing.get_args(hint) if union else (hint,)
    if any(isinstance(a, DeclaresJobSchema) for a in alternatives):
        # A class that reads its own job-file value stands for every YAML form of it.
        alternatives = tuple(
            a for a in alternatives if isinstance(a, DeclaresJobSchema) or a is type(None)
        )
    schemas = []
    for opt in alternatives:
        if opt is type(None):
            continue
        one = _one_schema(opt)
        if not one:
            return {}  # a type build does not check from YAML (objects, callables)
        schemas.append(one)
    schema = _any_of(schemas)
    return _nullable(schema) if type(None) in alternatives else schema


def _one_schema(hint: Any) -> dict[str, Any]:
    origin = typing.get_origin(hint) or hint
    args = [a for a in typing.get_args(hint) if a is not Ellipsis]
    if isinstance(origin, DeclaresJobSchema):
        return origin.job_schema()
    if origin in _SIMPLE:
        return {"type": _SIMPLE[origin][1]}
    if origin in (Mapping, dict, typing.Mapping):
        out: dict[str, Any] = {"type": "object"}
        if len(args) == 2 and (values := hint_schema(args[1])):
            out["additionalProperties"] = values
        return out
    if origin in (Sequence, list, tuple, typing.Sequence):
        out = {"type": "array"}
        if len(set(args)) == 1 and (items := hint_schema(args[0])):
            out["items"] = items
        return out
    return {}


def _any_of(schemas: list[dict[str, Any]]) -> dict[str, Any]:
    """One schema for any of ``schemas``: a list of types when each is a bare type."""
    unique = [s for i, s in enumerate(schemas) if s not in schemas[:i]]
    if len(unique) == 1:
        return dict(unique[0])
    if all(list(s) == ["type"] and isinstance(s["type"], str) for s in unique):
        return {"type": [s["type"] for s in unique]}
    return {"anyOf": unique}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` that also lets ``null`` through (an option whose default is None)."""
    kinds = schema.get("type")
    if kinds is None:
        if {"type": "null"} in schema.get("anyOf", ()):
            return schema
        return {"anyOf": [*schema.get("anyOf", [schema]), {"type": "null"}]}
    kinds = kinds if isinstance(kinds, list) else [kinds]
    return {**schema, "type": [*kinds, "null"] if "null" not in kinds else kinds}


def _json_default(value: Any) -> Any:
    if isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, str) for v in value):
        return list(value)
    return None


def summary(obj: Any) -> str:
    """The first paragraph of ``obj``'s docstring, on one line."""
    doc = inspect.getdoc(obj) or ""
    return _plain(" ".join(doc.split("\n\n")[0].split()))


_PARAMETERS = re.compile(r"^Parameters\n-{3,}\n(.*?)(?=^\w[\w ]*\n-{3,}$|\Z)", re.S | re.M)


def parameter_docs(obj: Any) -> dict[str, str]:
    """Option -> its description, from the numpydoc ``Parameters`` section of ``obj``.

    Examples
    --------
    >>> class C:
    ...     '''A thing.
    ...
    ...     Parameters
    ...     ----------
    ...     a, b : int
    ...         Two ``numbers``.
    ...     '''
    >>> parameter_docs(C)
    {'a': 'Two `numbers`.', 'b': 'Two `numbers`.'}
    """
    match = _PARAMETERS.search(inspect.getdoc(obj) or "")
    if not match:
        return {}
    texts: dict[str, list[str]] = {}
    names: list[str] = []
    for line in match.group(1).splitlines():
        if line and not line[0].isspace():
            names = [n.strip() for n in line.partition(" :")[0].split(",") if n.strip()]
            for n in names:
                texts.setdefault(n, [])
        elif line.strip():
            for n in names:
                texts[n].append(line.strip())
    return {n: _plain(" ".join(t)) for n, t in texts.items() if t}


def _plain(text: str) -> str:
    """RST literals (````x````) as Markdown ones (```x```), for editors that show descriptions."""
    return re.sub(r"``(.+?)``", r"`\1`", text)
