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

__all__ = ["PATH_KEYS", "Configurable", "build", "configure", "did_you_mean", "refuse_unknown"]

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


_SIMPLE = {str: "a string", int: "a whole number", float: "a number", bool: "true or false"}


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
            expected.append(_SIMPLE[origin])
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
