"""Progress of a study on the driver's console: a line per stage and trial as it starts and
ends, and a progress bar for the long loops inside a stage, wherever the trial runs.

Stages run inside Ray Tune trials, in worker processes whose output stays off the console. Each
trial sends its progress to a small Ray actor, the board (`open_board`, one per driver), as
(task, done, total, elapsed) at most once a second; the driver's Tune callback
(`icam.harness.TrialConsole`) prints the start and end lines of the trials (`announce`,
`finish`) and shows the board's tasks on the console's status line (`show_board`,
`icam.console`). Ray carries the updates, so this works on any
cluster and with any storage; a worker that finds no board (a trial run without Ray, a
plain function call) shows its own bar instead.

    with task("CAM inference", total=len(ids)) as bar:
        for image_id in ids:
            ...
            bar.update()
"""

from __future__ import annotations

import sys
import time

from icam.console import say, status

BOARD = "icam-progress"
"""The board actor's name (in the driver's namespace, so studies on one cluster stay apart)."""

SEND_EVERY_S = 1.0
"""A worker sends its progress at most this often."""

POLL_EVERY_S = 0.5
"""The driver reads the board at most this often."""

DRAW_EVERY_S = 0.1
"""A loop of this process redraws the status line at most this often."""


class Board:
    """The driver's view of every running task: {owner: state}; a Ray actor."""

    def __init__(self) -> None:
        self.tasks: dict[str, dict] = {}

    def update(self, owner: str, state: dict) -> None:
        self.tasks[owner] = state

    def forget(self, owner: str) -> None:
        self.tasks.pop(owner, None)

    def snapshot(self) -> dict[str, dict]:
        return self.tasks


def _ray():
    """The ray module when this process has initialised Ray (never imports it)."""
    ray = sys.modules.get("ray")
    return ray if ray is not None and ray.is_initialized() else None


_opened: tuple | None = None  # (session, the board): the driver holds the board's handle
_asked = None  # the snapshot of the board asked for and not yet read


def _session(ray) -> tuple[str, str]:
    """This driver's Ray session: its job and node (a job id repeats after a restart)."""
    context = ray.get_runtime_context()
    return context.get_job_id(), context.get_node_id()


def open_board():
    """The driver's board, started on first use in this Ray session (a zero-CPU actor); None
    without Ray. The driver keeps its handle: the board lives as long as the driver."""
    global _opened, _asked
    ray = _ray()
    if ray is None:
        return None
    session = _session(ray)
    if _opened is None or _opened[0] != session:
        _opened = (session, ray.remote(num_cpus=0)(Board).options(name=BOARD).remote())
        _asked = None
    return _opened[1]


_owner: str | None = None
_board = None


def attach(owner: str) -> None:
    """This process's tasks belong to `owner` ("<stage> <trial>"): inside a Ray worker they go
    to the driver's board when one exists, else they are shown here."""
    global _owner, _board
    ray = _ray()
    _owner, _board = owner, None
    if ray is None or ray.get_runtime_context().worker.mode != ray.WORKER_MODE:
        return
    try:
        _board = ray.get_actor(BOARD)
    except ValueError:
        _board = None


def _in_ray_worker() -> bool:
    ray = _ray()
    return ray is not None and ray.get_runtime_context().worker.mode == ray.WORKER_MODE


class Task:
    """A long loop's progress: `update(k)` after each k items; see `task`."""

    def __init__(self, desc: str, total: int, initial: int = 0, enabled: bool = True):
        self.desc, self.total = desc, max(0, int(total))
        self.n = self.initial = int(initial)
        self.start = time.monotonic()
        self.sent = 0.0
        if not enabled:
            self.sink = None
        elif _board is not None:
            self.sink = "board"
        elif _in_ray_worker():
            self.sink = None  # a Ray task or an unattached actor: nobody to show it to
        else:
            self.sink = "console"
        if self.sink == "board":
            self.send()  # the task's name shows before its first item is done

    def update(self, k: int = 1) -> None:
        self.n += k
        now = time.monotonic()
        if self.sink == "console" and now - self.sent >= DRAW_EVERY_S:
            self.sent = now
            status().show(self.label(), self.n, self.total, now - self.start,
                          initial=self.initial)
        elif self.sink == "board" and now - self.sent >= SEND_EVERY_S:
            self.send()

    def label(self) -> str:
        return f"{_owner} {self.desc}" if _owner else self.desc

    def send(self, finished: bool = False) -> None:
        self.sent = time.monotonic()
        state = {"desc": self.desc, "n": self.n, "total": self.total, "initial": self.initial,
                 "elapsed": self.sent - self.start, "finished": finished}
        _board.update.remote(_owner, state)

    def close(self) -> None:
        if self.sink == "board":
            self.send(finished=True)
        elif self.sink == "console":
            status().clear()

    def __enter__(self) -> Task:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def task(desc: str, total: int, initial: int = 0, enabled: bool = True) -> Task:
    """The progress of a loop over `total` items (`initial` already done), shown on the
    driver's console (not at all when not `enabled`); use as a context manager and call
    `update(k)` after each k items."""
    return Task(desc, total, initial, enabled)


