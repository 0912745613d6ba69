"""The command line: dbatch init | validate | run | plan | resume | replay | backfill | watch | export | status | history | quarantine | unlock | schema | demo."""

from __future__ import annotations

from typing import NoReturn

import click

from .demo import demo
from .inspecting import history, plan, schema, status, unlock
from .logs import log_options
from .quarantine import quarantine
from .running import backfill, replay, resume, run, watch
from .scaffold import init
from .scheduling import export
from .validate import validate

__all__ = ["main", "script"]


@click.group(name="dbatch", context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="dbatch")
@log_options
def main() -> None:
    """Batch jobs on Dask: planned batches, exactly-once output, resume, quarantine.

    Exit status: 0 success, 1 a run that failed, 2 a usage or job file error
    (nothing ran). Results go to standard output; logs, progress and the
    dashboard link to standard error.
    """


for _command in (
    init,
    validate,
    run,
    resume,
    replay,
    backfill,
    watch,
    export,
    plan,
    status,
    history,
    quarantine,
    unlock,
    schema,
    demo,
):
    main.add_command(log_options(_command))  # -v, -q, --log-level after the command too


def script() -> NoReturn:
    """The ``dbatch`` command as a process: ``main``, then an exit without the teardown.

    Once a command has returned (its cluster closed, its ledger written, its result
    printed), tearing down the interpreter's modules (distributed, pyarrow, DuckDB)
    takes 0.3-0.9 s and changes nothing. The exit handlers still run, logs and the
    standard streams are flushed, then the process ends with the command's status.
    While a thread of the command still runs, it exits as usual (waiting for it).
    """
    try:
        main(prog_name="dbatch")
        code: object = 0
    except SystemExit as e:
        code = e.code
    _exit_now(code)


def _exit_now(code: object) -> NoReturn:
    import atexit
    import logging
    import os
    import sys
    import threading

    main_thread = threading.main_thread()
    if any(t.is_alive() and not t.daemon for t in threading.enumerate() if t is not main_thread):
        sys.exit(code)  # type: ignore[arg-type]
    if code is None:
        status = 0
    elif isinstance(code, int):
        status = code
    else:  # sys.exit("message"), as the interpreter prints it
        print(code, file=sys.stderr)
        status = 1
    atexit._run_exitfuncs()
    logging.shutdown()
    tracker = sys.modules.get("multiprocessing.resource_tracker")
    stop_tracker = getattr(getattr(tracker, "_resource_tracker", None), "_stop", None)
    if stop_tracker is not None:
        stop_tracker()  # waited for, so that it does not outlive the command
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing more can be said on it
            pass
    os._exit(status)
