"""The console: icam's lines and one status line on it, everything else in the log; progress
from a Ray worker shown by the driver."""

import io
import logging
import sys
import time

import pytest
from test_reliability import ray_env  # noqa: F401 - a fixture: a private Ray temp folder

from icam import console, progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def clock(monkeypatch):
    console.close_status()
    now = [1000.0]
    monkeypatch.setattr(console.time, "monotonic", lambda: now[0])
    yield now
    console.close_status()


def test_status_line_in_a_pipe_comes_10_s_after_the_last_line_then_less_often(capsys, clock):
    status = console.StatusLine()
    for t in range(201):
        clock[0] = 1000.0 + t
        status.show("cam t training", t, 400, elapsed=t)
    lines = capsys.readouterr().out.splitlines()
    # after 10 s, then 20, 30, 40, 50 s later (at most 60): elapsed 10, 30, 60, 100, 150
    assert [line.split("[")[1][:5] for line in lines] == ["00:10", "00:30", "01:00", "01:40",
                                                          "02:30"]
    assert lines[0] == "  cam t training: 10/400 (2%) [00:10<06:30,  1.00it/s]"
    console._status = status
    console.say("affinity t started")  # a permanent line: the next progress line 10 s later
    for t in range(201, 212):
        clock[0] = 1000.0 + t
        status.show("affinity t CRF labels", t - 200, 50, elapsed=t - 200)
    assert capsys.readouterr().out.splitlines() == [
        "affinity t started", "  affinity t CRF labels: 10/50 (20%) [00:10<00:40,  1.00it/s]"]
    for t in range(212, 300):  # stalled: nothing new to say
        clock[0] = 1000.0 + t
        status.show("affinity t CRF labels", 10, 50, elapsed=t - 200)
    assert capsys.readouterr().out == ""


def test_status_line_on_a_terminal_is_one_line_redrawn(monkeypatch, clock):
    terminal = Terminal()
    monkeypatch.setattr(sys, "stdout", terminal)
    status = console.status()
    for n in range(1, 6):
        status.show("final t training", n, 10, elapsed=n)
    text = terminal.getvalue()
    assert "\n" not in text and text.count("\r") == 5
    last = text.rsplit("\r", 1)[1]
    assert "final t training:  50%" in last and "| 5/10 [00:05<00:05,  1.00it/s]" in last
    console.say("final t done")
    assert terminal.getvalue().endswith("\r\x1b[Kfinal t done\n")


@pytest.mark.parametrize("verbose", [False, True])
def test_capture_keeps_other_output_in_the_log(capsys, verbose):
    import ray  # noqa: F401 - Ray's own log handler is installed on import

    log = io.StringIO()
    with console.capture(log, verbose=verbose):
        print("Trial status: 1 RUNNING")
        logging.getLogger("ray.tune").warning("a Ray warning")
        print("a library's message", file=sys.stderr)
        console.say("cam      t  started")
    captured = capsys.readouterr()
    for text in ("Trial status: 1 RUNNING", "a Ray warning", "a library's message",
                 "cam      t  started"):
        assert text in log.getvalue()
    shown = captured.out + captured.err
    assert "cam      t  started" in captured.out
    for text in ("Trial status", "a Ray warning", "a library's message"):
        assert (text in shown) == verbose
    print("after")  # the console is back
    assert capsys.readouterr().out == "after\n"


@pytest.fixture
def local_ray():
    import ray

    ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_progress_of_a_ray_worker_reaches_the_driver(local_ray, monkeypatch):
    terminal = Terminal()
    monkeypatch.setattr(sys, "stdout", terminal)
    console.close_status()
    board = progress.open_board()

    @local_ray.remote(num_cpus=0)
    class Trial:
        def run(self, n: int) -> None:
            import time

            from icam import progress

            progress.attach("cam t1")
            bar = progress.task("training", 10)  # sent at once: the board knows the task
            time.sleep(progress.SEND_EVERY_S)
            bar.update(n)  # a second later: sent too

    trial = Trial.remote()
    local_ray.get(trial.run.remote(3))
    deadline = time.monotonic() + 20
    while not local_ray.get(board.snapshot.remote()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert local_ray.get(board.snapshot.remote())["cam t1"]["n"] == 3
    while "training" not in terminal.getvalue() and time.monotonic() < deadline:
        progress._polled = 0.0
        progress.show_board()  # asks for the board, shows what it answered at the last call
        time.sleep(0.05)
    text = terminal.getvalue()
    assert text.startswith("cam      t1  started\n")  # announced by its first task
    assert "cam t1 training:  30%" in text and "3/10" in text
    progress.finish("cam t1", "done in {elapsed}", seconds=75)
    assert terminal.getvalue().endswith("\r\x1b[Kcam      t1  done in 1:15\n")
    assert local_ray.get(board.snapshot.remote()) == {}
    console.close_status()


def test_result_line():
    result = {"cam/val/J": 45.06, "cam/val/F": 20.34, "cam/train/J": 50.0, "cam/train/F": 22.0}
    assert progress.result_line("cam", result) == "val J 45.1 F 20.3 (train J 50.0 F 22.0)"
    assert progress.result_line("final", result) == ""


@pytest.mark.slow
def test_ctrl_c_ends_the_run_in_one_line(tmp_path, ray_env):  # noqa: F811
    """Ctrl-C in a stage: Tune stops its trials and saves its state; the command stops there
    (no next stage) and says, in one line, that the finished work is kept."""
    import os
    import signal
    import subprocess

    from icam.data.synthetic import generate

    data = generate(tmp_path / "voc", num_train=16, num_val=4, seed=0, size=(64, 80))
    storage = tmp_path / "results"
    proc = subprocess.Popen([sys.executable, "-m", "icam.pipeline", "--data-root", str(data),
                             "--storage", str(storage), "--cpus-per-trial", "1"],
                            env=ray_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    deadline = time.monotonic() + 240
    while not any(p.stat().st_size for p in storage.glob("pipeline/tune/cam/*/result.json")):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGINT)  # as a terminal's Ctrl-C: the whole process group
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, out + err
    assert err.strip().splitlines()[-1].startswith("interrupted: finished work is kept; run the "
                                                   "same command to resume (log: ")
    assert "Traceback" not in out + err and "error:" not in out + err
    assert "affinity" not in out  # stopped in the CAM stage
    assert "cam      " in out and "started" in out