# --- the driver ----------------------------------------------------------------------------------


def _minutes(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}"


def result_line(stage: str, result: dict) -> str:
    """"val J 45.1 F 20.3 (train J 50.2 F 22.0)" from a stage's reported metrics."""
    parts = []
    for split in ("val", "train"):
        values = [result.get(f"{stage}/{split}/{m}") for m in ("J", "F")]
        if all(isinstance(v, (int, float)) for v in values):
            parts.append(f"{split} J {values[0]:.1f} F {values[1]:.1f}")
    if len(parts) == 2:
        return f"{parts[0]} ({parts[1]})"
    return parts[0] if parts else ""


_announced: dict[str, float] = {}  # owner -> when its start line was printed
_ended: set[str] = set()  # owners whose end line was printed (a late update is ignored)
_polled = 0.0
_seen: list = [None, 0.0]  # the shown task's last state and when the driver first read it


def _say(owner: str, text: str) -> None:
    stage, _, trial = owner.partition(" ")
    say(f"{stage:<9}{trial}  {text}")


def announce(owner: str) -> None:
    """The start line of `owner` ("<stage> <trial>"), once (its first task may come first:
    Tune reports a trial started only after its setup, which can be long)."""
    if owner not in _announced:
        _ended.discard(owner)
        _announced[owner] = time.monotonic()
        _say(owner, "started")


def finish(owner: str, text: str, ended: bool = True, seconds: float | None = None) -> None:
    """An end line of `owner`; `{elapsed}` in `text` becomes `seconds`, by default the time
    since its start line. `ended`: the trial will not run again (else a retry continues it)."""
    announce(owner)
    started = _announced.pop(owner)
    elapsed = _minutes(time.monotonic() - started if seconds is None else seconds)
    if ended:
        _ended.add(owner)
    board = _driver_board()
    if board is not None:
        board.forget.remote(owner)
    _say(owner, text.format(elapsed=elapsed))


def _driver_board():
    """The board this driver opened for its current Ray session, if any."""
    ray = _ray()
    if ray is None or _opened is None or _opened[0] != _session(ray):
        return None
    return _opened[1]


def show_board() -> None:
    """Draw the board's running tasks on the status line. Never waits: reads the snapshot
    asked for at the last call (at most every POLL_EVERY_S) and asks for the next one."""
    global _polled, _asked, _opened
    now = time.monotonic()
    board = _driver_board()
    if board is None or now - _polled < POLL_EVERY_S:
        return
    _polled = now
    ray = _ray()
    if _asked is None:
        _asked = board.snapshot.remote()
        return
    if not ray.wait([_asked], timeout=0)[0]:
        return
    try:
        tasks = ray.get(_asked)
    except ray.exceptions.RayError:  # the board is gone: the study goes on without progress
        _opened = _asked = None
        return
    _asked = board.snapshot.remote()
    running = sorted((owner, t) for owner, t in tasks.items()
                     if not t["finished"] and owner not in _ended)
    for owner, _ in running:
        announce(owner)
    if not running:
        return
    owner, first = running[0]
    # the worker's elapsed time when it sent this, plus the time since the driver got it
    sent = (owner, first["desc"], first["n"], first["elapsed"])
    if _seen[0] != sent:
        _seen[:] = [sent, now]
    others = "; ".join(f"{o.split(' ', 1)[-1]} {t['desc']} {100 * t['n'] // max(1, t['total'])}%"
                       for o, t in running[1:])
    status().show(f"{owner} {first['desc']}", first["n"], first["total"],
                  first["elapsed"] + now - _seen[1], others, initial=first["initial"])
