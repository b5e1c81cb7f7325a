"""The machine's rounding as a study axis: torch threads per stage, foreground shares, the
draws that fail and their Clopper-Pearson interval, and a walk that keeps a weak CAM's
background."""

import math
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats

from icam.analysis.robustness import (
    clopper_pearson,
    draws,
    draws_study,
    failure_table,
    varies_threads,
)
from icam.config import TrainConfig, pipeline_config
from icam.data.synthetic import generate
from icam.harness import trial_resources
from icam.inference import cam_argmax_labels, cam_background
from icam.metrics import JFAccumulator
from icam.randomwalk import propagate_labels
from icam.stages.cam import CamStage
from icam.stages.files import trial_key
from icam.stages.scoring import flooded, foreground
from icam.study import Study, expand, parse_value


@pytest.fixture(autouse=True)
def _logdir_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setattr("ray.tune.trainable.trainable.DEFAULT_STORAGE_PATH", str(tmp_path))


@pytest.fixture
def restore_threads():
    saved = torch.get_num_threads()
    yield
    torch.set_num_threads(saved)


@pytest.mark.parametrize("threads", [1, 2])
def test_a_stage_trains_on_the_threads_its_setting_names(threads, tmp_path, restore_threads):
    root = generate(tmp_path / "voc", num_train=16, num_val=4, seed=0, size=(64, 96))
    cfg = pipeline_config("cpu", "icam", seed=0)
    cfg = replace(cfg, cam=replace(cfg.cam, crop=64, resize_long=(64, 96), epochs=2,
                                   threads=threads))
    torch.set_num_threads(3)  # what the stage must not keep: its setup sets its own
    stage = CamStage(config={"pipeline": cfg.to_dict(), "data_root": str(root),
                             "trial_dir": str(tmp_path / "trial"), "cpus": 1})
    seen = []
    train_batch = stage.trainer.train_batch

    def spy(batch):
        seen.append(torch.get_num_threads())
        return train_batch(batch)

    stage.trainer.train_batch = spy
    result = stage.train()
    assert seen == [threads] * result["iteration"] and result["iteration"] == 2
    curve = stage.trainer.loss_curve[-1]
    for term in ("loss_cls", "loss_er", "loss_ecr", "loss_fs", "grad_pre_w", "grad_new_w"):
        assert math.isfinite(curve[term])
    assert curve["grad_new_w"] > 0 and curve["lr_new_w"] > 0


def test_a_trial_asks_for_at_least_its_threads_in_cpus():
    res = {"cpu": 1, "gpu": 0.0, "custom": {}}
    for threads, cpus in ((None, 1), (1, 1), (2, 2), (4, 4)):
        cfg = pipeline_config("cpu", "icam")
        cfg = replace(cfg, cam=replace(cfg.cam, threads=threads))
        request = trial_resources(res, 0.0, "cam")({"pipeline": cfg.to_dict()})
        assert request.required_resources.get("CPU") == cpus


def test_threads_are_validated_and_leave_stored_trial_keys_alone():
    with pytest.raises(ValueError, match="threads"):
        TrainConfig(threads=0)
    with pytest.raises(ValueError, match="threads"):
        parse_value("threads", "1.5")
    cfg = pipeline_config("cpu", "icam")
    unset = replace(cfg, cam=replace(cfg.cam, threads=None))
    assert trial_key(unset) == trial_key(cfg)
    keys = {trial_key(replace(cfg, cam=replace(cfg.cam, threads=t))) for t in (None, 1, 2)}
    assert len(keys) == 3


def test_a_threads_axis_sets_every_stage():
    study = Study(name="x", description="", grid={"method": ["icam"], "threads": [1, 2]})
    trials = expand(study, study.grid, [0, 1], "cpu")
    assert [(t.seed, t.cam.threads, t.affinity.threads, t.final.threads) for t in trials] == [
        (0, 1, 1, 1), (1, 1, 1, 1), (0, 2, 2, 2), (1, 2, 2, 2)]


def _acc(pred, gt) -> JFAccumulator:
    acc = JFAccumulator()
    acc.add(np.array(pred, np.uint8), np.array(gt, np.uint8))
    return acc


