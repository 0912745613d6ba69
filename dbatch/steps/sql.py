"""SQL steps over a batch: filters, derived columns, and any query (DuckDB's SQL)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..arrow import as_arrow
from ..context import BatchContext
from ..engine import Relation, query, quote_name
from ..errors import JobSpecError
from ..registry import build, options_schema
from .base import RelationStep, Step

__all__ = ["Filter", "Derive", "Sql"]


def _sql_text(value: Any, what: str, example: str, *, key: str, file: str | None) -> str:
    if isinstance(value, str):
        return value
    raise JobSpecError(
        f"expected a SQL {what} as a string, such as {example}; got {value!r}", key=key, file=file
    )


@dataclass(frozen=True)
class Filter(RelationStep):
    """Keep the rows for which ``where`` (a SQL expression) is true; the rest are counted as filtered.

    >>> Filter("status = 'settled' AND amount > 0")
    Filter(where="status = 'settled' AND amount > 0")
    """

    where: str

    def to_relation(self, relation: Relation, index: int, ctx: BatchContext) -> Relation | None:
        if relation.guard is not None:
            return None  # rows an earlier step set aside are not filtered: a new query
        sql = f"SELECT * FROM ({relation.sql}) AS s{index} WHERE {self.where}"
        return dataclasses.replace(relation, sql=sql)

    def token(self) -> list[Any]:
        return ["filter", self.where]

    @classmethod
    def from_config(
        cls, value: Any, *, key: str, file: str | None, base_dir: Path | None
    ) -> Filter:
        """``filter: "status = 'settled'"``."""
        if isinstance(value, Mapping):
            return build(cls, value, key=key, file=file, base_dir=base_dir)
        return cls(_sql_text(value, "condition", "\"status = 'settled'\"", key=key, file=file))

    @classmethod
    def job_schema(cls) -> dict[str, Any]:
        """``filter:`` takes the condition, or ``{where: ...}``."""
        return {
            "anyOf": [{"type": "string", "description": "A SQL condition."}, options_schema(cls)]
        }


@dataclass(frozen=True)
class Derive(RelationStep):
    """Add or replace columns computed by SQL expressions.

    >>> Derive({"day": "CAST(ts AS DATE)", "amount_usd": "amount * rate"})
    Derive(columns={'day': 'CAST(ts AS DATE)', 'amount_usd': 'amount * rate'})
    """

    columns: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.columns:
            raise JobSpecError("derive needs at least one column", key="steps.derive")
        object.__setattr__(self, "columns", dict(self.columns))

    def to_relation(self, relation: Relation, index: int, ctx: BatchContext) -> Relation | None:
        replaced = [c for c in relation.columns if c in self.columns]
        if relation.guard is not None and replaced:
            return None  # rows set aside keep the values they had: a new query
        star = f"* EXCLUDE ({', '.join(quote_name(c) for c in replaced)})" if replaced else "*"
        alive = relation.alive
        exprs = ", ".join(
            (f"CASE WHEN {alive} THEN ({expr}) END" if alive else f"({expr})")
            + f" AS {quote_name(name)}"
            for name, expr in self.columns.items()
        )
        columns = (*(c for c in relation.columns if c not in self.columns), *self.columns)
        sql = f"SELECT {star}, {exprs} FROM ({relation.sql}) AS s{index}"
        return dataclasses.replace(relation, sql=sql, columns=columns)

    def token(self) -> list[Any]:
        return ["derive", sorted(self.columns.items())]

    @classmethod
    def from_config(
        cls, value: Any, *, key: str, file: str | None, base_dir: Path | None
    ) -> Derive:
        """``derive: {day: "CAST(ts AS DATE)"}``."""
        if not isinstance(value, Mapping) or not all(isinstance(v, str) for v in value.values()):
            raise JobSpecError(
                "expected a mapping of new column -> SQL expression", key=key, file=file
            )
        return cls({str(k): v for k, v in value.items()})

    @classmethod
    def job_schema(cls) -> dict[str, Any]:
        """``derive:`` takes new column -> SQL expression."""
        expression = {"type": "string", "description": "A SQL expression over the batch."}
        return {"type": "object", "additionalProperties": expression, "minProperties": 1}


@dataclass(frozen=True)
class Sql(Step):
    """Any DuckDB query over the batch, which is called ``batch``.

    Rows it drops are counted as filtered. A query may do anything (add rows, join,
    aggregate), so it runs alone rather than fused with its neighbours.

    >>> Sql("SELECT * FROM batch WHERE amount IS NOT NULL")
    Sql(sql='SELECT * FROM batch WHERE amount IS NOT NULL')
    """

    sql: str

    def apply(self, data: Any, ctx: BatchContext) -> Any:
        table = as_arrow(data)
        out = query(self.sql, {"batch": table})
        if out.num_rows < table.num_rows:
            ctx.filtered(table.num_rows - out.num_rows)
        return out

    def token(self) -> list[Any]:
        return ["sql", self.sql]

    @classmethod
    def from_config(cls, value: Any, *, key: str, file: str | None, base_dir: Path | None) -> Sql:
        """``sql: "SELECT * FROM batch WHERE amount < 1e6"``."""
        if isinstance(value, Mapping):
            return build(cls, value, key=key, file=file, base_dir=base_dir)
        return cls(_sql_text(value, "query", '"SELECT * FROM batch"', key=key, file=file))

    @classmethod
    def job_schema(cls) -> dict[str, Any]:
        """``sql:`` takes the query, or ``{sql: ...}``."""
        query = {"type": "string", "description": "A DuckDB query over the table `batch`."}
        return {"anyOf": [query, options_schema(cls)]}
