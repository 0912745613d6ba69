"""Declared table schemas: column types and row rules (``Schema``, ``Column``, ``parse_type``)."""

from .model import DUCKDB_TYPES, Column, RawText, Schema, parse_type, row_json
from .rules import ColumnStats, Rule

__all__ = [
    "Schema",
    "Column",
    "Rule",
    "ColumnStats",
    "parse_type",
    "row_json",
    "RawText",
    "DUCKDB_TYPES",
]