def test_foreground_shares_count_non_void_pixels():
    # 8 pixels, 2 void: truth 2 of 6 foreground, prediction 3 of 6 (the void pixel predicted
    # foreground does not count)
    acc = _acc([[0, 1, 1, 1], [0, 0, 3, 0]], [[0, 1, 1, 0], [0, 0, 255, 255]])
    predicted, truth = foreground(acc)
    assert predicted == pytest.approx(100 * 3 / 6) and truth == pytest.approx(100 * 2 / 6)


def test_an_image_is_flooded_when_one_foreground_class_covers_it_over_background():
    gt = [[0, 0], [1, 1]]
    assert flooded(_acc([[2, 2], [2, 2]], gt))
    assert not flooded(_acc([[0, 2], [2, 2]], gt))  # some background left
    assert not flooded(_acc([[0, 0], [0, 0]], gt))  # all background is not a flood
    assert not flooded(_acc([[1, 1], [1, 1]], [[1, 1], [1, 255]]))  # no background in truth


@pytest.mark.parametrize("failed, n", [(0, 20), (1, 10), (3, 10), (10, 10), (2, 40)])
def test_clopper_pearson_solves_its_defining_binomial_equations(failed, n):
    low, high = clopper_pearson(failed, n)
    # the exact interval: P(X >= k | low) = 2.5 % and P(X <= k | high) = 2.5 %
    if failed > 0:
        assert stats.binom.sf(failed - 1, n, low) == pytest.approx(0.025, abs=1e-6)
    else:
        assert low == 0.0
    if failed < n:
        assert stats.binom.cdf(failed, n, high) == pytest.approx(0.025, abs=1e-6)
    else:
        assert high == 1.0
    if (failed, n) == (0, 20):
        assert high == pytest.approx(1 - 0.025 ** (1 / 20))  # the rule of three's exact form
    with pytest.raises(ValueError):
        clopper_pearson(3, 2)


def _frame(rows):
    out = []
    for trial, method, threads, cam, fg, aff, final in rows:
        for stage, j in (("cam", cam), ("affinity", aff), ("final", final)):
            if j is None:
                continue
            for split in ("train", "val"):
                out.append({"study": "robustness", "trial_id": trial, "seed": 0, "stage": stage,
                            "split": split, "J": j, "F": j / 2, "JF": 3 * j / 4,
                            "fg": fg if stage == "cam" else "", "fg_truth": 27.0,
                            "method": method, "threads": threads})
    return pd.DataFrame(out)


def test_draws_fail_by_the_written_definition():
    frame = _frame([
        ("a", "icam", 1, 80.0, 28.0, 85.0, 95.0),  # fine
        ("b", "icam", 2, 82.0, 43.0, 84.0, 90.0),  # 16 points over the truth: CAM fails
        ("c", "icam", 1, 64.9, 30.0, 62.0, 61.0),  # 15.1 below the median (80): CAM fails;
        # AffinityNet 2.9 below it fails; final 1 below AffinityNet holds
        ("d", "icam", 2, 81.0, 41.9, 79.0, None),  # 14.9 over: holds; AffinityNet -2 holds
        ("e", "icam", 1, 79.0, 27.0, None, None),
        ("f", "seam", 1, 40.0, 30.0, 30.0, None),  # seam's own median: AffinityNet fails
    ])
    assert varies_threads(frame) and draws_study("robustness", frame.iloc[:2])
    assert not draws_study("baseline", frame[frame["threads"] == 1])
    table = draws(frame, "val").set_index("trial_id")
    assert list(table["cam_failed"]) == [False, True, True, False, False, False]
    assert table.loc["b", "cam_why"] == "over-covers" and table.loc["c", "cam_why"] == (
        "below median")
    assert list(table["affinity_failed"]) == [False, False, True, False, False, True]
    assert list(table["final_failed"]) == [False, False, False, False, False, False]
    summary = failure_table(table.reset_index()).set_index(["method", "stage"])
    assert summary.loc[("icam", "cam"), ["draws", "failed"]].tolist() == [5, 2]
    assert summary.loc[("icam", "affinity"), ["draws", "failed"]].tolist() == [4, 1]
    assert summary.loc[("icam", "final"), ["draws", "failed"]].tolist() == [3, 0]
    js = [80.0, 82.0, 64.9, 81.0, 79.0]
    assert summary.loc[("icam", "cam"), "J"] == (
        f"{np.mean(js):.1f} ± {np.std(js, ddof=1):.1f}")


