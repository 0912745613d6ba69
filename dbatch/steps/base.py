"""Row steps on Arrow tables: user functions, SQL filters and derived columns."""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from ..context import BatchContext
from ..engine import query
from ..errors import JobSpecError

__all__ = ["Step", "Map", "Filter", "Derive", "Sql", "SharedObject", "as_arrow", "function_token"]


class Step:
    """A function from a batch's data to new data. Subclasses override ``apply``."""

    def apply(self, data: Any, ctx: BatchContext) -> Any:  # pragma: no cover
        raise NotImplementedError

    def token(self) -> list[Any]:
        return [type(self).__name__]

    def shared_objects(self) -> list[SharedObject]:
        """Large objects this step needs on every worker (sent once per worker)."""
        return []


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


def as_arrow(data: Any) -> pa.Table:
    if isinstance(data, pa.Table):
        return data
    if isinstance(data, pa.RecordBatch):
        return pa.Table.from_batches([data])
    import pandas as pd

    if isinstance(data, pd.DataFrame):
        return pa.Table.from_pandas(data, preserve_index=False)
    raise TypeError(
        f"a step returned {type(data).__name__}; return a pandas DataFrame or a pyarrow Table"
    )


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


@dataclass(frozen=True)
class Filter(Step):
    """Keep the rows for which ``where`` (a SQL expression) is true; the rest are counted as filtered.

    >>> Filter("status = 'settled' AND amount > 0")  # doctest: +SKIP
    """

    where: str

    def apply(self, data, ctx):
        table = as_arrow(data)
        out = query(f"SELECT * FROM batch WHERE {self.where}", {"batch": table})
        ctx.filtered(table.num_rows - out.num_rows)
        return out

    def token(self):
        return ["filter", self.where]


@dataclass(frozen=True)
class Derive(Step):
    """Add or replace columns computed by SQL expressions.

    >>> Derive({"day": "CAST(ts AS DATE)", "amount_usd": "amount * rate"})  # doctest: +SKIP
    """

    columns: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self):
        if not self.columns:
            raise JobSpecError("derive needs at least one column", key="steps.derive")
        object.__setattr__(self, "columns", dict(self.columns))

    def apply(self, data, ctx):
        table = as_arrow(data)
        replaced = [c for c in table.column_names if c in self.columns]
        star = f"* EXCLUDE ({', '.join(_quote(c) for c in replaced)})" if replaced else "*"
        exprs = ", ".join(f"({expr}) AS {_quote(name)}" for name, expr in self.columns.items())
        return query(f"SELECT {star}, {exprs} FROM batch", {"batch": table})

    def token(self):
        return ["derive", sorted(self.columns.items())]


@dataclass(frozen=True)
class Sql(Step):
    """Any DuckDB query over the batch, which is called ``batch``.

    Rows it drops are counted as filtered.

    >>> Sql("SELECT * FROM batch WHERE amount IS NOT NULL")  # doctest: +SKIP
    """

    sql: str

    def apply(self, data, ctx):
        table = as_arrow(data)
        out = query(self.sql, {"batch": table})
        if out.num_rows < table.num_rows:
            ctx.filtered(table.num_rows - out.num_rows)
        return out

    def token(self):
        return ["sql", self.sql]


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
