"""Names used in job files -> implementations, imported lazily, extensible through entry points."""

from __future__ import annotations

import functools
import importlib
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from .errors import JobSpecError
from .options import (
    PATH_KEYS,
    Configurable,
    build,
    configure,
    did_you_mean,
    options_schema,
    refuse_unknown,
    schema_of,
)

__all__ = [
    "Entry",
    "SOURCES",
    "SINKS",
    "STEPS",
    "build",
    "options_schema",
    "schema_of",
    "did_you_mean",
    "import_object",
    "refuse_unknown",
    "register",
    "configure",
    "component",
    "Configurable",
    "function_from_config",
    "FUNCTION_SCHEMA",
    "resolve_class",
    "entries",
    "PATH_KEYS",
]


@dataclass(frozen=True)
class Entry:
    """Where a job-file type name's class lives, and what to install for its optional libraries.

    Examples
    --------
    >>> Entry("dbatch.steps.predict:Predict", extra="ml").install_command()
    "pip install 'dbatch[ml]'"
    >>> Entry("mypkg.steps:Fancy", packages=("mypkg",)).install_command()
    'pip install mypkg'
    """

    target: str  # "package.module:Class"
    extra: str | None = None  # the dbatch extra that brings the libraries its module imports
    packages: tuple[str, ...] = ()  # or the packages to install themselves

    def install_command(self, missing: str | None = None) -> str:
        """The ``pip install ...`` line that brings what the module imports.

        Without an extra or packages, the top-level package of ``missing`` (the module
        that could not be imported), else of the target's own module.
        """
        names = [f"'dbatch[{self.extra}]'"] if self.extra else []
        names += self.packages
        if not names:
            names = [(missing or self.target.partition(":")[0]).partition(".")[0]]
        return "pip install " + " ".join(names)

    def load(self, kind: str, name: str, *, key: str, file: str | None) -> Any:
        """The class, or a ``JobSpecError`` naming the missing module and the install command."""
        module_name = self.target.partition(":")[0]
        try:
            importlib.import_module(module_name)
        except ImportError as e:
            missing = e.name or module_name
            raise JobSpecError(
                f"{kind} type {name!r} needs the module {missing!r}, which cannot be imported "
                f"({e}); install it with: {self.install_command(missing)}",
                key=key,
                file=file,
            ) from None
        return import_object(self.target, key=key, file=file)


SOURCES: dict[str, Entry] = {
    "files": Entry("dbatch.sources.files:Files"),
    "sql": Entry("dbatch.sources.sql:SqlSource"),
    "http": Entry("dbatch.sources.http:HttpSource"),
    "netcdf": Entry("dbatch.sources.xarray.netcdf:NetCDFSource"),
    "zarr": Entry("dbatch.sources.xarray.zarr:ZarrSource"),
    "redis_stream": Entry("dbatch.sources.streams.redis:RedisStream", extra="streams"),
    "nats": Entry("dbatch.sources.streams.nats:NatsStream", extra="streams"),
    "mqtt": Entry("dbatch.sources.streams.mqtt:MqttTopic", extra="streams"),
    "hybrid": Entry("dbatch.sources.hybrid:Hybrid"),
}
SINKS: dict[str, Entry] = {
    "parquet": Entry("dbatch.sinks.files:ParquetSink"),
    "csv": Entry("dbatch.sinks.files:CsvSink"),
    "sql": Entry("dbatch.sinks.sql:SqlSink"),
    "zarr": Entry("dbatch.sinks.zarr.sink:ZarrSink"),
    "netcdf": Entry("dbatch.sinks.netcdf:NetCDFSink"),
    "report": Entry("dbatch.sinks.report:ReportSink"),
}
STEPS: dict[str, Entry] = {
    "map": Entry("dbatch.steps.base:Map"),
    "filter": Entry("dbatch.steps.sql:Filter"),
    "derive": Entry("dbatch.steps.sql:Derive"),
    "sql": Entry("dbatch.steps.sql:Sql"),
    "enrich": Entry("dbatch.steps.enrich:Enrich"),
    "predict": Entry("dbatch.steps.predict:Predict", extra="ml"),
    "xarray": Entry("dbatch.steps.xarray.map:XarrayMap"),
    "resample": Entry("dbatch.steps.xarray.resample:Resample"),
    "anomaly": Entry("dbatch.steps.xarray.anomaly:Anomaly"),
    "convert_units": Entry("dbatch.steps.xarray.units:ConvertUnits"),
}
_GROUPS = {
    "source": ("dbatch.sources", SOURCES),
    "sink": ("dbatch.sinks", SINKS),
    "step": ("dbatch.steps", STEPS),
}


