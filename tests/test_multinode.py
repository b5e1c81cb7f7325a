"""A study on a multi-node Ray cluster whose nodes share nothing but object storage.

Three nodes (`ray.cluster_utils.Cluster` on this machine, the head among them), each with its
own custom resource and its own scratch folder (its `ICAM_CACHE`), none of them the storage;
the storage is a bucket on a local S3 server (moto), reached through pyarrow's S3 filesystem
with an endpoint override in the storage URI's query. Each stage of the study is pinned to one
node. The study command runs as its own driver process, as `ray submit` would run it."""

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from fnmatch import fnmatch
from pathlib import Path

import pandas as pd
import pyarrow.fs as pafs
import pytest

from icam.data.synthetic import generate
from icam.storage import Storage

ROOT = Path(__file__).resolve().parents[1]
NODES = ("cam_node", "affinity_node", "final_node")
STAGE_NODE = {"cam": "cam_node", "affinity": "affinity_node", "final": "final_node"}
EPOCHS = 4
"""Epochs of the affinity stage, the one interrupted."""


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    return generate(tmp_path_factory.mktemp("data") / "voc", num_train=12, num_val=4, seed=0,
                    size=(64, 80))


@pytest.fixture(scope="module")
def cluster(s3_server, tmp_path_factory):
    """Three single-CPU nodes (the head among them), one per stage, each with its resource
    and its own scratch folder; yields (cluster, {name: node}, {name: scratch}, add_node)."""
    from ray.cluster_utils import Cluster

    # Ray's files, the cluster's address among them, in a private folder (short: Ray's socket
    # paths), so that no other `ray.init()` on this machine joins this cluster
    temp = tempfile.mkdtemp(prefix="icm", dir="/tmp")
    saved = os.environ.get("RAY_TMPDIR")
    os.environ["RAY_TMPDIR"] = temp
    scratch = {name: tmp_path_factory.mktemp(name) for name in NODES}

    def node_args(name: str) -> dict:
        return {"num_cpus": 1, "resources": {name: 1},
                "env_vars": {"ICAM_CACHE": str(scratch[name])}}

    try:
        cluster = Cluster(initialize_head=True, head_node_args={
            **node_args(NODES[0]), "include_dashboard": False})
        nodes = {NODES[0]: cluster.head_node}

        def add_node(name: str):
            nodes[name] = cluster.add_node(**node_args(name))
            cluster.wait_for_nodes()

        try:
            for name in NODES[1:]:
                add_node(name)
            yield cluster, nodes, scratch, add_node
        finally:
            cluster.shutdown()
    finally:
        if saved is None:
            os.environ.pop("RAY_TMPDIR")
        else:
            os.environ["RAY_TMPDIR"] = saved
        shutil.rmtree(temp, ignore_errors=True)


def study_command(address: str, storage: str, data: Path, mus: str) -> list[str]:
    return [sys.executable, str(ROOT / "studies" / "ablate_mu.py"), "--address", address,
            "--storage", storage, "--data-root", str(data), "--seeds", "1", "--grid",
            f"mu={mus}", "--gpus-per-trial", "0", "--cpus-per-trial", "1",
            *(f"--resource={stage}:{node}=1" for stage, node in STAGE_NODE.items()),
            "--set", "cam.crop=64", "--set", "cam.resize_long=64,80", "--set", "cam.epochs=1",
            "--set", "cam.infer_scales=1.0", "--set", "cam.batch_size=4",
            "--set", "affinity.crop=80", "--set", "affinity.batch_size=4",
            f"--set=affinity.epochs={EPOCHS}", "--set", "final.crop=64",
            "--set", "final.batch_size=4", "--set", "final.iterations=4",
            "--set", "final.steps_per_report=2"]


def driver_env(scratch: Path) -> dict:
    return {**os.environ, "ICAM_CACHE": str(scratch), "PYTHONUNBUFFERED": "1"}


def start_driver(command: list[str], env: dict, log: Path) -> subprocess.Popen:
    with open(log, "w") as out:
        return subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)


