"""Nothing lost: a killed worker, a killed driver, a non-finite loss, bad input through the
command lines, and determinism. Each test proves one guarantee of docs/reliability.md
(the README links it), on a tiny synthetic set with the cpu preset cut down to seconds."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
import torch

from icam.config import pipeline_config
from icam.data.synthetic import generate
from icam.harness import StudyError, StudySpec, run_study, study_paths, write_trials_csv
from icam.stages import AffinityStage, CamStage, FinalStage
from icam.stages.files import trial_key, write_json

ROOT = Path(__file__).resolve().parents[1]


def tiny_pipeline(seed: int = 0, cam_epochs: int = 2, **method):
    """The cpu preset with tiny crops and few iterations (one torch thread per trial)."""
    cfg = pipeline_config("cpu", "icam", seed=seed, **method)
    return replace(
        cfg,
        cam=replace(cfg.cam, crop=64, resize_long=(64, 96), epochs=cam_epochs, batch_size=4,
                    infer_scales=(1.0,)),
        affinity=replace(cfg.affinity, crop=80, epochs=1, batch_size=4),
        final=replace(cfg.final, crop=64, iterations=4, steps_per_report=2, batch_size=4))


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    return generate(tmp_path_factory.mktemp("data") / "voc", num_train=16, num_val=4, seed=0,
                    size=(64, 80))


@pytest.fixture(scope="module")
def ray_cluster():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture
def one_thread():
    """Trials run with one torch thread (config "cpus"); so do in-process runs compared with
    them. The test process gets its thread count back afterwards."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _logdir_in_tmp(tmp_path, monkeypatch):
    """Trainables run outside Tune make a log folder; keep it out of ~/ray_results."""
    monkeypatch.setattr("ray.tune.trainable.trainable.DEFAULT_STORAGE_PATH", str(tmp_path))


def run_stages(config, root: Path, trial_dir: Path,
               stages=(CamStage, AffinityStage, FinalStage)) -> list[dict]:
    """The stages' trainables in this process, without Ray: every result, in order."""
    results = []
    for cls in stages:
        stage = cls(config={"pipeline": config.to_dict(), "data_root": str(root),
                            "trial_dir": str(trial_dir), "cpus": 1})
        result = {"done": False}
        while not result["done"]:
            result = stage.train()
            results.append(result)
    return results


def metrics_of(results: list[dict]) -> dict:
    """Every reported J, F and J&F (`<stage>/<split>/<J|F|JF>`)."""
    return {k: v for r in results for k, v in r.items()
            if k.count("/") == 2 and k.rsplit("/", 1)[1] in ("J", "F", "JF")}


def result_rows(trial_dir: Path) -> list[dict]:
    path = trial_dir / "result.json"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# --- 1. a worker killed mid-epoch --------------------------------------------------------------


def _kill_worker_mid_epoch(experiment: Path, killed: dict) -> None:
    """Once the first epoch's checkpoint is stored whole, SIGKILL the trial's worker during the
    second epoch (its pid from result.json); record what had been reported by then."""
    deadline = time.time() + 120
    while time.time() < deadline:
        for checkpoint in experiment.glob("*/checkpoint_000000/position.json"):
            rows = result_rows(checkpoint.parent.parent)
            if rows:
                killed.update(pid=rows[-1]["pid"], rows=len(rows))
                os.kill(killed["pid"], signal.SIGKILL)
                return
        time.sleep(0.02)