def _weak_cam():
    """A 32×32 image, an object in its left 16 columns (class 3). The weak CAM is warm where
    nothing is: 0.9 on the object, 0.6 on the 4 columns beside it (its labels over-cover) and
    0.44 over the rest of the background. The affinities separate object from background (a
    block transition on the 4×4 feature map, stride 8)."""
    truth = np.zeros((32, 32), np.uint8)
    truth[:, :16] = 3
    x = np.arange(32)[None, :].repeat(32, axis=0)
    cam = np.zeros((20, 32, 32), np.float32)
    cam[2] = np.where(x < 16, 0.9, np.where(x < 20, 0.6, 0.44))
    block = torch.arange(16) % 4 < 2  # feature columns 0-1: the object
    a = (block[:, None] == block[None, :]).float()
    return truth, cam, a / a.sum(dim=0, keepdim=True)


def _iou(pred, truth):
    acc = JFAccumulator()
    acc.add(pred, truth)
    return 100 * np.mean([v for v in acc.class_iou() if v is not None])


def test_a_weak_cam_floods_the_walk_without_the_floor_and_keeps_its_j_with_it():
    truth, cam, transition = _weak_cam()
    cam_labels = cam_argmax_labels(cam)  # ICAM's background 1 - 0.44 > 0.44 kept
    # 20 columns called class 3: IoU 16/20 and 12/16, J = (0.8 + 0.75) / 2
    assert _iou(cam_labels, truth) == pytest.approx(77.5)
    # the cpu preset's walk background (1 - 0.44)^2 = 0.31 < 0.44: every pixel one class
    flood = propagate_labels(cam, transition, alpha=2, logt=2)
    assert flooded(_acc(flood, truth)) and _iou(flood, truth) == pytest.approx(25.0)
    walked = propagate_labels(cam, transition, alpha=2, logt=2, floor=cam_background(cam))
    assert not flooded(_acc(walked, truth))
    assert _iou(walked, truth) >= _iou(cam_labels, truth) - 2


def test_the_guard_floors_only_the_image_whose_walk_loses_the_background():
    truth, cam, transition = _weak_cam()
    floored = propagate_labels(cam, transition, alpha=2, logt=2, floor=cam_background(cam))
    guarded = propagate_labels(cam, transition, alpha=2, logt=2, floor=cam_background(cam),
                               keep=0.5)  # the flood keeps none of the CAM labels' background
    np.testing.assert_array_equal(guarded, floored)
    assert _iou(guarded, truth) >= _iou(cam_argmax_labels(cam), truth) - 2


def test_the_guard_lets_the_walk_grow_a_cam_that_under_covers():
    """The object fills the left 16 of 32 columns; its CAM is 0.6 on columns 0-7 and 0.3 on 8-15,
    so ICAM's labels (background 1 - 0.3 = 0.7) cover half of it: J = (8/16 + 16/24) / 2."""
    truth, _, transition = _weak_cam()
    x = np.arange(32)[None, :].repeat(32, axis=0)
    cam = np.zeros((20, 32, 32), np.float32)
    cam[2] = np.where(x < 8, 0.6, np.where(x < 16, 0.3, 0.0))
    assert _iou(cam_argmax_labels(cam), truth) == pytest.approx(100 * (0.5 + 2 / 3) / 2)
    # alone, the walk's background (1 - 0.3)^2 = 0.49 over the object's feature column against
    # 0.3: the object's block averages to 0.45 foreground over 0.325 background and grows
    alone = propagate_labels(cam, transition, alpha=2, logt=2)
    assert _iou(alone, truth) > _iou(cam_argmax_labels(cam), truth) + 10
    # floored, 0.7 over that column: 0.45 foreground under 0.55 background, the object is lost
    floored = propagate_labels(cam, transition, alpha=2, logt=2, floor=cam_background(cam))
    assert not floored.any()
    # the walk alone keeps 19 of the labels' 24 background columns, over half: it stands
    guarded = propagate_labels(cam, transition, alpha=2, logt=2, floor=cam_background(cam),
                               keep=0.5)
    np.testing.assert_array_equal(guarded, alone)
    assert 0.5 < (alone[:, 8:] == 0).mean() < 0.9


