"""The command lines' console and log: icam's own lines on the console, the rest in a log, and
one clear last line for an error.

Every entry point (`python -m icam.pipeline`, `studies/*.py`) runs its work through
`run_guarded`. The run writes a log, `<storage>/logs/<name>-<time>-<pid>.log`, holding what
other code prints (Ray Tune's reporter, Ray's log records, warnings; on the console too with
`--verbose`, see `icam.console`). Bad input ends with exit code 2 and a line that names the
problem, and the full traceback goes to the log, whose path the line gives.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path


class ReportedError(RuntimeError):
    """An error whose message already says what went wrong and where (shown without its type)."""


EXPECTED = (ValueError, OSError, ReportedError)
"""Errors that mean bad input or a reported failure; anything else is a bug and still gets
the same treatment, with its type named."""


def _log_dir(storage: str | os.PathLike | None) -> Path:
    """`<storage>/logs` when that is a writable local folder, else the system temp folder."""
    if storage is not None and "://" not in str(storage):
        path = Path(storage).expanduser() / "logs"
        try:
            path.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=path):
                pass
            return path
        except OSError:
            pass
    path = Path(tempfile.gettempdir()) / "icam-logs"
    path.mkdir(parents=True, exist_ok=True)
    return path


def describe(err: BaseException) -> str:
    """A one-line description of an error (the first line of its message)."""
    text = str(err).strip().splitlines()
    message = text[0] if text else type(err).__name__
    if isinstance(err, EXPECTED):
        return message
    return f"{type(err).__name__}: {message}"


def log_path(storage: str | os.PathLike | None, name: str) -> Path:
    """A new run's log: `<storage>/logs/<name>-<time>-<pid>.log` (the temp folder when storage
    is not a writable local folder)."""
    return _log_dir(storage) / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"


def run_guarded(work: Callable[[], int], storage: str | os.PathLike | None, name: str,
                verbose: bool = False, log: Path | None = None) -> int:
    """Run `work()` with the console captured into the log `log` (default: a new `log_path`;
    echoed with `verbose`); on an error write the traceback to the log and print one line
    naming it. KeyboardInterrupt is reported the same way (what finished is kept; re-run to
    resume).
    """
    from icam.console import capture

    path = log or log_path(storage, name)
    with open(path, "a", encoding="utf-8", buffering=1) as log:  # line by line: kept on a crash
        with capture(log, verbose):
            try:
                return work()
            except KeyboardInterrupt:
                log.write(traceback.format_exc())
                message, code = ("\ninterrupted: finished work is kept; run the same command "
                                 f"to resume (log: {path})"), 130
            except Exception as err:  # noqa: BLE001 - every error ends in one line + a log
                log.write(traceback.format_exc())
                message, code = f"error: {describe(err)} (traceback: {path})", 2
    print(message, file=sys.stderr)
    return code
