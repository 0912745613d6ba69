"""Alerts: a run-event listener that posts a finished run to a webhook or pipes it to a command."""

from __future__ import annotations

import json
import logging
import shlex
import socket
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

from ..core import ROW_COUNTS, Event
from ..errors import JobSpecError
from ..listeners import RunListener
from ..options import configure, options_schema, refuse_unknown
from ..redact import scrub_all

__all__ = ["Alert", "ALERT_ON", "alerts_from_config"]

log = logging.getLogger(__name__)

#: What an alert can be sent on: a run's status, ``quarantined`` (this run set
#: batches, rows or files aside) or ``finished`` (every run).
ALERT_ON = (
    "failed",
    "quarantined",
    "succeeded",
    "succeeded_with_quarantine",
    "nothing_to_do",
    "finished",
)

#: The keys of one ``alerts:`` entry in a job file.
_JOB_KEYS = ("on", "webhook", "command", "shell", "timeout", "retries")

_MAX_ERRORS = 20


@dataclass
class _RunNotes:
    started: set[str] = field(default_factory=set)
    batches_quarantined: int = 0
    rows_quarantined: int = 0
    files_quarantined: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class Alert(RunListener):
    """Tell someone when a run finishes with a status in ``on``: a webhook, a command, or both.

    A webhook gets one JSON ``POST`` per matching run (run id, job, status, counts,
    message, errors, dashboard link), with a timeout and ``retries`` more tries
    on a connection error, a timeout, a 5xx or a 429 answer. A command gets the
    same JSON on its standard input; it is split with ``shlex`` and run without a
    shell, unless ``shell=True`` says to run it with ``/bin/sh -c`` (then redirections
    and pipes such as ``cat > run.json`` work; the command line is yours: no value of
    the run is put into it). An alert that cannot be delivered logs a warning and never fails the run;
    the webhook's address appears in logs as scheme, host and port only, so tokens
    in its path, query or user part stay out of them.

    Parameters
    ----------
    on
        Statuses to alert on: ``failed``, ``quarantined`` (this run set batches, rows
        or files aside), ``succeeded``, ``succeeded_with_quarantine``,
        ``nothing_to_do``, or ``finished`` for every run.
    webhook
        An ``http://`` or ``https://`` URL.
    command
        A command line (``"notify-send dbatch"``) or a list of arguments.
    shell
        Run ``command`` (a string) with the shell: an explicit choice, off by default.
    timeout
        Seconds for one webhook request or for the command.
    retries, backoff
        Further webhook attempts, ``backoff * 2**k`` seconds apart.

    Examples
    --------
    >>> alert = Alert(on=["failed", "quarantined"], webhook="https://hooks.example.org/dbatch")
    >>> result = pipeline.run(listeners=[alert])  # doctest: +SKIP
    """

    on: Sequence[str] | str = ("failed",)
    webhook: str | None = field(default=None, repr=False)
    command: str | Sequence[str] | None = field(default=None, repr=False)
    shell: bool = False
    timeout: float = 10.0
    retries: int = 2
    backoff: float = 0.5
    _notes: dict[str, _RunNotes] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    _lock: threading.Lock = field(
        default_factory=threading.Lock, init=False, repr=False, compare=False
    )

    def __post_init__(self):
        on = (self.on,) if isinstance(self.on, str) else tuple(self.on)
        unknown = [str(o) for o in on if o not in ALERT_ON]
        if not on or unknown:
            raise JobSpecError(
                f"unknown alert condition(s) {unknown}; use any of {list(ALERT_ON)}", key="on"
            )
        object.__setattr__(self, "on", on)
        if self.webhook is None and self.command is None:
            raise JobSpecError("give a webhook URL or a command to run", key="webhook")
        if self.webhook is not None:
            parts = urlsplit(str(self.webhook))
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise JobSpecError(
                    "expected an http:// or https:// URL such as https://hooks.example.org/dbatch",
                    key="webhook",
                )
        if not isinstance(self.shell, bool):
            raise JobSpecError(f"expected true or false, got {self.shell!r}", key="shell")
        if self.shell and not isinstance(self.command, str):
            raise JobSpecError(
                "shell: true needs the command as one line of text, such as 'cat > run.json'",
                key="command",
            )
        if self.command is not None:
            args = self._args()
            if not args:
                raise JobSpecError(
                    "expected a command line such as 'notify-send dbatch'", key="command"
                )
        for name in ("timeout", "backoff"):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or value < 0
                or (name == "timeout" and value == 0)
            ):
                raise JobSpecError(
                    f"expected a positive number of seconds, got {value!r}", key=name
                )
        if isinstance(self.retries, bool) or not isinstance(self.retries, int) or self.retries < 0:
            raise JobSpecError(f"expected 0 or more, got {self.retries!r}", key="retries")

    @classmethod
    def from_config(cls, value: Any, *, key: str, file: str | None, base_dir: Path | None) -> Alert:
        """One entry of ``alerts:``; a command's relative program path is from ``base_dir``."""
        if not isinstance(value, Mapping):
            raise JobSpecError(f"expected a mapping such as {_EXAMPLE}", key=key, file=file)
        refuse_unknown(value, _JOB_KEYS, key=key, file=file)
        options = dict(value)
        command = options.get("command")
        if options.get("shell") is True:
            pass  # the shell reads the line itself, from the job file's folder
        elif isinstance(command, str) and command.strip():
            options["command"] = _command_line(command, base_dir)
        elif command is not None and not isinstance(command, list):
            raise JobSpecError(
                "expected a command line such as 'notify-send dbatch'",
                key=f"{key}.command",
                file=file,
            )
        try:
            return cls(**options)
        except JobSpecError as e:
            raise JobSpecError(e.message, key=f"{key}.{e.key}", file=file) from None

    @classmethod
    def job_schema(cls) -> dict[str, Any]:
        """One entry of ``alerts:``: the options ``from_config`` takes, a webhook or a command."""
        schema = options_schema(cls, keys=_JOB_KEYS)
        on = schema["properties"]["on"]
        status = {"enum": [*ALERT_ON]}
        on.pop("type", None)
        on["anyOf"] = [status, {"type": "array", "items": status, "minItems": 1}]
        schema["anyOf"] = [{"required": ["webhook"]}, {"required": ["command"]}]
        return schema

    def __repr__(self) -> str:
        where = []
        if self.webhook is not None:
            where.append(f"webhook={_public(self.webhook)!r}")
        if self.command is not None:
            where.append(f"command={self._args()[0]!r}")
        return f"Alert(on={list(self.on)!r}, {', '.join(where)})"

    def _args(self) -> list[str]:
        if isinstance(self.command, str):
            return shlex.split(self.command)
        return [str(a) for a in self.command or ()]

    # -- the listener ------------------------------------------------------------------

    def __call__(self, event: Event) -> None:
        try:
            super().__call__(event)
        except Exception as e:  # noqa: BLE001 - an alert never breaks a run
            log.warning("dbatch: alert %r failed: %s", self, type(e).__name__)

    def _notes_of(self, run_id: str) -> _RunNotes:
        with self._lock:
            return self._notes.setdefault(run_id, _RunNotes())

    def on_batch_started(self, event: Event) -> None:
        if event.batch_id:
            self._notes_of(event.run_id).started.add(event.batch_id)

    def on_batch_committed(self, event: Event) -> None:
        notes = self._notes_of(event.run_id)
        notes.rows_quarantined += int(event.data.get("rows_quarantined") or 0)
        notes.files_quarantined += int(event.data.get("files_quarantined") or 0)

    def on_batch_quarantined(self, event: Event) -> None:
        notes = self._notes_of(event.run_id)
        if event.batch_id not in notes.started:
            return  # set aside by an earlier run; not news
        notes.batches_quarantined += 1
        self._error(notes, event, "quarantined")

    def on_batch_failed(self, event: Event) -> None:
        self._error(self._notes_of(event.run_id), event, "failed")

    def _error(self, notes: _RunNotes, e: Event, state: str) -> None:
        if len(notes.errors) < _MAX_ERRORS:
            notes.errors.append(
                {
                    "batch_id": e.batch_id,
                    "state": state,
                    "error_class": e.data.get("error_class"),
                    "error_message": str(e.data.get("error_message") or "")[:1000],
                }
            )

    def on_finished(self, event: Event) -> None:
        with self._lock:
            notes = self._notes.pop(event.run_id, None) or _RunNotes()
        matched = self.matches(event.data.get("status", ""), notes)
        if matched:
            self.send(self.payload(event, notes, matched))

    def matches(self, status: str, notes: _RunNotes | None = None) -> list[str]:
        """The conditions in ``on`` a run with this status (and these notes) meets."""
        news = notes is not None and bool(
            notes.batches_quarantined or notes.rows_quarantined or notes.files_quarantined
        )
        return [
            o for o in self.on if o == status or o == "finished" or (o == "quarantined" and news)
        ]

    def payload(self, e: Event, notes: _RunNotes, matched: list[str]) -> dict[str, Any]:
        d = e.data
        return {
            "job": e.job,
            "run_id": e.run_id,
            "status": d.get("status"),
            "on": matched,
            "message": d.get("message", ""),
            "counts": {
                "batches_committed": d.get("committed", 0),
                "batches_skipped": d.get("skipped", 0),
                "batches_quarantined": d.get("quarantined", 0),
                "batches_failed": d.get("failed", 0),
                **{k: d.get(k, 0) for k in ROW_COUNTS},
                "files_quarantined": d.get("files_quarantined", 0),
            },
            "new_quarantine": {
                "batches": notes.batches_quarantined,
                "rows": notes.rows_quarantined,
                "files": notes.files_quarantined,
            },
            "errors": notes.errors,
            "output": d.get("output", ""),
            "dashboard": d.get("dashboard"),
            "host": socket.gethostname(),
            "time": datetime.fromtimestamp(e.time, UTC).isoformat(),
        }

    # -- delivery ----------------------------------------------------------------------

    def send(self, payload: dict[str, Any]) -> bool:
        """Deliver ``payload`` to the webhook and the command; False if any failed (logged)."""
        payload = scrub_all(payload)  # no secret value leaves in an alert
        ok = True
        if self.webhook is not None:
            ok = self._post(payload) and ok
        if self.command is not None:
            ok = self._pipe(payload) and ok
        return ok

    def _post(self, payload: dict[str, Any]) -> bool:
        import requests

        from ..retry import RetryPolicy

        url = str(self.webhook)
        problem = ""
        policy = RetryPolicy(attempts=self.retries + 1, base=self.backoff, cap=60.0)
        for attempt in range(1, self.retries + 2):
            retry = True
            try:
                answer = requests.post(
                    url,
                    json=payload,
                    timeout=self.timeout,
                    headers={"User-Agent": "dbatch-alert"},
                )
            except requests.RequestException as e:
                problem = f"{type(e).__name__}: {_scrub(str(e), url)[:300]}"
            else:
                answer.close()
                if answer.status_code < 400:
                    return True
                problem = f"HTTP {answer.status_code}"
                retry = answer.status_code >= 500 or answer.status_code == 429
            if not retry or attempt > self.retries:
                break
            time.sleep(policy.delay(attempt))
        log.warning(
            "dbatch: alert for run %s of %r not delivered to webhook %s after %d attempt(s): %s; "
            "the run itself is not affected",
            payload.get("run_id"),
            payload.get("job"),
            _public(url),
            attempt,
            problem,
        )
        return False

    def _pipe(self, payload: dict[str, Any]) -> bool:
        args = self._args()
        try:
            done = subprocess.run(  # noqa: S603 - the user's own command; a shell only if asked
                str(self.command) if self.shell else args,
                shell=self.shell,
                input=json.dumps(payload, default=str),
                capture_output=True,
                text=True,
                timeout=self.timeout,
                check=False,
            )
        except (OSError, subprocess.SubprocessError) as e:
            problem = type(e).__name__ + (f" ({e.strerror})" if isinstance(e, OSError) else "")
        else:
            if done.returncode == 0:
                return True
            problem = f"exit status {done.returncode}: {done.stderr.strip()[-300:]}"
        log.warning(
            "dbatch: alert command %r for run %s of %r failed: %s; the run itself is not affected",
            args[0],
            payload.get("run_id"),
            payload.get("job"),
            problem,
        )
        return False