def stop_driver(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def run_driver(command: list[str], env: dict, log: Path, timeout: float = 400) -> None:
    """Run the study command to its end; fail with its output's tail otherwise."""
    proc = start_driver(command, env, log)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        pass
    finally:
        stop_driver(proc)
    assert proc.returncode == 0, log.read_text()[-4000:]


def objects(study: Storage, pattern: str) -> dict[str, object]:
    """{path: mtime} of the study's stored files whose path matches the glob `pattern`."""
    infos = study.filesystem.get_file_info(pafs.FileSelector(study.path(), recursive=True,
                                                             allow_not_found=True))
    base = study.path() + "/"
    names = {info.path.removeprefix(base): info.mtime for info in infos
             if info.type == pafs.FileType.File}
    return {name: mtime for name, mtime in names.items() if fnmatch(name, pattern)}


def result_rows(study: Storage, pattern: str) -> list[dict]:
    """The rows of the one stored result.json matching `pattern` (none while there is none)."""
    paths = list(objects(study, pattern))
    assert len(paths) <= 1, paths
    text = study.read_bytes(paths[0]).decode() if paths else ""
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def checkpoint_recorded(study: Storage, experiment: str) -> bool:
    """Whether the experiment state the Tune driver stored in the bucket names a checkpoint of
    the experiment's trial that is still there. The trial uploads a checkpoint before the
    driver records it, and the driver deletes the previous one before it stores the state that
    names the new one; a restored experiment resumes from the checkpoint its state names."""
    from ray.tune import ExperimentAnalysis

    try:
        analysis = ExperimentAnalysis(study.path(f"tune/{experiment}"),
                                      storage_filesystem=study.filesystem)
    except (FileNotFoundError, ValueError):  # no experiment state stored yet
        return False
    return any(trial.checkpoint is not None and study.filesystem.get_file_info(
        trial.checkpoint.path).type == pafs.FileType.Directory for trial in analysis.trials)


def cached_files(scratch: Path) -> set[str]:
    return {p.relative_to(scratch).as_posix() for p in scratch.rglob("*") if p.is_file()}


@pytest.mark.slow
def test_a_study_on_three_nodes_sharing_only_a_bucket_survives_a_killed_node(
        cluster, s3_server, tiny_root, tmp_path):
    ray_cluster, nodes, scratch, add_node = cluster
    storage = s3_server.bucket("icam-study", prefix="runs")
    study = Storage.open(storage) / "ablate_mu"
    assert "?endpoint_override=" in storage and study.local is None
    command = study_command(ray_cluster.address, storage, tiny_root, "2.5")
    env = driver_env(tmp_path / "driver")

    # 1. the study's stages on three nodes; the affinity node is killed mid-stage, once Tune
    # has stored an epoch's checkpoint and its result (with the experiment's state) in the
    # bucket, and the driver with it
    proc = start_driver(command, env, tmp_path / "first.log")
    try:
        deadline = time.time() + 400
        while not (result_rows(study, "tune/affinity/*/result.json")
                   and checkpoint_recorded(study, "affinity")):
            assert proc.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
            assert time.time() < deadline, "no affinity checkpoint in the bucket"
            time.sleep(0.1)
        ray_cluster.remove_node(nodes["affinity_node"], allow_graceful=False)
    finally:
        stop_driver(proc)
    cam_done = objects(study, "artefacts/*/cam/DONE.json")
    assert len(cam_done) == 1 and not objects(study, "artefacts/*/affinity/DONE.json")
    assert objects(study, "artefacts/*/cam/cams/*.npz")  # products went to the bucket
    assert objects(study, "artefacts/*/affinity/crf/*.npz")
    assert cached_files(scratch["affinity_node"])  # where the affinity trial trained

    # 2. nothing needed is on any node's disk: every scratch folder is emptied, the killed
    # node is replaced by a fresh one, and the same command finishes from the bucket
    for folder in scratch.values():
        shutil.rmtree(folder)
        folder.mkdir()
    add_node("affinity_node")
    run_driver(command, env, tmp_path / "second.log")
    assert objects(study, "artefacts/*/cam/DONE.json") == cam_done  # not redone
    trials = pd.read_csv(io.BytesIO(study.read_bytes("trials.csv")))
    assert len(trials) == 3 * 2 and trials[["J", "F", "JF"]].notna().all().all()
    assert sorted(zip(trials.stage, trials.split, strict=True)) == sorted(
        (stage, split) for stage in STAGE_NODE for split in ("train", "val"))
    assert not trials.duplicated(["trial_id", "stage", "split"]).any()
    assert objects(study, "analysis/*")  # the study's table, uploaded beside trials.csv
    # finished trials keep no training state in the bucket
    assert objects(study, "tune/*/*/checkpoint_*/position.json")
    assert not objects(study, "tune/*/*/checkpoint_*/state.pt")
    # each stage ran on its own node: the training labels of the affinity and final stages
    # were cached on their node's scratch folder only; the driver's stayed empty
    cached = {name: cached_files(folder) for name, folder in scratch.items()}
    assert cached["cam_node"] == set()
    assert cached["affinity_node"] and all("/affinity/crf/" in f for f in cached["affinity_node"])
    assert cached["final_node"] and all("/affinity/rw/" in f for f in cached["final_node"])
    assert not (tmp_path / "driver").exists() or cached_files(tmp_path / "driver") == set()
    # the interrupted trial continued from its checkpoint in the bucket: the process that
    # finished it began after the first epoch
    rows = result_rows(study, "tune/affinity/*/result.json")
    last = [r for r in rows if r["pid"] == rows[-1]["pid"]]
    assert last[-1]["done"] and 1 < last[0]["epoch"]
    assert [r["epoch"] for r in last[:-1]] == list(range(last[0]["epoch"], EPOCHS + 1))
