"""Declared table schemas: column types and row rules (``Schema``, ``Column``, ``parse_type``)."""

from .casting import DEFAULT_NULLS
from .model import DUCKDB_TYPES, Column, QuarantinesRows, RawText, Schema, null_markers, row_json
from .rules import ColumnStats, Rule
from .types import TYPES, parse_type, type_name

__all__ = [
    "Schema",
    "Column",
    "Rule",
    "ColumnStats",
    "parse_type",
    "type_name",
    "row_json",
    "RawText",
    "DUCKDB_TYPES",
    "DEFAULT_NULLS",
    "TYPES",
    "QuarantinesRows",
    "null_markers",
]
