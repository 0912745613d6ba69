"""A paginated JSON API as a source: page ranges as units, polite and patient requests."""

from .source import HttpSource

__all__ = ["HttpSource"]
