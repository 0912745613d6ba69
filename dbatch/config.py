"""The ``dbatch`` namespace of ``dask.config``, with the packaged defaults."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import dask.config
import yaml

__all__ = ["get", "workdir", "parse_bytes", "parse_timedelta"]

_defaults_file = Path(__file__).with_name("dbatch.yaml")
with _defaults_file.open() as f:
    _defaults = yaml.safe_load(f)

dask.config.update_defaults(_defaults)


def get(key: str, default: Any = None) -> Any:
    """Read ``dbatch.<key>`` at call time (environment variables included)."""
    return dask.config.get(f"dbatch.{key}", default=default)


def workdir(base: str | os.PathLike | None = None) -> Path:
    """The work area, resolved against ``base`` (a job file's folder) or the cwd."""
    path = Path(os.path.expanduser(str(get("workdir"))))
    if not path.is_absolute():
        path = Path(base or os.getcwd()) / path
    return path


def parse_bytes(value: int | str) -> int:
    """``'256MiB'`` -> ``268435456``; integers pass through."""
    if isinstance(value, int):
        return value
    from dask.utils import parse_bytes as _parse

    return int(_parse(str(value)))


def parse_timedelta(value: float | int | str) -> float:
    """``'10m'`` -> ``600.0`` seconds; numbers are seconds."""
    from dask.utils import parse_timedelta as _parse

    return float(_parse(value, default="seconds"))
