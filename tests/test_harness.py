"""The study harness: spec validation, GPU packing, trials.csv, and studies through Ray Tune
(local Ray with one logical GPU) on a tiny synthetic set."""

import json
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from icam.config import pipeline_config
from icam.data.synthetic import generate
from icam.data.voc import VOCLayout, load_mask
from icam.evaluate import evaluate_folders
from icam.harness import (
    StudySpec,
    collect_trials,
    gpu_packing,
    run_study,
    stage_resources,
)
from icam.stages.files import trial_key, write_json


def tiny_pipeline(seed: int = 0, **method):
    cfg = pipeline_config("cpu", "icam", seed=seed, **method)
    return replace(
        cfg,
        cam=replace(cfg.cam, crop=64, resize_long=(64, 96), epochs=1, infer_scales=(1.0,)),
        affinity=replace(cfg.affinity, crop=80, epochs=1),
        final=replace(cfg.final, crop=64, iterations=4, steps_per_report=2))


# --- without Ray -------------------------------------------------------------------------------


def test_spec_validates_and_deduplicates():
    a = tiny_pipeline(0)
    spec = StudySpec("s1", [a, a, tiny_pipeline(1)], stages=["cam", "affinity"])
    assert len(spec.trials) == 2 and spec.stages == ("cam", "affinity")
    with pytest.raises(ValueError, match="study name"):
        StudySpec("bad/name", [a])
    with pytest.raises(ValueError, match="trials"):
        StudySpec("s", [])
    with pytest.raises(ValueError, match="prefix"):
        StudySpec("s", [a], stages=("affinity",))


def test_gpu_packing_leaves_headroom():
    gib = 2**30
    assert gpu_packing(10 * gib, 80 * gib) == 0.1666  # floor(0.85 * 80 / 10) = 6 trials
    assert gpu_packing(30 * gib, 80 * gib) == 0.5  # 68 / 30 -> 2
    assert gpu_packing(70 * gib, 80 * gib) == 1.0  # does not fit twice: a whole GPU
    assert gpu_packing(17 * gib, 80 * gib) == 0.25  # 68 / 17 = 4 exactly


def test_stage_resources_shared_or_per_stage():
    assert stage_resources({"cpu": 2, "gpu": 0.5}, "final") == {"cpu": 2, "gpu": 0.5,
                                                                "custom": {}}
    per_stage = {"cam": {"cpu": 4, "gpu": 1}, "final": {"gpu": 0.25, "custom": {"big": 1}}}
    assert stage_resources(per_stage, "cam") == {"cpu": 4, "gpu": 1, "custom": {}}
    assert stage_resources(per_stage, "final") == {"cpu": 1, "gpu": 0.25, "custom": {"big": 1}}
    assert stage_resources(None, "affinity") == {"cpu": 1, "gpu": "auto", "custom": {}}
    with pytest.raises(ValueError, match="cpu"):
        stage_resources({"cpu": 0}, "cam")
    with pytest.raises(ValueError, match="unknown"):
        stage_resources({"gpus": 1}, "cam")
    for bad in ({"node": 0}, {"GPU": 1}, {"node": "1"}):
        with pytest.raises(ValueError, match="custom resource"):
            stage_resources({"custom": bad}, "cam")