@pytest.mark.slow
def test_a_worker_killed_mid_epoch_resumes_from_its_checkpoint_and_reports_each_epoch_once(
        ray_cluster, tiny_root, tmp_path, one_thread):
    config = tiny_pipeline(cam_epochs=4)
    config = replace(config, cam=replace(config.cam, batch_size=2))  # 8 iterations an epoch
    killed: dict = {}
    watcher = threading.Thread(target=_kill_worker_mid_epoch,
                               args=(tmp_path / "worker" / "tune" / "cam", killed))
    watcher.start()
    df = run_study(StudySpec("worker", [config], stages=("cam",)), tmp_path,
                   {"cpu": 1, "gpu": 0}, data_root=tiny_root, verbose=0)
    watcher.join()
    assert killed.get("rows") == 1  # killed after epoch 1's checkpoint, before epoch 2's report

    rows = result_rows(tmp_path / "worker" / "tune" / "cam" / trial_key(config))
    assert [r["training_iteration"] for r in rows] == [1, 2, 3, 4, 5]
    assert [r.get("epoch") for r in rows[:-1]] == [1, 2, 3, 4]  # the last row: the products
    assert [r.get("iteration") for r in rows[:-1]] == [8, 16, 24, 32]
    assert rows[0]["pid"] == killed["pid"]
    assert all(r["pid"] != killed["pid"] for r in rows[1:])  # a new worker did the rest
    assert len(df) == 2 and df[["J", "F"]].notna().all().all()

    # the resumed trial trained exactly as one that was never interrupted
    direct = run_stages(config, tiny_root, tmp_path / "direct", stages=(CamStage,))
    assert [r["loss"] for r in rows[:-1]] == [r["loss"] for r in direct[:-1]]
    assert metrics_of(rows) == metrics_of(direct)


# --- 2. a driver killed midway -----------------------------------------------------------------


def _study_command(data: Path, storage: Path) -> list[str]:
    return [sys.executable, str(ROOT / "studies" / "ablate_mu.py"), "--data-root", str(data),
            "--storage", str(storage), "--seeds", "1", "--grid", "mu=1,2.5",
            "--stages", "affinity", "--gpus-per-trial", "0", "--cpus-per-trial", "1",
            "--set", "cam.crop=64", "--set", "cam.resize_long=64,96", "--set", "cam.epochs=1",
            "--set", "cam.infer_scales=1.0", "--set", "cam.batch_size=4",
            "--set", "affinity.crop=80", "--set", "affinity.batch_size=4",
            "--set", "affinity.epochs=4"]


@pytest.fixture
def ray_env():
    """Environment for a command that starts its own Ray: a private temp folder (short, for
    Ray's sockets), so its processes can be found and nothing else is touched."""
    folder = tempfile.mkdtemp(prefix="icr", dir="/tmp")
    yield {**os.environ, "RAY_TMPDIR": folder, "PYTHONUNBUFFERED": "1"}
    shutil.rmtree(folder, ignore_errors=True)


def _processes_using(folder: str) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and folder.encode() in (proc / "cmdline").read_bytes():
                pids.append(int(proc.name))
        except OSError:
            pass
    return pids


def _kill_group_when(proc: subprocess.Popen, ready, timeout: float = 240) -> None:
    """SIGKILL the command's whole process group once `ready()` holds."""
    deadline = time.time() + timeout
    while not ready():
        assert proc.poll() is None, "the command ended before it could be killed"
        assert time.time() < deadline, "timed out waiting to kill the command"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def checkpoints_named(experiment: Path) -> dict[str, Path | None]:
    """For each trial of a Tune experiment, the checkpoint folder the experiment state its
    driver stored names, or None (a restored trial resumes from it; one that names none starts
    over)."""
    from ray.tune import ExperimentAnalysis

    try:
        analysis = ExperimentAnalysis(str(experiment))
    except (FileNotFoundError, ValueError):  # no experiment state stored yet
        return {}
    return {Path(t.path).name: t.checkpoint and Path(t.checkpoint.path) for t in analysis.trials}