def register(
    kind: str,
    name: str,
    target: str | Entry,
    *,
    extra: str | None = None,
    packages: Sequence[str] = (),
) -> None:
    """Register ``target`` (``"package.module:Class"``) under ``name`` for job files.

    ``extra`` (a dbatch extra) or ``packages`` say what to install when the module
    cannot be imported; a job file using ``name`` is then told the ``pip install`` line.

    Examples
    --------
    >>> register("step", "fancy", "mypkg.steps:Fancy", packages=["mypkg"])  # doctest: +SKIP
    """
    if isinstance(target, str):
        target = Entry(target, extra=extra, packages=tuple(packages))
    _GROUPS[kind][1][name] = target


def _table(kind: str) -> dict[str, Entry]:
    group, table = _GROUPS[kind]
    for ep in entry_points(group=group):
        table.setdefault(ep.name, Entry(ep.value))
    return table


def entries(kind: str) -> dict[str, Entry]:
    """The type names of ``kind`` (source, sink or step) job files may use, with their entries.

    Examples
    --------
    >>> entries("sink")["parquet"].target
    'dbatch.sinks.files:ParquetSink'
    """
    return dict(_table(kind))


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
    """The class registered as ``name`` for ``kind`` (source, sink or step)."""
    table = _table(kind)
    if name not in table:
        raise JobSpecError(
            f"unknown {kind} type {name!r}{did_you_mean([name], table)}; known: {sorted(table)}",
            key=key,
            file=file,
        )
    return table[name].load(kind, name, key=key, file=file)


def component(kind: str, spec: Any, *, key: str, file: str | None, base_dir: Path | None) -> Any:
    """A source, sink or step from its job-file value ``{type: NAME, ...options}``."""
    if not isinstance(spec, Mapping) or "type" not in spec:
        raise JobSpecError("expected a mapping with a 'type' (and its options)", key=key, file=file)
    cls = resolve_class(kind, str(spec["type"]), key=f"{key}.type", file=file)
    options = {k: v for k, v in spec.items() if k != "type"}
    return configure(cls, options, key=key, file=file, base_dir=base_dir)


#: ``{function: pkg.module:name, on: pandas|arrow}``, as ``function_from_config`` reads it.
FUNCTION_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "function": {
            "type": "string",
            "pattern": "^[^:]+:.+$",
            "description": "The import path of the function, `package.module:name`.",
        },
        "on": {
            "enum": ["pandas", "arrow"],
            "default": "pandas",
            "description": "What the function receives: a pandas DataFrame or a pyarrow Table.",
        },
    },
    "required": ["function"],
    "additionalProperties": False,
}


def function_from_config(
    options: Any, *, key: str, file: str | None, base_dir: Path | None
) -> tuple[Callable[..., Any], str]:
    """``{function: pkg.module:name, on: pandas|arrow}`` -> (the function, on)."""
    if not isinstance(options, Mapping) or "function" not in options:
        raise JobSpecError(
            "expected {function: package.module:name, on: pandas|arrow}", key=key, file=file
        )
    refuse_unknown(options, FUNCTION_SCHEMA["properties"], key=key, file=file)
    func = import_object(options["function"], key=f"{key}.function", file=file)
    if not callable(func):
        raise JobSpecError(
            f"{options['function']!r} is {type(func).__name__}, not a function; "
            "name a function that takes the batch and returns new data",
            key=f"{key}.function",
            file=file,
        )
    on = options.get("on", "pandas")
    if on not in FUNCTION_SCHEMA["properties"]["on"]["enum"]:
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