def test_trials_csv_rows_from_done_files(tmp_path):
    a, b = tiny_pipeline(0), tiny_pipeline(3, mu=1.5)
    for trial in (a, b):
        write_json(tmp_path / trial_key(trial) / "config.json", trial.to_dict())
    write_json(tmp_path / trial_key(a) / "cam" / "DONE.json",
               {"cam/train/J": 40.0, "cam/train/F": 20.0, "cam/train/JF": 30.0,
                "cam/val/J": 41.0, "cam/val/F": 21.0, "cam/val/JF": 31.0})
    write_json(tmp_path / trial_key(b) / "cam" / "DONE.json",
               {"cam/train/J": 1.0, "cam/train/F": 2.0, "cam/train/JF": 1.5,
                "cam/val/J": 3.0, "cam/val/F": None, "cam/val/JF": None})
    write_json(tmp_path / trial_key(b) / "affinity" / "DONE.json",
               {"affinity/val/J": 50.0, "affinity/val/F": 30.0, "affinity/val/JF": 40.0})
    df = collect_trials("st", tmp_path)
    assert list(df.columns[:8]) == ["study", "trial_id", "seed", "stage", "split", "J", "F",
                                    "JF"]
    assert {"method", "lambda", "pooling", "num_samples", "fsl", "mu", "sigma"} <= set(df)
    assert len(df) == 6
    row = df[(df.trial_id == trial_key(a)) & (df.split == "val")].iloc[0]
    assert (row.stage, row.J, row.F, row.JF, row.seed, row.mu) == ("cam", 41.0, 21.0, 31.0, 0,
                                                                   2.5)
    rows_b = df[df.trial_id == trial_key(b)]
    assert sorted(zip(rows_b.stage, rows_b.split, strict=True)) == [
        ("affinity", "train"), ("affinity", "val"), ("cam", "train"), ("cam", "val")]
    affinity = rows_b[rows_b.stage == "affinity"].set_index("split")
    assert np.isnan(affinity.J["train"]) and affinity.J["val"] == 50.0
    assert set(rows_b.mu) == {1.5} and set(rows_b.seed) == {3}