def test_with_the_floor_no_pixel_the_cam_labels_call_background_starts_as_foreground():
    rng = np.random.default_rng(0)
    cam = np.zeros((20, 24, 40), np.float32)
    cam[[1, 6, 12]] = rng.random((3, 24, 40)) ** 2
    for background in (None, 0.26):
        for alpha in (1, 2, 6):
            labels = cam_argmax_labels(cam, background)
            start = propagate_labels(cam, torch.eye(24 * 40), alpha=alpha, logt=0, stride=1,
                                     floor=cam_background(cam, background))
            assert not start[labels == 0].any()
            both = (labels > 0) & (start > 0)
            np.testing.assert_array_equal(start[both], labels[both])


def test_warm_up_ramps_the_rate_linearly_then_hands_over_to_poly():
    from icam.stages.trainer import build_optimizer, set_poly_lr

    cfg = replace(pipeline_config().cam, lr=0.1)
    weights = [torch.nn.Parameter(torch.zeros(2)) for _ in range(4)]
    opt = build_optimizer([[w] for w in weights], cfg)
    for iteration, expected in [(0, 0.1 * (1 / 10) * 1.0), (4, 0.1 * 0.5 * (1 - 4 / 100) ** 0.9),
                                (9, 0.1 * (1 - 9 / 100) ** 0.9), (50, 0.1 * 0.5 ** 0.9)]:
        set_poly_lr(opt, iteration, 100, 0.9, warmup=10)
        assert opt.param_groups[0]["lr"] == pytest.approx(expected)
        assert opt.param_groups[3]["lr"] == pytest.approx(20 * expected)  # the classifier's x20


def test_clipping_makes_the_steps_gradient_norm_the_bound():
    from icam.stages import TRAINERS

    torch.manual_seed(0)
    cfg = pipeline_config("cpu", "icam", seed=0)
    cfg = replace(cfg, cam=replace(cfg.cam, backbone="tiny", weights=None, crop=32, batch_size=2,
                                   momentum=0.0, weight_decay=0.0, clip_grad=1e-3,
                                   warmup=0))  # full-rate steps: float32 resolves them
    trainer = TRAINERS["cam"](cfg, max_iterations=10)
    before = [[p.detach().clone() for p in g["params"]] for g in trainer.optimizer.param_groups]
    trainer.train_batch(trainer.random_batch(2))
    # SGD without momentum or decay moves each parameter by -lr_g * g: the step's gradient is
    # the move over the group's rate, and its norm over all groups is the bound
    squared = 0.0
    for olds, group in zip(before, trainer.optimizer.param_groups, strict=True):
        for old, new in zip(olds, group["params"], strict=True):
            squared += float(((old - new.detach()) / group["lr"]).pow(2).sum())
    assert math.sqrt(squared) == pytest.approx(1e-3, rel=1e-3)
    assert math.sqrt(sum(v ** 2 for v in trainer.grad_norms.values())) > 1e-2  # it did clip


def test_warm_up_clipping_and_the_walks_guards_leave_stored_keys_alone_until_set():
    cfg = pipeline_config("cpu", "icam", seed=0)
    # the cpu preset as it was before these settings (and the walk's floor) existed keeps the
    # key its default run was stored under then (commit f96a5b2)
    old = replace(cfg, cam=replace(cfg.cam, warmup=0, clip_grad=None),
                  affinity=replace(cfg.affinity, rw_floor=False, rw_keep=0.0))
    assert trial_key(old) == "icam-s0-5157c82b03"
    assert trial_key(replace(old, cam=replace(old.cam, warmup=74))) != trial_key(old)
    assert trial_key(replace(old, cam=replace(old.cam, clip_grad=5.0))) != trial_key(old)
    assert trial_key(replace(old, affinity=replace(old.affinity, rw_keep=0.5))) != trial_key(old)
    with pytest.raises(ValueError, match="clip_grad"):
        TrainConfig(clip_grad=0)
    with pytest.raises(ValueError, match="warmup"):
        TrainConfig(warmup=-1)
    for bad in (-0.1, 1.5, "half"):
        with pytest.raises(ValueError, match="rw_keep"):
            TrainConfig(rw_keep=bad)
    with pytest.raises(ValueError, match="rw_keep"):  # the floor everywhere leaves no guard
        TrainConfig(rw_floor=True, rw_keep=0.5)
