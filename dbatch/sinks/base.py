"""The sink contract, the versioned, atomically published directory, and what sinks share."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core import Part
from ..errors import CommitError, JobSpecError, PathEscapeError
from ..faults import crash_point

if TYPE_CHECKING:
    import xarray as xr

__all__ = [
    "Sink",
    "Part",
    "PublishedDirectory",
    "as_dataset",
    "file_checksum",
    "local_path",
    "safe_join",
    "stage_query_result",
]


class Sink:
    """Writes one batch's output to staging (on a worker), then makes it visible (on the driver).

    The ``Sink`` protocol with its defaults. ``stage`` runs on a worker and writes
    only below the directory it is given. The runner commits a batch by renaming
    that directory into its committed area; ``publish`` makes a whole run visible
    at the end. What a sink may do beyond that is a capability of its own
    (``dbatch.protocols``): ``CommitsBatches`` (publish each batch as it commits,
    in a transaction say), ``Manifested``, ``StagesQueries``.
    """

    def describe(self) -> str:
        return type(self).__name__

    def token(self) -> list[Any]:
        return [type(self).__name__]

    def stage(self, data: Any, directory: Path, name: str) -> dict[str, Any]:  # pragma: no cover
        raise NotImplementedError

    def publish(
        self, run_id: str, parts: Sequence[Part], summary: dict[str, Any]
    ) -> dict[str, Any]:
        """Make the run's output visible; return what was published."""
        return {}

    @property
    def location(self) -> str:
        return ""


def stage_query_result(
    sink: Sink, sql: str, tables: dict[str, Any], directory: Path, name: str
) -> tuple[dict[str, Any], int]:
    """Stage the result of a DuckDB query through Arrow: (what was staged, rows)."""
    from ..engine import query

    table = query(sql, tables)
    return sink.stage(table, directory, name), table.num_rows


def as_dataset(data: Any, sink: str) -> xr.Dataset:
    """``data`` itself when it is an xarray Dataset; else a JobSpecError naming ``sink``.

    Examples
    --------
    >>> as_dataset(batch_data, "netcdf")  # doctest: +SKIP
    """
    import xarray as xr

    if isinstance(data, xr.Dataset):
        return data
    raise JobSpecError(
        f"the {sink} sink writes xarray Datasets, got {type(data).__name__}; use a netcdf or "
        "zarr source (table data goes to the parquet or csv sink)",
        key="sink.type",
    )