@pytest.mark.slow
@pytest.mark.parametrize("checkpoints_lost", [False, True])
def test_a_killed_driver_resumes_with_the_same_command(tiny_root, tmp_path, ray_env,
                                                       checkpoints_lost):
    """With `checkpoints_lost`, the stored experiment names checkpoints that are gone (as when
    a driver dies after Tune replaced a checkpoint and before it stored the experiment's state):
    the rerun's restore fails, the trials are trained afresh, and the command succeeds."""
    study = tmp_path / "results" / "ablate_mu"
    command = _study_command(tiny_root, tmp_path / "results")

    def affinity_checkpointed() -> bool:
        return (len(list(study.glob("artefacts/*/cam/DONE.json"))) == 2 and any(
            len(result_rows(p.parent)) >= 2 for p in study.glob("tune/affinity/*/result.json"))
            and (not checkpoints_lost or any(checkpoints_named(study / "tune" / "affinity")
                                             .values())))

    with open(tmp_path / "first.log", "w") as log:
        proc = subprocess.Popen(command, env=ray_env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            _kill_group_when(proc, affinity_checkpointed)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
    time.sleep(1)
    stray = _processes_using(ray_env["RAY_TMPDIR"])
    for pid in stray:
        os.kill(pid, signal.SIGKILL)
    assert stray == [], "Ray processes outlived the killed driver"

    cam_done = {p: p.stat().st_mtime_ns for p in study.glob("artefacts/*/cam/DONE.json")}
    cam_results = {p: p.read_bytes() for p in study.glob("tune/cam/*/result.json")}
    before = {p.parent.name: result_rows(p.parent)
              for p in study.glob("tune/affinity/*/result.json")}
    # the training iteration of each trial's newest checkpoint on disk (checkpoint_<n>: n + 1)
    newest = {key: max((int(c.name.split("_")[1]) + 1
                        for c in (study / "tune" / "affinity" / key).glob("checkpoint_*")),
                       default=0) for key in before}
    assert not list(study.glob("artefacts/*/affinity/DONE.json"))
    named = checkpoints_named(study / "tune" / "affinity")
    if checkpoints_lost:
        lost = list(study.glob("tune/affinity/*/checkpoint_*"))
        assert lost
        for folder in lost:
            shutil.rmtree(folder)
    # the checkpoints the stored state names that are not on disk: the ones removed above, or
    # (without them removed) one Tune replaced after the driver last stored its state
    gone = {key: path is not None and not path.exists() for key, path in named.items()}

    rerun = subprocess.run(command, env=ray_env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    # finished stages are kept as they were, not trained again
    assert {p: p.stat().st_mtime_ns for p in cam_done} == cam_done
    assert {p: p.read_bytes() for p in cam_results} == cam_results
    # an interrupted trial continues from its checkpoint to the last epoch, not from scratch
    # (the epoch reported just before the kill may be reported again; the rows Tune had not
    # yet copied to the study's folder when the driver died, up to its newest checkpoint, are
    # missing from result.json)
    for key, rows_before in before.items():
        rows = result_rows(study / "tune" / "affinity" / key)
        if gone.get(key):
            # its restore fails on the missing checkpoint: trained afresh, in a new experiment
            (fresh,) = study.glob(f"tune/affinity-*/{key}")
            rows = result_rows(fresh)
            assert [r["epoch"] for r in rows if not r["done"]] == [1, 2, 3, 4], rerun.stdout
            assert rows[-1]["done"]
            continue
        if checkpoints_lost:  # its stored state named no checkpoint: restored, from epoch 1
            resumed = [r for r in rows if r["pid"] not in {b["pid"] for b in rows_before}]
            assert [r["epoch"] for r in resumed if not r["done"]] == [1, 2, 3, 4], rerun.stdout
            assert rows[-1]["done"]
            continue
        assert rows[-1]["done"]
        resumed = [r for r in rows if r["pid"] not in {b["pid"] for b in rows_before}]
        if len(rows_before) >= 2:  # it had a checkpoint: the rerun starts after one of them
            last = max(rows_before[-1]["training_iteration"], newest[key])
            assert 2 <= resumed[0]["training_iteration"] <= last + 1
        # from there, every epoch to the last: the epochs of the rows kept before the kill,
        # those up to the newest checkpoint, and the rerun's leave no gap
        trained = {r["epoch"] for r in rows_before + resumed if not r["done"]}
        assert trained | set(range(1, newest[key] + 1)) == set(range(1, 5))
    trials = pd.read_csv(study / "trials.csv")
    assert len(trials) == 2 * 2 * 2  # trials x stages x splits
    assert not trials.duplicated(["trial_id", "stage", "split"]).any()
    assert trials[["J", "F", "JF"]].notna().all().all()


# --- 3. a non-finite loss ----------------------------------------------------------------------


@pytest.mark.slow
def test_a_diverging_trial_stops_with_an_error_naming_trial_iteration_and_output(
        ray_cluster, tiny_root, tmp_path):
    config = tiny_pipeline()
    config = replace(config, cam=replace(config.cam, lr=1e12))
    with pytest.raises(StudyError) as err:
        run_study(StudySpec("nan", [config], stages=("cam",)), tmp_path, {"cpu": 1, "gpu": 0},
                  data_root=tiny_root, verbose=0, max_failures=0)  # a retry fails the same
    first = str(err.value).splitlines()[0]
    assert first.startswith("1 of 1 trials did not finish; cam ")
    assert f"FloatingPointError: trial {trial_key(config)}: non-finite cam " in first
    # iteration 1 runs the pretrained weights (finite); at lr 1e12 the weights overflow float32
    # within a few updates, and the first non-finite output stops it before its losses (how
    # many updates depends on the gradients' size: 2 with the siamese view at 0.3, 3 at 0.5)
    found = re.search(r"model output '(logits|rv)' at iteration (\d+), before its losses", first)
    assert found and 2 <= int(found.group(2)) <= 5, first
    assert result_rows(tmp_path / "nan" / "tune" / "cam" / trial_key(config)) == []
    assert not (tmp_path / "nan" / "artefacts" / trial_key(config) / "cam" / "DONE.json").exists()


# --- 4. determinism ----------------------------------------------------------------------------


def test_the_same_seed_gives_identical_metrics_and_another_seed_different_ones(
        tiny_root, tmp_path, one_thread):
    first = metrics_of(run_stages(tiny_pipeline(seed=3), tiny_root, tmp_path / "a"))
    again = metrics_of(run_stages(tiny_pipeline(seed=3), tiny_root, tmp_path / "b"))
    other = metrics_of(run_stages(tiny_pipeline(seed=4), tiny_root, tmp_path / "c"))
    assert len(first) == 3 * 2 * 3  # stages x splits x (J, F, JF)
    assert first == again  # exactly, to the last digit
    assert first != other
    assert first["cam/train/J"] != other["cam/train/J"]


# --- 5. bad input through the command lines ----------------------------------------------------


def _earlier_results(storage: Path, study: str) -> dict[Path, bytes]:
    """A finished earlier trial of `study` and its trials.csv; returns every file's bytes."""
    earlier = pipeline_config("cpu", "icam", seed=7)
    trial = storage / study / "artefacts" / trial_key(earlier)
    write_json(trial / "config.json", earlier.to_dict())
    write_json(trial / "cam" / "DONE.json", {f"cam/{split}/{m}": 10.0 for split in
                                             ("train", "val") for m in ("J", "F", "JF")})
    write_trials_csv(study, study_paths(storage, study))
    return {p: p.read_bytes() for p in (storage / study).rglob("*") if p.is_file()}


def _check_one_line_error(proc: subprocess.CompletedProcess, *words: str) -> str:
    """Exit 2, no traceback anywhere on the console, a last line naming the problem and the
    log that holds the traceback. Returns the line."""
    console = proc.stdout + proc.stderr
    assert proc.returncode == 2, console[-3000:]
    assert "Traceback" not in console, console[-3000:]
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("error: ")
    for word in words:
        assert word in line
    log = Path(line.rsplit("(traceback: ", 1)[1].rstrip(")"))
    assert log.is_file() and "Traceback" in log.read_text()
    return line


def _voc_copy(root: Path, out: Path) -> Path:
    shutil.copytree(root, out, ignore=shutil.ignore_patterns("icam_labels_*"))
    return out


def _missing_root(tmp_path, root):
    missing = tmp_path / "nowhere"
    return ["--data-root", str(missing)], [str(missing), "does not exist"]


def _list_with_missing_file(tmp_path, root):
    data = _voc_copy(root, tmp_path / "voc")
    listing = data / "ImageSets" / "Segmentation" / "train.txt"
    count = len(listing.read_text().split())
    listing.write_text(listing.read_text() + "ghost_0042\n")
    return ["--data-root", str(data)], [str(listing), f"line {count + 1}", "ghost_0042.jpg"]


def _unwritable_storage(tmp_path, root):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    return (["--data-root", str(root), "--storage", str(blocker / "results")],
            ["storage", str(blocker / "results"), "not writable"])


PIPELINE_CASES = {
    "missing data root": _missing_root,
    "list naming a missing file": _list_with_missing_file,
    "invalid hyperparameter": lambda tmp_path, root: (
        ["--data-root", str(root), "--seed", "-1"], ["seed=-1", "integer >= 0"]),
    "unwritable storage": _unwritable_storage,
}
STUDY_CASES = {
    "missing data root": _missing_root,
    "list naming a missing file": _list_with_missing_file,
    "invalid training setting": lambda tmp_path, root: (
        ["--data-root", str(root), "--set", "cam.lr=-1"], ["lr=-1", "a number > 0"]),
    "invalid grid value": lambda tmp_path, root: (
        ["--data-root", str(root), "--grid", "mu=1,abc"], ["mu='abc'", "not a number"]),
    "unwritable storage": _unwritable_storage,
}
COMMANDS = {"pipeline": [sys.executable, "-m", "icam.pipeline"],
            "ablate_mu": [sys.executable, str(ROOT / "studies" / "ablate_mu.py")]}


@pytest.mark.parametrize("command, case", [("pipeline", c) for c in PIPELINE_CASES] +
                         [("ablate_mu", c) for c in STUDY_CASES])
def test_bad_input_fails_in_one_line_and_keeps_earlier_results(command, case, tiny_root,
                                                                tmp_path, ray_env):
    storage = tmp_path / "results"
    earlier = _earlier_results(storage, command)
    make = (PIPELINE_CASES if command == "pipeline" else STUDY_CASES)[case]
    argv, words = make(tmp_path, tiny_root)
    if "--storage" not in argv:
        argv += ["--storage", str(storage)]
    proc = subprocess.run([*COMMANDS[command], *argv], env=ray_env, capture_output=True,
                          text=True, timeout=120)
    _check_one_line_error(proc, *words)
    assert {p: p.read_bytes() for p in earlier} == earlier


@pytest.mark.slow
def test_a_corrupt_image_fails_the_first_epoch_naming_it(tiny_root, tmp_path, ray_env):
    data = _voc_copy(tiny_root, tmp_path / "voc")
    (data / "JPEGImages" / "train_00005.jpg").write_bytes(b"\xff\xd8 not a JPEG any more")
    storage = tmp_path / "results"
    earlier = _earlier_results(storage, "pipeline")
    proc = subprocess.run([*COMMANDS["pipeline"], "--data-root", str(data), "--storage",
                           str(storage), "--cpus-per-trial", "1", "--gpus-per-trial", "0"],
                          env=ray_env, capture_output=True, text=True, timeout=300)
    line = _check_one_line_error(proc, "train_00005", "cannot read image")
    assert "cam " in line and trial_key(pipeline_config("cpu", "icam", seed=0)) in line
    trial = next((storage / "pipeline" / "tune" / "cam").glob("icam-s0-*"))
    assert result_rows(trial) == []  # failed within the first epoch, which reported nothing
    assert not list(trial.glob("checkpoint_*"))
    assert {p: p.read_bytes() for p in earlier} == earlier
