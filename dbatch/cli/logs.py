"""-v, -q, --log-level and --log-format: what the ``dbatch`` loggers write to standard error.

The options are taken before the command (``dbatch -v run job.yaml``) and after
it (``dbatch run job.yaml -v``). Without them, warnings and errors are written;
``-v`` adds each batch (INFO, the dashboard link included), ``-vv`` everything
(DEBUG, tracebacks too); ``-q`` leaves only errors and hides the progress bar and
the dashboard link. Standard output carries results only.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TextIO, TypeVar

import click

__all__ = ["LogSettings", "log_options", "log_settings", "LEVELS"]

LEVELS = ("debug", "info", "warning", "error", "critical")
_KEY = "dbatch.logging"
_C = TypeVar("_C", bound=Callable[..., Any])
_TEXT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


@dataclass
class LogSettings:
    """The logging options of one command line, wherever they were given."""

    verbose: int = 0
    quiet: int = 0
    level: str | None = None
    format: str = "text"

    @property
    def levelno(self) -> int:
        """``--log-level`` if given, else WARNING moved one step per ``-v`` (down) or ``-q`` (up)."""
        if self.level:
            return int(getattr(logging, self.level.upper()))
        steps = self.verbose - self.quiet
        return max(logging.DEBUG, min(logging.CRITICAL, logging.WARNING - 10 * steps))

    @property
    def shows_progress(self) -> bool:
        """Whether a progress bar and the dashboard link belong on standard error."""
        return self.levelno < logging.ERROR


class _StandardError(logging.StreamHandler):
    """A handler that writes to whatever ``sys.stderr`` is when a record comes."""

    def __init__(self) -> None:
        super().__init__()

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass  # always the current standard error


def log_settings() -> LogSettings:
    """The logging options of the command being run (defaults outside one)."""
    ctx = click.get_current_context(silent=True)
    if ctx is None:
        return LogSettings()
    return ctx.find_root().meta.get(_KEY) or LogSettings()


def _settings(ctx: click.Context) -> LogSettings:
    root = ctx.find_root()
    if _KEY not in root.meta:
        root.meta[_KEY] = LogSettings()
        _install(root)
    return root.meta[_KEY]


def _install(root: click.Context) -> None:
    """Put dbatch's handler on the ``dbatch`` logger; the command's end takes it off again."""
    logger = logging.getLogger("dbatch")
    handler = _StandardError()
    before = (logger.level, logger.propagate)
    logger.addHandler(handler)
    logger.propagate = False
    root.meta[_KEY + ".handler"] = handler

    def restore() -> None:
        logger.removeHandler(handler)
        logger.setLevel(before[0])
        logger.propagate = before[1]

    root.call_on_close(restore)


def _apply(ctx: click.Context) -> None:
    from ..monitor.logs import JsonFormatter

    settings = _settings(ctx)
    handler: logging.Handler = ctx.find_root().meta[_KEY + ".handler"]
    if settings.format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(_TEXT, "%Y-%m-%dT%H:%M:%S"))
    logging.getLogger("dbatch").setLevel(settings.levelno)


def _remember(name: str) -> Callable[[click.Context, click.Parameter, Any], None]:
    def callback(ctx: click.Context, param: click.Parameter, value: Any) -> None:
        settings = _settings(ctx)
        if name in ("verbose", "quiet"):
            setattr(settings, name, getattr(settings, name) + (value or 0))
        elif value is not None:
            setattr(settings, name, value.lower())
        _apply(ctx)

    return callback


def log_options(command: _C) -> _C:
    """Add -v, -q, --log-level and --log-format to a click command or group."""
    for option in (
        click.option(
            "--log-format",
            type=click.Choice(["text", "json"], case_sensitive=False),
            default=None,
            expose_value=False,
            callback=_remember("format"),
            help="Log lines as text (default) or one JSON object per line.",
        ),
        click.option(
            "--log-level",
            type=click.Choice(LEVELS, case_sensitive=False),
            default=None,
            expose_value=False,
            callback=_remember("level"),
            help="Log at this level (overrides -v and -q).",
        ),
        click.option(
            "-q",
            "--quiet",
            count=True,
            expose_value=False,
            callback=_remember("quiet"),
            help="Errors only, no progress bar, no dashboard link (-qq: critical only).",
        ),
        click.option(
            "-v",
            "--verbose",
            count=True,
            expose_value=False,
            callback=_remember("verbose"),
            help="Log each batch (-v: INFO, -vv: DEBUG) on standard error.",
        ),
    ):
        command = option(command)
    return command