_EXAMPLE = '{on: [failed], webhook: "https://hooks.example.org/dbatch"}'


def alerts_from_config(value: Any, *, file: str | None, base_dir: Path | None) -> tuple[Alert, ...]:
    """A job file's ``alerts:`` (a list of ``{on, webhook | command}``) -> its alerts.

    Examples
    --------
    >>> alerts_from_config([{"on": ["failed"], "command": "notify-send dbatch"}], file=None,
    ...                    base_dir=None)
    (Alert(on=['failed'], command='notify-send'),)
    """
    if value is None:
        return ()
    if not isinstance(value, list):
        raise JobSpecError(f"expected a list such as [{_EXAMPLE}]", key="alerts", file=file)
    return tuple(
        configure(Alert, spec, key=f"alerts[{i}]", file=file, base_dir=base_dir)
        for i, spec in enumerate(value)
    )


def _command_line(command: str, base_dir: Path | None) -> tuple[str, ...]:
    """``command`` split as a shell would; a relative program path is taken from ``base_dir``."""
    args = shlex.split(command)
    if "/" in args[0]:  # a path to a program, not a name looked up on PATH
        program = Path(args[0]).expanduser()
        if not program.is_absolute() and base_dir is not None:
            program = base_dir / program
        args[0] = str(program)
    return tuple(args)


def _public(url: str) -> str:
    """Scheme, host and port of ``url``: what may appear in logs."""
    parts = urlsplit(url)
    port = f":{parts.port}" if parts.port else ""
    rest = "/…" if parts.path.strip("/") or parts.query else ""
    return f"{parts.scheme}://{parts.hostname}{port}{rest}"


def _scrub(text: str, url: str) -> str:
    """``text`` without any secret-bearing part of ``url`` (user, password, path, query)."""
    parts = urlsplit(url)
    secrets = [url, parts.netloc.rpartition("@")[0], parts.password, parts.username, parts.query]
    if parts.path.strip("/"):
        secrets.append(parts.path)
    secrets += [v for _, v in parse_qsl(parts.query, keep_blank_values=False)]
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        for form in {secret, quote(secret, safe="/")}:
            text = text.replace(form, "***")
    return text
