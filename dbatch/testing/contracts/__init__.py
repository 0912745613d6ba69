"""The contract suites: the tests every sink, source and step inherits, and their input."""

from .checks import assert_same_frames, same_data, shipped
from .inputs import TABLE_SCHEMA, ContractInput, GriddedInput, TableInput
from .sink import SinkCase, SinkContract
from .source import SourceContract
from .step import StepContract, order_table

__all__ = [
    "SinkContract",
    "SinkCase",
    "SourceContract",
    "StepContract",
    "ContractInput",
    "TableInput",
    "GriddedInput",
    "TABLE_SCHEMA",
    "order_table",
    "assert_same_frames",
    "same_data",
    "shipped",
]
