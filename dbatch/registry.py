"""Names used in job files -> implementations, imported lazily, extensible through entry points."""

from __future__ import annotations

import dataclasses
import functools
import sys
import difflib
import importlib
import inspect
import os
import re
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from .errors import JobSpecError

__all__ = [
    "SOURCES",
    "SINKS",
    "STEPS",
    "build",
    "did_you_mean",
    "import_object",
    "refuse_unknown",
    "register",
    "configure",
    "Configurable",
    "function_from_config",
]

SOURCES: dict[str, str] = {
    "files": "dbatch.sources.files:Files",
    "sql": "dbatch.sources.sql:SqlSource",
    "http": "dbatch.sources.http:HttpSource",
    "netcdf": "dbatch.sources.xarray.netcdf:NetCDFSource",
    "zarr": "dbatch.sources.xarray.zarr:ZarrSource",
}
SINKS: dict[str, str] = {
    "parquet": "dbatch.sinks.files:ParquetSink",
    "csv": "dbatch.sinks.files:CsvSink",
    "sql": "dbatch.sinks.sql:SqlSink",
    "zarr": "dbatch.sinks.zarr.sink:ZarrSink",
    "netcdf": "dbatch.sinks.netcdf:NetCDFSink",
    "report": "dbatch.sinks.report:ReportSink",
}
STEPS: dict[str, str] = {
    "map": "dbatch.steps.base:Map",
    "filter": "dbatch.steps.sql:Filter",
    "derive": "dbatch.steps.sql:Derive",
    "sql": "dbatch.steps.sql:Sql",
    "enrich": "dbatch.steps.enrich:Enrich",
    "predict": "dbatch.steps.predict:Predict",
    "xarray": "dbatch.steps.xarray.map:XarrayMap",
    "resample": "dbatch.steps.xarray.resample:Resample",
    "anomaly": "dbatch.steps.xarray.anomaly:Anomaly",
    "convert_units": "dbatch.steps.xarray.units:ConvertUnits",
}
_GROUPS = {
    "source": ("dbatch.sources", SOURCES),
    "sink": ("dbatch.sinks", SINKS),
    "step": ("dbatch.steps", STEPS),
}
PATH_KEYS = {"path", "lookup", "model", "paths", "climatology"}


def register(kind: str, name: str, target: str) -> None:
    """Register ``target`` (``"package.module:Class"``) under ``name`` for job files."""
    _GROUPS[kind][1][name] = target


def _table(kind: str) -> dict[str, str]:
    group, table = _GROUPS[kind]
    for ep in entry_points(group=group):
        table.setdefault(ep.name, ep.value)
    return table


def import_object(path: str, *, key: str | None = None, file: str | None = None) -> Any:
    """``'package.module:name'`` -> the object, with a message that says what to fix."""
    if not isinstance(path, str) or ":" not in path:
        raise JobSpecError(
            f"{path!r} is not an import path; write 'package.module:function'", key=key, file=file
        )
    module_name, _, attr = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise JobSpecError(
            f"cannot import module {module_name!r} ({e}); is it installed, or on PYTHONPATH "
            "(the job file's folder is added automatically)?",
            key=key,
            file=file,
        ) from None
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise JobSpecError(
                f"module {module_name!r} has no attribute {attr!r}", key=key, file=file
            )
        obj = getattr(obj, part)
    return obj


def resolve_class(kind: str, name: str, *, key: str, file: str | None) -> type:
    table = _table(kind)
    if name not in table:
        raise JobSpecError(
            f"unknown {kind} type {name!r}; known: {sorted(table)}", key=key, file=file
        )
    target = table[name]
    try:
        return import_object(target, key=key, file=file)
    except JobSpecError as e:
        raise JobSpecError(
            f"{kind} type {name!r} needs an optional dependency: {e}", key=key, file=file
        ) from None


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
        n: p
        for n, p in sig.parameters.items()
        if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
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
        if typing.get_origin(hint) in (typing.Union, _union_type())
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


def _union_type():
    import types

    return types.UnionType


@runtime_checkable
class Configurable(Protocol):
    """A component with a YAML shorthand of its own (``filter: "a > 0"``)."""

    @classmethod
    def from_config(
        cls, value: Any, *, key: str, file: str | None, base_dir: Path | None
    ) -> Any: ...


def configure(
    cls: Any, value: Any, *, key: str, file: str | None, base_dir: Path | None
) -> Any:
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


def function_from_config(
    options: Any, *, key: str, file: str | None, base_dir: Path | None
) -> tuple[Callable[..., Any], str]:
    """``{function: pkg.module:name, on: pandas|arrow}`` -> (the function, on)."""
    if not isinstance(options, Mapping) or "function" not in options:
        raise JobSpecError(
            "expected {function: package.module:name, on: pandas|arrow}", key=key, file=file
        )
    refuse_unknown(options, ("function", "on"), key=key, file=file)
    func = import_object(options["function"], key=f"{key}.function", file=file)
    if not callable(func):
        raise JobSpecError(
            f"{options['function']!r} is {type(func).__name__}, not a function; "
            "name a function that takes the batch and returns new data",
            key=f"{key}.function",
            file=file,
        )
    on = options.get("on", "pandas")
    if on not in ("pandas", "arrow"):
        raise JobSpecError(f"expected pandas or arrow, got {on!r}", key=f"{key}.on", file=file)
    return _ship_by_value(func, base_dir), on


class _ShippedFunction:
    """A function that pickles with its code, for workers that cannot import its module.

    Its name, module, source and so its token are those of the wrapped function.
    """

    __wrapped__: Callable[..., Any]

    def __init__(self, func: Callable[..., Any]):
        functools.update_wrapper(self, func)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.__wrapped__(*args, **kwargs)

    def __reduce__(self):
        import cloudpickle

        return (_unship, (cloudpickle.dumps(self.__wrapped__),))


def _unship(payload: bytes) -> _ShippedFunction:
    import pickle

    return _ShippedFunction(pickle.loads(payload))


def _ship_by_value(func: Any, base_dir: Path | None) -> Any:
    """A function from a module next to the job file travels to workers with its code.

    Workers elsewhere (``dask worker`` on another machine, or processes started
    before the job was loaded) cannot import a module that only exists in the
    job's folder, so cloudpickle sends its code along.
    """
    if base_dir is None:
        return func
    module = sys.modules.get(getattr(func, "__module__", "") or "")
    origin = getattr(module, "__file__", None)
    if module is None or origin is None:
        return func
    if not Path(origin).resolve().is_relative_to(base_dir.resolve()):
        return func
    import cloudpickle

    cloudpickle.register_pickle_by_value(module)
    return _ShippedFunction(func)


