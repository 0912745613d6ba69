"""Shared objects (lookups, models) as a batch task on a worker finds them."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Mapping
from typing import Any

__all__ = ["SharedOnWorkers"]


#: Shared objects this worker process holds, by token: (scattered key, object), newest last.
_HELD: OrderedDict[str, tuple[str, Any]] = OrderedDict()
_KEEP = 8


class SharedOnWorkers(Mapping[str, Any]):
    """Token -> shared object, as a task on a worker sees it; pickles as the keys alone.

    The object is taken from this worker's memory, where the broadcast put it, and
    kept by the process for the tasks after: Dask's memory manager may drop the
    broadcast copies of workers that are idle for a while, and a task should not
    fetch (and unpickle) a large model again. Only when this worker never got it
    (it joined after the broadcast) is it fetched from a peer.
    """

    def __init__(self, keys: Mapping[str, tuple[str, str]]):
        self.where = dict(keys)  # token -> (scattered key, name of the Variable that holds it)

    def __getitem__(self, token: str) -> Any:
        key, variable = self.where[token]
        held = _HELD.get(token)
        if held is not None and held[0] == key:
            _HELD.move_to_end(token)
            return held[1]
        value = self._fetch(key, variable)
        _HELD[token] = (key, value)
        while len(_HELD) > _KEEP:
            _HELD.popitem(last=False)
        return value

    @staticmethod
    def _fetch(key: str, variable: str) -> Any:
        from distributed import Variable, get_worker, worker_client

        worker = get_worker()
        if key in worker.data:
            return worker.data[key]
        with worker_client():
            return Variable(variable).get(timeout=60).result()

    def __iter__(self) -> Iterator[str]:
        return iter(self.where)

    def __len__(self) -> int:
        return len(self.where)
