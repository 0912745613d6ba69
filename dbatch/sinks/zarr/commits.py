"""The per-batch commit records kept next to a Zarr store, and what follows from them."""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..base import safe_join
from .store import ZarrStore

__all__ = ["CommitMarkers", "supersede", "withdraw_stale", "write_json"]

log = logging.getLogger(__name__)


def write_json(path: Path, record: Mapping[str, Any]) -> None:
    """Write ``record`` to ``path`` atomically (a hidden file, then a rename).

    Examples
    --------
    >>> write_json(Path(".daily.zarr.dbatch/manifest.json"), {"run_id": "r1"})  # doctest: +SKIP
    """
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}")
    tmp.write_text(json.dumps(record, indent=1, sort_keys=True, default=str))
    os.replace(tmp, path)


@dataclass(frozen=True)
class CommitMarkers:
    """One JSON record per batch in ``folder``: its fingerprint, state, region and store.

    A batch's record is ``"writing"`` while its region is written and
    ``"committed"`` once the write finished.

    Examples
    --------
    >>> markers = CommitMarkers(Path(".daily.zarr.dbatch/commits"))
    >>> markers.path("b1").name
    'b1.json'
    """

    folder: Path

    def path(self, batch_id: str) -> Path:
        """The record's file (refused when the batch id would escape the folder)."""
        return safe_join(self.folder, f"{batch_id}.json")

    def read(self, batch_id: str) -> dict[str, Any] | None:
        """The batch's record; None when there is none or it cannot be read."""
        try:
            return json.loads(self.path(batch_id).read_text())
        except (OSError, ValueError):
            return None

    def all(self) -> list[dict[str, Any]]:
        """Every readable record, in the order of their batch ids."""
        if not self.folder.exists():
            return []
        out = []
        for p in sorted(self.folder.glob("*.json")):
            try:
                out.append(json.loads(p.read_text()))
            except ValueError:
                continue
        return out

    def write(
        self,
        batch_id: str,
        fingerprint: str,
        state: str,
        region: list[int] | None,
        store_id: str | None,
    ) -> None:
        """Record the batch's state, atomically."""
        self.folder.mkdir(parents=True, exist_ok=True)
        record = {
            "batch_id": batch_id,
            "fingerprint": fingerprint,
            "state": state,
            "region": region,
            "store_id": store_id,
        }
        write_json(self.path(batch_id), record)

    def remove(self, batch_id: str) -> None:
        """Forget the batch's record."""
        self.path(batch_id).unlink(missing_ok=True)

    def clear(self) -> None:
        """Forget every record (they belonged to an older store)."""
        shutil.rmtree(self.folder, ignore_errors=True)


def supersede(markers: CommitMarkers, store: ZarrStore, batch_id: str, i0: int, i1: int) -> None:
    """Forget the commits of other batches whose regions ``[i0, i1)`` overwrote.

    Examples
    --------
    >>> supersede(markers, store, "b2", 7, 14)  # doctest: +SKIP
    """
    for m in markers.all():
        region = m.get("region")
        if m["batch_id"] == batch_id or region is None:
            continue
        if region[0] < i1 and i0 < region[1]:
            log.warning(
                "dbatch: batch %s rewrote %s[%s:%s], which batch %s had written; %s is no "
                "longer recorded as committed in %s",
                batch_id,
                store.dim,
                i0,
                i1,
                m["batch_id"],
                m["batch_id"],
                store.path,
            )
            markers.remove(m["batch_id"])


def withdraw_stale(markers: CommitMarkers, store: ZarrStore, keep: set[str]) -> None:
    """Regions of batches that are no longer part of the plan are deleted (they read as gaps).

    Examples
    --------
    >>> withdraw_stale(markers, store, {"b1", "b2"})  # doctest: +SKIP
    """
    records = markers.all()
    kept = [tuple(m["region"]) for m in records if m["batch_id"] in keep and m.get("region")]
    for m in records:
        if m["batch_id"] in keep:
            continue
        if m.get("region") is not None and store.meta_or_none() is not None:
            i0, i1 = m["region"]
            store.delete_region(i0, i1, kept)
            log.info(
                "dbatch: withdrew %s[%s:%s] of batch %s (no longer planned)",
                store.dim,
                i0,
                i1,
                m["batch_id"],
            )
        markers.remove(m["batch_id"])
