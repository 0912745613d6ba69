"""Files as a source: CSV, Parquet and JSON lines, local or any fsspec URL, with bad input kept."""

from .source import Files

__all__ = ["Files"]
