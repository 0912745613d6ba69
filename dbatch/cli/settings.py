"""``--set key=value``: Dask (and dbatch) configuration for one command, on the command line."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import click

__all__ = ["set_option", "parse_settings"]


def parse_settings(items: Sequence[str]) -> dict[str, Any]:
    """``["distributed.worker.daemon=false", "dbatch.cluster.n-workers=2"]`` -> a config dict.

    Values are read as YAML (``2`` is a number, ``false`` a boolean, ``[a, b]`` a list);
    a key not in the configuration is set all the same, with a note on standard error
    (it may be a typo).

    Examples
    --------
    >>> parse_settings(["dbatch.cluster.n-workers=2", "distributed.comm.timeouts.connect=30s"])
    {'dbatch.cluster.n-workers': 2, 'distributed.comm.timeouts.connect': '30s'}
    """
    import dask.config

    from ..spec import safe_load

    settings: dict[str, Any] = {}
    missing = object()
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise click.BadParameter(
                f"{item!r} is not KEY=VALUE; write for example --set dbatch.cluster.n-workers=2",
                param_hint="--set",
            )
        try:
            value = safe_load(text) if text.strip() else ""
        except Exception:  # noqa: BLE001 - not YAML: keep the text as it was given
            value = text
        if dask.config.get(key, default=missing) is missing:
            click.echo(f"note: --set {key}: not a known configuration key; set anyway", err=True)
        settings[key] = value
    return settings


def _callback(ctx: click.Context, param: click.Parameter, value: Sequence[str]) -> dict[str, Any]:
    return parse_settings(value)


set_option = click.option(
    "--set",
    "settings",
    multiple=True,
    metavar="KEY=VALUE",
    callback=_callback,
    help="Dask or dbatch configuration for this command (repeatable), applied last: "
    "--set distributed.worker.memory.target=0.7 --set dbatch.cluster.n-workers=2.",
)
