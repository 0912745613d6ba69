"""SQL steps compiled into queries, and the optimizer pass that makes a pipeline's physical plan."""

from .optimizer import optimize
from .physical import Handoff, Partials, PhysicalPlan, SqlStage, StepStage
from .sql import BatchStream, Query, SqlChain

__all__ = [
    "optimize",
    "PhysicalPlan",
    "SqlStage",
    "StepStage",
    "Handoff",
    "Partials",
    "SqlChain",
    "Query",
    "BatchStream",
]