# --- through Ray Tune --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ray_cluster():
    import ray

    ray.init(num_cpus=4, num_gpus=1, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    return generate(tmp_path_factory.mktemp("data") / "voc", num_train=16, num_val=8,
                    seed=0, size=(64, 96))


@pytest.fixture(scope="module")
def finished_study(ray_cluster, tiny_root, tmp_path_factory):
    storage = tmp_path_factory.mktemp("storage")
    spec = StudySpec("e2e", [tiny_pipeline(0)])
    df = run_study(spec, storage, {"cpu": 2, "gpu": 0.5}, data_root=tiny_root, verbose=0)
    return spec, storage, df


def _miou(pred_dir: Path, gt_dir: Path, ids: list[str]) -> float:
    """mIoU in percent over the classes with a non-empty union, void ignored (by hand)."""
    inter, union = np.zeros(21), np.zeros(21)
    for i in ids:
        pred, gt = load_mask(pred_dir / f"{i}.png"), load_mask(gt_dir / f"{i}.png")
        valid = gt != 255
        for c in range(21):
            p, g = (pred == c) & valid, (gt == c) & valid
            inter[c] += (p & g).sum()
            union[c] += (p | g).sum()
    return 100 * float(np.mean(inter[union > 0] / union[union > 0]))


@pytest.mark.slow
def test_three_stages_write_products_and_trials_csv(finished_study, tiny_root):
    spec, storage, df = finished_study
    csv = pd.read_csv(storage / "e2e" / "trials.csv")
    assert len(csv) == len(df) == 6
    assert sorted(zip(csv.stage, csv.split, strict=True)) == sorted(
        (s, p) for s in ("cam", "affinity", "final") for p in ("train", "val"))
    assert csv[["J", "F", "JF"]].notna().all().all()
    assert ((csv[["J", "F"]] >= 0) & (csv[["J", "F"]] <= 100)).all().all()
    assert np.allclose(csv.JF, (csv.J + csv.F) / 2)
    assert set(csv.trial_id) == {trial_key(spec.trials[0])} and set(csv.study) == {"e2e"}

    layout = VOCLayout(tiny_root)
    train, val = layout.ids("train"), layout.ids("val")
    trial = storage / "e2e" / "artefacts" / trial_key(spec.trials[0])
    names = {f: sorted(p.stem for p in (trial / f).iterdir()) for f in (
        "cam/cams", "affinity/crf", "cam/labels", "affinity/rw", "final/pred")}
    assert names["cam/cams"] == names["cam/labels"] == names["affinity/rw"] == \
        names["final/pred"] == sorted(train + val)
    assert names["affinity/crf"] == sorted(train)

    gt = tiny_root / "SegmentationClass"
    for stage, folder in (("cam", "cam/labels"), ("affinity", "affinity/rw"),
                          ("final", "final/pred")):
        for split, ids in (("train", train), ("val", val)):
            row = csv[(csv.stage == stage) & (csv.split == split)].iloc[0]
            assert row.J == pytest.approx(_miou(trial / folder, gt, ids), abs=1e-6)
            result = evaluate_folders(str(trial / folder), str(gt), ids=ids, workers=1)
            assert row.F == pytest.approx(result["F"], abs=1e-6)


def _tune_rows(study_dir: Path) -> int:
    return sum(len(p.read_text().splitlines()) for p in study_dir.glob("tune/*/*/result.json"))


@pytest.mark.slow
def test_resuming_a_finished_study_trains_nothing(finished_study, tiny_root):
    spec, storage, df = finished_study
    study_dir = storage / "e2e"
    done = sorted(study_dir.glob("artefacts/*/*/DONE.json"))
    assert len(done) == 3
    mtimes = [p.stat().st_mtime_ns for p in done]
    rows, record = _tune_rows(study_dir), (study_dir / "experiments.json").read_text()
    again = run_study(spec, storage, {"cpu": 2, "gpu": 0.5}, data_root=tiny_root, verbose=0)
    assert [p.stat().st_mtime_ns for p in done] == mtimes
    assert _tune_rows(study_dir) == rows
    assert (study_dir / "experiments.json").read_text() == record
    pd.testing.assert_frame_equal(again.reset_index(drop=True), df.reset_index(drop=True))


@pytest.mark.slow
def test_stored_artefacts_are_npz_png_json_csv_and_checkpoints_load_weights_only(
        finished_study):
    _, storage, _ = finished_study
    study_dir = storage / "e2e"
    ours = [p for p in study_dir.rglob("*") if p.is_file() and "tune" not in p.parts]
    assert {p.suffix for p in ours} == {".npz", ".png", ".json", ".csv"}
    for path in ours:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as arrays:
                assert all(arrays[k].dtype != object for k in arrays.files)
    checkpoints = [p for p in study_dir.glob("tune/*/*/checkpoint_*") if p.is_dir()]
    assert checkpoints
    for checkpoint in checkpoints:
        names = {p.name for p in checkpoint.iterdir()}
        assert names <= {"state.pt", "position.json"}
        if "state.pt" in names:
            torch.load(checkpoint / "state.pt", map_location="cpu", weights_only=True)


@pytest.mark.slow
def test_four_trials_share_one_gpu_then_a_widened_grid_runs_only_the_new_one(
        ray_cluster, tiny_root, tmp_path):
    trials = [tiny_pipeline(seed) for seed in range(4)]
    run_study(StudySpec("pack", trials, stages=("cam",)), tmp_path, {"cpu": 1, "gpu": 0.25},
              data_root=tiny_root, verbose=0)
    spans = []
    for result_file in (tmp_path / "pack" / "tune").glob("cam/*/result.json"):
        results = [json.loads(line) for line in result_file.read_text().splitlines()]
        spans.append((results[0]["setup_at"], results[-1]["wall_time"]))
    assert len(spans) == 4
    assert max(s for s, _ in spans) < min(e for _, e in spans)  # all four ran at once

    done = {p: p.stat().st_mtime_ns for p in tmp_path.glob("pack/artefacts/*/cam/DONE.json")}
    assert len(done) == 4
    df = run_study(StudySpec("pack", [*trials, tiny_pipeline(4)], stages=("cam",)), tmp_path,
                   {"cpu": 1, "gpu": 0.25}, data_root=tiny_root, verbose=0)
    assert {p: p.stat().st_mtime_ns for p in done} == done
    record = json.loads((tmp_path / "pack" / "experiments.json").read_text())["cam"]
    assert len(record) == 2
    new = [entry for name, entry in record.items() if name != "cam"]
    assert new[0]["trials"] == [trial_key(tiny_pipeline(4))] and new[0]["gpu"] == 0.25
    assert sorted(df.seed.unique()) == [0, 1, 2, 3, 4] and len(df) == 10
    assert os.path.isfile(tmp_path / "pack" / "trials.csv")
