"""Command-line error handling: one clear last line on the console, the traceback in a log.

Every entry point (`python -m icam.pipeline`, `studies/*.py`) runs its work through
`run_guarded`, so bad input ends with exit code 2 and a line that names the problem, and the
full traceback is kept in a log file whose path is printed.
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


def run_guarded(work: Callable[[], int], storage: str | os.PathLike | None, name: str) -> int:
    """Run `work()`; on an error write the traceback to a log and print one line naming it.

    The log is `<storage>/logs/<name>-<time>-<pid>.log` (the temp folder when storage is not a
    writable local folder). KeyboardInterrupt is reported the same way (what finished is kept;
    re-run to resume).
    """
    try:
        return work()
    except KeyboardInterrupt:
        log = _write_log(storage, name)
        print(f"\ninterrupted: finished work is kept; run the same command to resume "
              f"(log: {log})", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - every error ends in one line + a log
        log = _write_log(storage, name)
        print(f"error: {describe(err)} (traceback: {log})", file=sys.stderr)
        return 2


def _write_log(storage: str | os.PathLike | None, name: str) -> Path:
    """The traceback being handled, in a new log file; returns its path."""
    log = _log_dir(storage) / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    log.write_text(traceback.format_exc())
    return log
