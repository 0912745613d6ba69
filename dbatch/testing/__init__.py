"""Testing tools: contract suites every source, step and sink inherits, and fault hooks.

The fault hooks and observers need nothing beyond dbatch; the contract suites
(``SinkContract``, ``SourceContract``, ``StepContract``) need pytest and are
imported only when one of them is asked for, so a worker that unpickles a
``FlakySink`` does not load pytest.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = [
    "SinkContract",
    "SourceContract",
    "StepContract",
    "TableInput",
    "GriddedInput",
    "EventLog",
    "SeededFaults",
    "RaiseOn",
    "KillWorker",
    "Pause",
    "AllFaults",
    "FlakySource",
    "FlakySink",
    "data_files",
    "leftovers",
]

_WHERE = {
    "SinkContract": ".contracts.sink",
    "SourceContract": ".contracts.source",
    "StepContract": ".contracts.step",
    "TableInput": ".contracts.inputs",
    "GriddedInput": ".contracts.inputs",
    "EventLog": ".observe",
    "data_files": ".observe",
    "leftovers": ".observe",
    "SeededFaults": ".faults",
    "RaiseOn": ".faults",
    "KillWorker": ".faults",
    "Pause": ".faults",
    "AllFaults": ".faults",
    "FlakySource": ".faults",
    "FlakySink": ".faults",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # next time: no lookup
    return value


def __dir__() -> list[str]:
    return sorted({*__all__, *globals()})


if TYPE_CHECKING:  # for type checkers and editors
    from .contracts.inputs import GriddedInput as GriddedInput
    from .contracts.inputs import TableInput as TableInput
    from .contracts.sink import SinkContract as SinkContract
    from .contracts.source import SourceContract as SourceContract
    from .contracts.step import StepContract as StepContract
    from .faults import AllFaults as AllFaults
    from .faults import FlakySink as FlakySink
    from .faults import FlakySource as FlakySource
    from .faults import KillWorker as KillWorker
    from .faults import Pause as Pause
    from .faults import RaiseOn as RaiseOn
    from .faults import SeededFaults as SeededFaults
    from .observe import EventLog as EventLog
    from .observe import data_files as data_files
    from .observe import leftovers as leftovers