def file_checksum(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def local_path(path: Any, sink: str) -> str:
    """A sink's output path, which must be local or mounted: its commits rename files.

    ``file://`` is dropped and ``~`` is the user's home; other URLs (``s3://``...) are
    refused, naming ``sink.path``.

    Examples
    --------
    >>> local_path("file:///data/out", "parquet")
    '/data/out'
    """
    if not path:
        raise JobSpecError(f"the {sink} sink needs a path", key="sink.path")
    text = str(path)
    if "://" in text and not text.startswith("file://"):
        raise JobSpecError(
            f"the {sink} sink publishes with an atomic rename and needs a local or mounted "
            f"path; got {text!r}",
            key="sink.path",
        )
    return os.path.expanduser(text.removeprefix("file://"))


def safe_join(root: str | Path, *parts: str, encoded: bool = False) -> Path:
    """Join path parts built from data below ``root``; refuse anything that escapes it.

    Rejects absolute parts, ``..`` (also percent-encoded, and as the value of a
    ``key=value`` partition folder, which readers decode), separators inside a
    part, NUL bytes, and targets that resolve outside ``root`` through a symlink.
    With ``encoded`` the parts are folder names whose special characters are
    percent-encoded already (``hive_folder``): each is checked as the name it is,
    so ``region=..%2Fx`` (the value ``../x``) is one harmless folder.

    Examples
    --------
    >>> safe_join("out", "region=EU", "part-0.parquet")
    PosixPath('out/region=EU/part-0.parquet')
    """
    from urllib.parse import unquote

    root = Path(root)
    for part in parts:
        text = str(part)
        decoded = text if encoded else unquote(unquote(text))
        value = decoded.split("=", 1)[1] if "=" in decoded else None
        bad = (
            value in (".", "..")
            or not text
            or "\x00" in decoded
            or os.path.isabs(decoded)
            or decoded.startswith("~")
            or any(seg in ("..", ".") for seg in decoded.replace("\\", "/").split("/"))
            or "/" in decoded
            or "\\" in decoded
        )
        if bad:
            raise PathEscapeError(
                f"refusing output path part {text!r}: values used in paths may not be empty, "
                "absolute, contain separators or '..'"
            )
    target = root.joinpath(*parts)
    real_root = root.resolve()
    real_target = target.resolve()
    if real_target != real_root and real_root not in real_target.parents:
        raise PathEscapeError(
            f"output path {str(target)!r} resolves outside its root {str(root)!r} "
            "(a symlink inside the output?)"
        )
    return target


class PublishedDirectory:
    """An output directory published atomically as a whole.

    ``path`` is a symlink to ``.<name>.versions/<run_id>``. A new version is
    built next to the old one and the link is replaced in one ``rename``, so a
    reader sees the old output or the new one, never a mix; the old version is
    deleted only after the switch (the previous one is kept).
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.versions = self.path.parent / f".{self.path.name}.versions"

    def check_target(self) -> None:
        if self.path.exists() and not self.path.is_symlink() and any(self.path.iterdir()):
            if not (self.path / "_dbatch_owned").exists():
                raise CommitError(
                    f"{str(self.path)!r} exists and was not written by dbatch; "
                    "choose another output path or move it away (dbatch never deletes it)"
                )

    def publish(self, run_id: str, files: Sequence[tuple[str, Path]], manifest: dict) -> Path:
        """Hard-link (or copy) ``files`` as ``name -> source`` into a new version; switch to it."""
        self.check_target()
        if self.versions.is_symlink():
            raise PathEscapeError(
                f"{str(self.versions)!r} is a symbolic link; dbatch writes output versions only "
                "into a real folder next to the output path. Remove the link and run again."
            )
        self.versions.mkdir(parents=True, exist_ok=True)
        final = self.versions / run_id
        building = self.versions / f"{run_id}.building"
        shutil.rmtree(building, ignore_errors=True)
        building.mkdir()
        for i, (name, source) in enumerate(files):
            if Path(source).is_symlink():
                raise PathEscapeError(
                    f"refusing to publish {str(source)!r}: it is a symbolic link, and output is "
                    "only ever built from files dbatch wrote itself"
                )
            dest = safe_join(building, *Path(name).parts, encoded=True)  # names dbatch wrote
            dest.parent.mkdir(parents=True, exist_ok=True)
            if dest.exists():
                # Copying onto it would write through a hard link into a committed batch.
                raise CommitError(
                    f"two parts of run {run_id} would both publish {name!r}; nothing was "
                    "published. File names of a sink's parts must be unique."
                )
            try:
                os.link(source, dest)
            except OSError:  # another file system: copy
                shutil.copy2(source, dest)
            if i == len(files) // 2:
                crash_point("publishing")
        (building / "_manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))
        (building / "_SUCCESS").write_text(f"{run_id}\n")
        _fsync_dir(building)
        if final.exists():
            shutil.rmtree(final)
        os.rename(building, final)
        self._switch(final)
        self._prune(keep={final.name})
        return final

    def _switch(self, target: Path) -> None:
        link = self.path.parent / f".{self.path.name}.link-{os.getpid()}"
        if link.is_symlink() or link.exists():
            link.unlink()
        os.symlink(os.path.relpath(target, self.path.parent), link)
        if self.path.exists() and not self.path.is_symlink():
            # A real directory (an empty one, or one from an older dbatch layout): keep it aside.
            os.rename(self.path, self.versions / f"pre-dbatch-{int(time.time())}")
        os.replace(link, self.path)
        _fsync_dir(self.path.parent)

    def _prune(self, keep: set[str]) -> None:
        """Keep the current and the previous version; remove older ones and leftovers."""
        entries = sorted(
            (p for p in self.versions.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime
        )
        done = [p for p in entries if not p.name.endswith(".building")]
        previous = [p for p in done if p.name not in keep][-1:]
        for p in entries:
            if p.name in keep or p in previous:
                continue
            shutil.rmtree(p, ignore_errors=True)

    def current(self) -> Path | None:
        if self.path.is_symlink():
            return self.path.resolve()
        return None


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
