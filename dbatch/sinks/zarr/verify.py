"""What ``ZarrSink.verify()`` finds: committed regions with chunks gone, unfinished writes, gaps."""

from __future__ import annotations

from dataclasses import dataclass

from .axis import TimeAxis
from .commits import CommitMarkers
from .store import ZarrStore

__all__ = ["VerifyReport", "verify"]


@dataclass(frozen=True)
class VerifyReport:
    """What ``ZarrSink.verify()`` found.

    ``committed`` counts the batches whose region is recorded as written,
    ``missing_chunks`` lists ``(batch id, variable, chunk key)`` of committed
    regions whose chunk files are gone (a reader would silently get fill values
    there), ``incomplete`` the batches whose region write never finished,
    ``gaps`` the stretches of the axis no committed batch covers, and
    ``problems`` anything wrong with the store as a whole. ``ok`` is true when
    every committed region is whole; gaps alone do not make it false.
    """

    path: str
    committed: int = 0
    missing_chunks: tuple[tuple[str, str, str], ...] = ()
    incomplete: tuple[str, ...] = ()
    gaps: tuple[tuple[str, str], ...] = ()
    problems: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not (self.missing_chunks or self.incomplete or self.problems)

    def __str__(self) -> str:
        head = f"zarr store {self.path}: {self.committed} committed batch region(s)"
        lines = [head + (", all chunks present" if self.ok else "")]
        lines += [f"  problem: {p}" for p in self.problems]
        if self.missing_chunks:
            batches = sorted({b for b, _, _ in self.missing_chunks})
            shown = ", ".join(f"{v}/{k}" for _, v, k in self.missing_chunks[:5])
            lines.append(
                f"  {len(self.missing_chunks)} chunk(s) missing in batch(es) {batches}: {shown}"
                + (" …" if len(self.missing_chunks) > 5 else "")
                + "; run the job again to rewrite them from the committed batches"
            )
        if self.incomplete:
            lines.append(
                f"  region write not finished for batch(es) {list(self.incomplete)}; "
                "run the job again to finish them"
            )
        if self.gaps:
            shown = ", ".join(a if a == b else f"{a} … {b}" for a, b in self.gaps[:5])
            lines.append(f"  not written by any batch (reads as fill values): {shown}")
        return "\n".join(lines)


def verify(store: ZarrStore, markers: CommitMarkers, axis: TimeAxis) -> VerifyReport:
    """Check every committed region's chunks, unfinished writes and the time axis.

    Examples
    --------
    >>> report = verify(store, markers, axis)  # doctest: +SKIP
    >>> report.ok, report.missing_chunks  # doctest: +SKIP
    """
    import numpy as np

    meta = store.meta_or_none()
    records = markers.all()
    if meta is None:
        written = [m for m in records if m.get("region") is not None]
        gone = ("the store does not exist",) if written else ()
        return VerifyReport(store.path, problems=gone)
    mine = [m for m in records if m.get("store_id") in (meta["store_id"], None)]
    missing: list[tuple[str, str, str]] = []
    incomplete, covered, committed = [], [], 0
    for m in mine:
        if m.get("state") != "committed":
            incomplete.append(m["batch_id"])
            continue
        if m.get("region") is not None:
            committed += 1
            covered.append(tuple(m["region"]))
            missing += store.missing(m["batch_id"], m["region"])
    length = store.length()
    problems: list[str] = []
    _, k = axis.encoding()
    values = store.axis_values()
    wrong = np.flatnonzero(values != np.arange(len(values), dtype="int64") * k)
    if wrong.size:
        problems.append(
            f"the '{axis.dim}' coordinate is damaged at {wrong.size} position(s) (from "
            f"{axis.label(int(wrong[0]))}); run the job again to rewrite it"
        )
    return VerifyReport(
        store.path,
        committed=committed,
        missing_chunks=tuple(missing),
        incomplete=tuple(sorted(incomplete)),
        gaps=tuple(_gaps(axis, covered, length)),
        problems=tuple(problems),
    )


def _gaps(axis: TimeAxis, covered: list[tuple[int, int]], length: int) -> list[tuple[str, str]]:
    gaps, pos = [], 0
    for i0, i1 in sorted(covered):
        if i0 > pos:
            gaps.append((axis.label(pos), axis.label(i0 - 1)))
        pos = max(pos, i1)
    if pos < length:
        gaps.append((axis.label(pos), axis.label(length - 1)))
    return gaps
