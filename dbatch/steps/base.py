"""The step contract's base classes, shared objects, and user functions as steps (``Map``)."""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..arrow import as_arrow
from ..context import BatchContext
from ..engine import Relation
from ..errors import JobSpecError

__all__ = ["Step", "RelationStep", "Map", "SharedObject", "function_token"]


class Step:
    """A function from a batch's data to new data (the ``Step`` protocol, with its defaults).

    Subclasses override ``apply``; ``token`` should name everything that shapes
    the output, and ``shared_objects`` the large objects sent to each worker once.
    """

    def apply(self, data: Any, ctx: BatchContext) -> Any:  # pragma: no cover
        raise NotImplementedError

    def token(self) -> list[Any]:
        return [type(self).__name__]

    def shared_objects(self) -> list[SharedObject]:
        """Large objects this step needs on every worker (sent once per worker)."""
        return []


class RelationStep(Step):
    """A SQL step (the ``SqlStep`` protocol): it says how it extends a relation, once.

    ``apply`` compiles the step as a chain of one, so a step run alone and the
    same step fused with its neighbours give the same rows, counts and quarantine.
    """

    def to_relation(
        self, relation: Relation, index: int, ctx: BatchContext
    ) -> Relation | None:  # pragma: no cover
        raise NotImplementedError

    def apply(self, data: Any, ctx: BatchContext) -> Any:
        from ..compile.sql import SqlChain

        return SqlChain((self,)).apply(data, ctx)


class SharedObject:
    """A large object (a lookup table, a model) sent to each worker once.

    Pickles as its token only, so tasks that carry a step holding it stay
    small; on a worker the object is found in the batch context, where the
    runner placed it through ``Client.scatter(..., broadcast=True, direct=True)``.
    """

    def __init__(self, obj: Any, token: str):
        self.obj = obj
        self.token = token

    def get(self, ctx: BatchContext) -> Any:
        return self.obj

    def __reduce__(self):
        return (_SharedRef, (self.token,))


class _SharedRef:
    def __init__(self, token: str):
        self.token = token

    def get(self, ctx: BatchContext) -> Any:
        try:
            return ctx.shared[self.token]
        except KeyError:
            raise RuntimeError(
                f"shared object {self.token} was not sent to this worker; "
                "run pipelines through Pipeline.run(), which broadcasts it"
            ) from None

    def __reduce__(self):
        return (_SharedRef, (self.token,))


def function_token(func: Callable) -> list[str]:
    """Name plus a hash of the source, so editing a function re-runs its batches."""
    name = f"{getattr(func, '__module__', '')}:{getattr(func, '__qualname__', repr(func))}"
    try:
        src = inspect.getsource(func)
    except (OSError, TypeError):
        code = getattr(func, "__code__", None)
        src = code.co_code.hex() if code is not None else repr(func)
    return [name, hashlib.sha256(src.encode()).hexdigest()[:16]]


@dataclass(frozen=True)
class Map(Step):
    """Apply a user function to each batch.

    ``func`` receives a pandas DataFrame (``on="pandas"``, the default) or a
    pyarrow Table (``on="arrow"``) and returns either. Rows it drops are counted
    as filtered.

    Examples
    --------
    >>> Map(lambda df: df.assign(amount=df.amount.abs()))  # doctest: +SKIP
    """

    func: Callable[[Any], Any]
    on: str = "pandas"

    def __post_init__(self):
        if self.on not in ("pandas", "arrow"):
            raise JobSpecError("on must be 'pandas' or 'arrow'", key="steps.map.on")
        if not callable(self.func):
            raise JobSpecError(f"{self.func!r} is not callable", key="steps.map.function")

    def apply(self, data, ctx):
        table = as_arrow(data)
        arg = table.to_pandas() if self.on == "pandas" else table
        out = as_arrow(self.func(arg))
        if out.num_rows < table.num_rows:
            ctx.filtered(table.num_rows - out.num_rows)
        return out

    def token(self):
        return ["map", self.on, *function_token(self.func)]

    @classmethod
    def from_config(cls, value: Any, *, key: str, file: str | None, base_dir: Path | None) -> Map:
        """``map: pkg.module:func`` or ``map: {function: pkg.module:func, on: arrow}``."""
        from ..registry import function_from_config

        if isinstance(value, str):
            value = {"function": value}
        func, on = function_from_config(value, key=key, file=file, base_dir=base_dir)
        return cls(func, on=on)

    @classmethod
    def job_schema(cls) -> dict[str, Any]:
        """``map:`` takes an import path or ``{function, on}``."""
        from ..registry import FUNCTION_SCHEMA

        path = dict(FUNCTION_SCHEMA["properties"]["function"])
        return {"anyOf": [path, FUNCTION_SCHEMA]}
