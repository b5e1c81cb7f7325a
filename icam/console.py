"""The console of a run: icam's own lines and one status line; everything else in the log.

`capture(log, verbose)` (entered by `icam.cli.run_guarded` around every command) sends what
other code prints (Ray Tune's reporter, Ray's and Python's log records and warnings) to the
run's log file, and to the console too only when `verbose`. What icam means the user to see
goes through `say` (a permanent line) and `StatusLine` (one line of progress).

A `StatusLine` is drawn with tqdm's meter. On a terminal it is redrawn in place (one line);
otherwise a progress line is printed 10 s after the last line, then after 20 s, 30 s, ... (at
most 60 s apart; none while nothing moved), so a log shows progress in every stage longer than
ten seconds without growing a line every few seconds through a long run.
"""

from __future__ import annotations

import contextlib
import io
import logging
import shutil
import sys
import time
from typing import TextIO

from tqdm import tqdm

PIPE_FIRST_S = 10.0
"""Not on a terminal: the first progress line comes this long after the last line."""

PIPE_MAX_S = 60.0
"""Not on a terminal: progress lines are at most this far apart."""

_console: TextIO | None = None  # the real standard output while `capture` is active
_log: TextIO | None = None


def out() -> TextIO:
    """Where icam's own lines go: the console (standard output before any capture)."""
    return _console or sys.stdout


def is_terminal(stream: TextIO | None = None) -> bool:
    stream = stream or out()
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def say(line: str = "") -> None:
    """A permanent line on the console (above the status line) and in the log."""
    if _status is not None:
        _status.clear()
    stream = out()
    stream.write(line + "\n")
    stream.flush()
    if _log is not None:
        _log.write(line + "\n")
        _log.flush()
    if _status is not None:
        _status.line_printed()


class _Tee(io.TextIOBase):
    """A text stream that writes to the log and, when given, to the console."""

    def __init__(self, log: TextIO, console: TextIO | None):
        self._log, self._console = log, console

    @property
    def encoding(self) -> str:
        return "utf-8"

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self._log.write(text)
        if self._console is not None:
            self._console.write(text)
        return len(text)

    def flush(self) -> None:
        self._log.flush()
        if self._console is not None:
            self._console.flush()

    def isatty(self) -> bool:
        return self._console is not None and is_terminal(self._console)

    def fileno(self) -> int:
        return self._log.fileno()


def _console_handlers() -> list[logging.StreamHandler]:
    """Log handlers that write to the console: Ray's (installed when Ray is imported, holding
    the sys.stderr of that moment) and the root logger's on standard output or error."""
    ray = [logging.getLogger(name) for name in list(logging.Logger.manager.loggerDict)
           if name.split(".")[0] == "ray"]
    handlers = [h for lg in ray for h in lg.handlers]
    handlers += [h for h in logging.getLogger().handlers
                 if getattr(h, "stream", None) in (sys.stdout, sys.stderr)]
    return [h for h in handlers
            if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)]


def _set_stream(handler: logging.StreamHandler, stream) -> None:
    """handler.setStream(stream), also where the old stream is closed (setStream flushes it:
    a handler made under an earlier, finished capture, such as a test's)."""
    try:
        handler.setStream(stream)
    except ValueError:
        handler.stream = stream


@contextlib.contextmanager
def capture(log: TextIO, verbose: bool = False):
    """Within: print(), warnings and Ray's log records go to `log` (and to the console when
    `verbose`); `say` and `StatusLine` write to the console as it was on entry."""
    global _console, _log
    saved = (sys.stdout, sys.stderr, _console, _log)
    _console, _log = sys.stdout, log
    stdout = _Tee(log, sys.stdout if verbose else None)
    stderr = _Tee(log, sys.stderr if verbose else None)
    handlers = {h: h.stream for h in _console_handlers()}
    for handler in handlers:
        _set_stream(handler, stderr)
    sys.stdout, sys.stderr = stdout, stderr
    try:
        yield
    finally:
        close_status()
        for handler in _console_handlers():  # also those made within (Ray imported here)
            if handler.stream in (stdout, stderr):
                _set_stream(handler, handlers.get(handler, saved[1]))
        sys.stdout, sys.stderr, _console, _log = saved


def _text(desc: str, n: int, total: int, elapsed: float, extra: str, initial: int,
          width: int | None) -> str:
    """tqdm's meter: a bar on a terminal of `width` columns, plain counts otherwise."""
    if width is None:
        text = tqdm.format_meter(n, total, elapsed, prefix=desc, initial=initial,
                                 bar_format="{desc}: {n_fmt}/{total_fmt} ({percentage:.0f}%) "
                                 "[{elapsed}<{remaining}, {rate_fmt}]")
        return text + (f"  {extra}" if extra else "")
    text = tqdm.format_meter(n, total, elapsed, ncols=width - 1, prefix=desc, initial=initial,
                             postfix=extra or None)
    return text[:width - 1]


class StatusLine:
    """The single line of progress on the console (see the module's docstring)."""

    def __init__(self) -> None:
        self.terminal = is_terminal()
        self.drawn = False
        self.last_line = time.monotonic()
        self.last_shown: tuple | None = None  # (desc, n) of the last progress line printed
        self.last_text = ""  # on a terminal: the line drawn
        self.gap = PIPE_FIRST_S

    def show(self, desc: str, n: int, total: int, elapsed: float, extra: str = "",
             initial: int = 0) -> None:
        """`n` of `total` done in `elapsed` seconds (`initial` of them before)."""
        stream = out()
        if self.terminal:
            width = shutil.get_terminal_size((100, 20)).columns
            text = _text(desc, n, total, elapsed, extra, initial, width)
            if not self.drawn or text != self.last_text:
                stream.write("\r" + text + "\x1b[K")
                stream.flush()
                self.drawn, self.last_text = True, text
        elif time.monotonic() - self.last_line >= self.gap and (desc, n) != self.last_shown:
            stream.write("  " + _text(desc, n, total, elapsed, extra, initial, None) + "\n")
            stream.flush()
            self.last_line, self.last_shown = time.monotonic(), (desc, n)
            self.gap = min(PIPE_MAX_S, self.gap + PIPE_FIRST_S)

    def clear(self) -> None:
        if self.drawn:
            out().write("\r\x1b[K")
            out().flush()
            self.drawn = False

    def line_printed(self) -> None:
        """A permanent line was printed: the next progress line comes 10 s after it."""
        self.last_line = time.monotonic()
        self.gap = PIPE_FIRST_S


_status: StatusLine | None = None


def status() -> StatusLine:
    """The console's status line (one per process)."""
    global _status
    if _status is None:
        _status = StatusLine()
    return _status


def close_status() -> None:
    global _status
    if _status is not None:
        _status.clear()
    _status = None
