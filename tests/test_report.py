"""The report of a run: report.md and qualitative.png, rendered for a tiny real run, and the
PNG checked as a person would look at it (a grid of drawn panels)."""

import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from test_reliability import run_stages, tiny_pipeline

from icam.config import pipeline_config
from icam.harness import study_paths, write_trials_csv
from icam.report import config_differences, stage_seconds, write_report
from icam.stages.files import trial_key


@pytest.fixture(autouse=True)
def _logdir_in_tmp(tmp_path, monkeypatch):
    """Trainables run outside Tune make a log folder; keep it out of ~/ray_results."""
    monkeypatch.setattr("ray.tune.trainable.trainable.DEFAULT_STORAGE_PATH", str(tmp_path))


def bands(mask: np.ndarray) -> list[tuple[int, int]]:
    """(start, stop) of each run of True."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(int), [0]])))
    return list(zip(edges[::2], edges[1::2], strict=True))


def panel_grid(png) -> tuple[np.ndarray, list, list]:
    """The figure's panels found from its pixels alone: columns and rows where most pixels are
    ink (not the white background); titles and row labels are thin and do not count."""
    pixels = np.asarray(Image.open(png).convert("RGB")).astype(np.int16)
    ink = (pixels < 250).any(axis=2)
    return pixels, bands(ink.mean(axis=0) > 0.5), bands(ink.mean(axis=1) > 0.5)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One tiny trial through the three stages (in this process, no Ray), stored as a study."""
    import torch

    from icam.data.synthetic import generate

    tmp = tmp_path_factory.mktemp("report")
    root = generate(tmp / "voc", num_train=8, num_val=4, seed=0, size=(64, 80))
    config = tiny_pipeline(cam_epochs=1)
    paths = study_paths(tmp / "results", "tiny")
    threads = torch.get_num_threads()  # the trials set one torch thread
    results = run_stages(config, root, paths.artefacts / trial_key(config))
    torch.set_num_threads(threads)
    write_trials_csv("tiny", paths)
    return root, paths, config, results


def test_report_of_a_tiny_run(tiny_run):
    root, paths, config, _ = tiny_run
    report = write_report("tiny", paths.local, root)
    png = paths.local / "qualitative.png"
    assert report.figure == png and (paths.local / "report.md").read_text() == report.markdown

    pixels, columns, rows = panel_grid(png)
    # image, CAM, pseudo-label, AffinityNet label, final prediction, ground truth x 4 images
    assert len(columns) == 6 and len(rows) == 4
    widths = [b - a for a, b in columns]
    heights = [b - a for a, b in rows]
    assert max(widths) - min(widths) <= 2 and max(heights) - min(heights) <= 2
    assert widths[0] >= 60 and heights[0] >= 60  # legible, not thumbnails
    width, height = Image.open(root / "JPEGImages" / "val_00000.jpg").size
    assert widths[0] / heights[0] == pytest.approx(width / height, rel=0.05)  # undistorted
    for r0, r1 in rows:
        panels = [pixels[r0:r1, c0:c1] for c0, c1 in columns]
        for c in (0, 1, 5):  # image, CAM over the image, ground truth (objects + void edge)
            assert panels[c].std() > 5
        for c in (2, 3, 4):  # label maps: drawn in VOC colours, not left white
            assert panels[c].mean() < 240
        assert np.abs(panels[1] - panels[0]).mean() > 10  # the heat map is drawn over it

    md = report.markdown
    done = (paths.artefacts / trial_key(config) / "final").read_json("DONE.json")
    assert (f"| final | val | {done['final/val/J']:.1f} | {done['final/val/F']:.1f} | "
            f"{done['final/val/JF']:.1f} |") in md
    # the tiny run's settings against the cpu preset (crop 128, 20 CAM epochs, 300 iterations)
    for row in ("| cam.crop | 128 | 64 |", "| cam.epochs | 20 | 1 |",
                "| final.iterations | 300 | 4 |"):
        assert row in md
    # beside the paper: Table 3, ICAM's CAMs on VOC val, J 57.2 F 40.8
    table3 = md.split("**Table 3.")[1]
    cams = next(line for line in table3.splitlines() if line.startswith("| CAMs"))
    assert "| 57.2 |" in cams and "| 40.8 |" in cams
    assert "![qualitative](qualitative.png)" in md


def test_each_stage_stores_its_loss_curve_and_the_report_draws_them(tiny_run):
    root, paths, config, results = tiny_run
    trial = paths.local / "artefacts" / trial_key(config)
    curves = {s: pd.read_csv(trial / s / "losses.csv") for s in ("cam", "affinity", "final")}
    # one row per training step: 1 CAM epoch, 1 AffinityNet epoch, 4 final iterations in
    # reports of 2; the same losses Tune received, in order
    assert [len(c) for c in curves.values()] == [1, 1, 2]
    assert curves["final"].iteration.tolist() == [2, 4] and set(curves["final"]["round"]) == {1}
    reported = [r["loss"] for r in results if "loss" in r]
    stored = pd.concat(curves.values()).loss.tolist()
    assert stored == pytest.approx(reported, rel=1e-5)
    report = write_report("tiny", paths.local, root)
    md = report.markdown
    assert "## Training loss" in md and "![training loss](losses.png)" in md
    for stage in ("cam", "affinity", "final"):
        assert f"| {stage} |" in md.split("## Training loss")[1]
    assert Image.open(paths.local / "losses.png").size[0] > 600  # three panels side by side


def test_stage_seconds_sum_each_worker_from_setup_to_last_report(tmp_path):
    study = tmp_path / "s"
    (study / "experiments.json").parent.mkdir(parents=True)
    (study / "experiments.json").write_text(json.dumps(
        {"cam": {"cam": {"trials": ["t1"], "gpu": 0}}}))
    rows = [  # a worker killed after 30 s, a second one that ran 20 s more
        {"pid": 7, "setup_at": 100.0, "wall_time": 110.0},
        {"pid": 7, "setup_at": 100.0, "wall_time": 130.0},
        {"pid": 9, "setup_at": 500.0, "wall_time": 505.0},
        {"pid": 9, "setup_at": 500.0, "wall_time": 520.0},
    ]
    trial = study / "tune" / "cam" / "t1"
    trial.mkdir(parents=True)
    (trial / "result.json").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert stage_seconds(study, str(study / "tune")) == {("t1", "cam"): 50.0}


def test_config_differences_against_each_trials_own_preset():
    a = pipeline_config("cpu", "icam", seed=0, mu=1.0)
    b = pipeline_config("cpu", "seam", seed=1)
    b = replace(b, cam=replace(b.cam, epochs=2))
    assert config_differences([a, b]) == [("cam.epochs", "20", "2"), ("method.mu", "2.5", "1.0")]
    assert config_differences([pipeline_config("paper", "seam", seed=3)]) == []
