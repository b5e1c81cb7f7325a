"""The stage trainables without Ray: optimiser, schedule, RNG states, NaN guard, and exact
continuation after a checkpoint for each of the three stages (on a tiny synthetic set)."""

import json
import math
import random
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from icam.atomic import atomic_path
from icam.config import pipeline_config
from icam.data.affinity import load_crf_scores
from icam.data.synthetic import generate
from icam.data.voc import VOCLayout, load_mask, save_mask
from icam.inference import load_cam, save_cam
from icam.stages import AffinityStage, CamStage, FinalStage
from icam.stages.files import load_state, save_state, trial_key, write_json
from icam.stages.seeding import capture_rng, derive_seed, restore_rng
from icam.stages.trainer import StageTrainer, build_optimizer, set_poly_lr

# --- optimiser and schedule ----------------------------------------------------------------


def _groups():
    return ([nn.Parameter(torch.ones(2))], [nn.Parameter(torch.ones(1))],
            [nn.Parameter(torch.ones(3))], [nn.Parameter(torch.ones(1))])


def test_optimizer_groups_have_the_reference_multipliers_and_decay():
    cfg = replace(pipeline_config().cam, optimizer="sgd", lr=0.01, weight_decay=5e-4,
                  momentum=0.9)
    opt = build_optimizer(_groups(), cfg)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.01, 0.02, 0.1, 0.2])
    assert [g["weight_decay"] for g in opt.param_groups] == [5e-4, 0.0, 5e-4, 0.0]
    assert all(g["momentum"] == 0.9 for g in opt.param_groups)


def test_first_adam_step_moves_each_group_by_its_lr():
    cfg = replace(pipeline_config().cam, optimizer="adam", lr=0.01, weight_decay=0.0)
    groups = _groups()
    opt = build_optimizer(groups, cfg)
    assert isinstance(opt, torch.optim.Adam)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.0] * 4
    loss = sum((p * torch.arange(1.0, p.numel() + 1)).sum() for g in groups for p in g)
    loss.backward()
    opt.step()
    # Adam's first step is lr_g * sign(grad) (m/sqrt(v) = g/|g|), lr_g = lr * (1, 2, 10, 20)
    for group, mult in zip(groups, (1, 2, 10, 20), strict=True):
        assert group[0].tolist() == pytest.approx([1 - 0.01 * mult] * group[0].numel())


def test_poly_decay_per_iteration():
    cfg = replace(pipeline_config().cam, optimizer="sgd", lr=0.1)
    opt = build_optimizer(_groups(), cfg)
    set_poly_lr(opt, 25, 100, 0.9)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1 * 0.75**0.9)
    assert opt.param_groups[3]["lr"] == pytest.approx(2.0 * 0.75**0.9)
    set_poly_lr(opt, 100, 100, 0.9)
    assert opt.param_groups[2]["lr"] == 0.0


def test_first_sgd_step_with_weight_decay_by_hand():
    cfg = replace(pipeline_config().cam, optimizer="sgd", lr=0.5, weight_decay=0.1,
                  momentum=0.9)
    groups = _groups()
    opt = build_optimizer(groups, cfg)
    loss = sum((p * torch.arange(1.0, p.numel() + 1)).sum() for g in groups for p in g)
    loss.backward()
    opt.step()
    # first step: p - lr_g * (grad + wd_g * p), grad of sum(p * [1, 2, ...]) is [1, 2, ...]
    assert groups[0][0].tolist() == pytest.approx([1 - 0.5 * (1 + 0.1), 1 - 0.5 * (2 + 0.1)])
    assert groups[1][0].tolist() == pytest.approx([1 - 1.0 * 1])
    assert groups[2][0].tolist() == pytest.approx([1 - 5.0 * (k + 0.1) for k in (1, 2, 3)])
    assert groups[3][0].tolist() == pytest.approx([1 - 10.0 * 1])


# --- seeds, random states, files --------------------------------------------------------------


def test_derive_seed_is_deterministic_and_separates_keys():
    assert derive_seed(3, "cam", 1) == derive_seed(3, "cam", 1)
    seeds = {derive_seed(s, stage, e) for s in range(3) for stage in ("cam", "final")
             for e in range(3)}
    assert len(seeds) == 18
    assert all(0 <= s < 2**63 for s in seeds)


def _draws(generator):
    return (torch.rand(3).tolist(), np.random.rand(3).tolist(), np.random.randn(),
            random.random(), random.gauss(0, 1), torch.rand(2, generator=generator).tolist())


def test_rng_states_survive_a_weights_only_round_trip(tmp_path):
    generator = torch.Generator().manual_seed(7)
    np.random.randn()  # leaves a cached Gaussian in numpy's state
    random.gauss(0, 1)
    save_state(tmp_path / "rng.pt", capture_rng(generator))
    first = _draws(generator)
    torch.manual_seed(123)
    np.random.seed(5)
    random.seed(9)
    generator.manual_seed(1)
    restore_rng(load_state(tmp_path / "rng.pt"), generator)
    assert _draws(generator) == first


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "sub" / "x.json"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            Path(tmp).write_text("partial")
            raise RuntimeError("interrupted")
    assert list((tmp_path / "sub").iterdir()) == []
    write_json(target, {"a": 1})
    assert json.loads(target.read_text()) == {"a": 1}
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["x.json"]


def test_trial_key_names_method_and_seed_and_changes_with_any_setting():
    a = pipeline_config("cpu", "icam", seed=2)
    assert trial_key(a).startswith("icam-s2-")
    assert trial_key(a) == trial_key(pipeline_config("cpu", "icam", seed=2))
    assert trial_key(a) != trial_key(pipeline_config("cpu", "icam", seed=2, mu=2.0))
    assert trial_key(a) != trial_key(replace(a, final=replace(a.final, iterations=7)))


# --- NaN guard -------------------------------------------------------------------------------


class _Linear(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(2, 1)

    def forward(self, x):
        return self.fc(x)

    def parameter_groups(self):
        return [self.fc.weight], [self.fc.bias], [], []


class _ScaledTrainer(StageTrainer):
    """Losses 'fit' = mean(output) and 'extra' = scale * mean(output); total = their sum."""

    stage = "cam"
    scale = 1.0

    def build_model(self):
        return _Linear()

    def losses(self, batch):
        fit = self.model(batch).mean()
        extra = self.scale * fit
        return {"total": fit + extra, "fit": fit, "extra": extra}


@pytest.mark.parametrize("scale, shown", [(math.nan, "nan"), (math.inf, "inf")])
def test_a_non_finite_loss_stops_at_once_naming_trial_iteration_and_term(scale, shown):
    config = pipeline_config(seed=4)
    trainer = _ScaledTrainer(config, max_iterations=100)
    trainer.train_batch(torch.ones(3, 2))
    trainer.train_batch(torch.ones(3, 2))
    before = [p.detach().clone() for p in trainer.model.parameters()]
    trainer.scale = scale
    with pytest.raises(FloatingPointError) as err:
        trainer.train_batch(torch.ones(3, 2))
    message = str(err.value)
    assert f"trial {trial_key(config)}" in message
    assert "iteration 3" in message
    assert re.search(rf"'extra' = -?{shown}\b", message) and "'fit'" not in message
    assert all(torch.equal(a, b) for a, b in zip(before, trainer.model.parameters(),
                                                 strict=True))  # no update from it


def test_a_non_finite_model_output_stops_before_the_losses():
    config = pipeline_config(seed=4)
    trainer = _ScaledTrainer(config, max_iterations=100)
    with torch.no_grad():
        trainer.model.fc.bias.fill_(math.inf)
    with pytest.raises(FloatingPointError, match=rf"trial {trial_key(config)}: non-finite cam "
                       r"model output 'output' at iteration 1, before its losses"):
        trainer.train_batch(torch.ones(3, 2))
    trainer.model.eval()
    assert torch.isinf(trainer.model(torch.ones(3, 2))).all()  # inference is not checked


# --- the trainables: one step, checkpoint, a fresh instance continues identically -------------


@pytest.fixture(autouse=True)
def _logdir_in_tmp(tmp_path, monkeypatch):
    """Trainables outside Tune make a log folder; keep it out of ~/ray_results."""
    monkeypatch.setattr("ray.tune.trainable.trainable.DEFAULT_STORAGE_PATH", str(tmp_path))


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    return generate(tmp_path_factory.mktemp("data") / "voc", num_train=16, num_val=8,
                    seed=0, size=(64, 96))


def tiny_pipeline(method: str = "icam"):
    cfg = pipeline_config("cpu", method, seed=1)
    return replace(
        cfg,
        cam=replace(cfg.cam, crop=64, resize_long=(64, 96), epochs=2, infer_scales=(1.0,)),
        affinity=replace(cfg.affinity, crop=80, epochs=2),
        final=replace(cfg.final, crop=64, iterations=4, steps_per_report=1))


def _gt_cam(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A CAM that is the ground truth: 1 on each present class's pixels, 0 elsewhere."""
    label = np.zeros(20, np.float32)
    present = np.unique(mask[(mask > 0) & (mask < 255)])
    label[present - 1] = 1
    cam = np.stack([(mask == c).astype(np.float32) for c in range(1, 21)])
    return cam, label


def _fake_previous_stage(trial_dir: Path, root: Path, stage: str) -> None:
    """Stand-in products of the previous stage made from the ground truth: CAMs of train_aug
    (stage "cam") or random-walk labels (stage "affinity")."""
    layout = VOCLayout(root)
    out = trial_dir / stage / ("cams" if stage == "cam" else "rw")
    out.mkdir(parents=True)
    for image_id in layout.ids("train_aug"):
        mask = load_mask(layout.mask_path(image_id))
        if stage == "cam":
            save_cam(out / f"{image_id}.npz", *_gt_cam(mask))
        else:
            save_mask(out / f"{image_id}.png", mask)
    write_json(trial_dir / stage / "DONE.json", {})


@pytest.mark.parametrize("cls, previous", [(CamStage, None), (AffinityStage, "cam"),
                                           (FinalStage, "affinity")])
def test_checkpoint_restores_identical_state(cls, previous, tiny_root, tmp_path):
    config = {"pipeline": tiny_pipeline().to_dict(), "data_root": str(tiny_root),
              "trial_dir": str(tmp_path / "trial")}
    if previous:
        _fake_previous_stage(tmp_path / "trial", tiny_root, previous)
    a = cls(config=dict(config))
    initial = {k: v.clone() for k, v in a.trainer.model.state_dict().items()}
    first = a.train()
    assert math.isfinite(first["loss"]) and first["images_per_s"] > 0 and not first["done"]
    a.save_checkpoint(str(tmp_path / "ckpt"))
    second = a.train()

    b = cls(config=dict(config))
    b.load_checkpoint(str(tmp_path / "ckpt"))
    assert b.trainer.iteration == first["iteration"]
    resumed = b.train()
    assert resumed["loss"] == second["loss"]
    assert resumed["iteration"] == second["iteration"] == 2 * first["iteration"]
    state_a, state_b = a.trainer.model.state_dict(), b.trainer.model.state_dict()
    assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)
    assert any(not torch.equal(initial[k], state_a[k]) for k in state_a)
    assert b.trainer.optimizer.param_groups[0]["lr"] == a.trainer.optimizer.param_groups[0]["lr"]


@pytest.mark.parametrize("method, alphas", [("icam", (2, 4)), ("seam", (4, 24))])
def test_affinity_stage_makes_its_crf_scores_from_the_cams_once(method, alphas, tiny_root,
                                                                 tmp_path, monkeypatch):
    import icam.stages.affinity as affinity_stage

    used = []
    real = affinity_stage.crf_scores
    monkeypatch.setattr(affinity_stage, "crf_scores",
                        lambda cam, image, alpha, label: used.append(alpha) or real(
                            cam, image, alpha, label))
    trial = tmp_path / "trial"
    _fake_previous_stage(trial, tiny_root, "cam")
    config = {"pipeline": tiny_pipeline(method=method).to_dict(), "data_root": str(tiny_root),
              "trial_dir": str(trial)}
    AffinityStage(config=dict(config))
    layout = VOCLayout(tiny_root)
    ids = layout.ids("train_aug")
    assert set(used) == set(alphas)  # the method's own background exponents
    assert sorted(p.stem for p in (trial / "affinity" / "crf").iterdir()) == sorted(ids)
    agree = total = 0
    for image_id in ids:
        gt = load_mask(layout.mask_path(image_id))
        gt = np.where(gt == 255, 0, gt)  # the ground-truth CAM counts void as background
        present = np.concatenate([[0], np.unique(gt[gt > 0])])
        scores = load_crf_scores(trial / "affinity" / "crf" / f"{image_id}.npz")
        low, high = np.split(scores, 2)
        # a CAM of 1 inside each object and 0 outside: both alphas agree with the truth
        for half in (low, high):
            agree += int((present[half.argmax(axis=0)] == gt).sum())
            total += gt.size
    assert agree / total > 0.95
    stamps = {p: p.stat().st_mtime_ns for p in (trial / "affinity" / "crf").iterdir()}
    AffinityStage(config=dict(config))  # a restarted trial keeps the scores it has
    assert {p: p.stat().st_mtime_ns for p in (trial / "affinity" / "crf").iterdir()} == stamps
    assert not (trial / "cam" / "crf").exists()


def test_affinity_stage_makes_crf_scores_only_for_the_images_it_trains_on(tiny_root, tmp_path):
    trial = tmp_path / "trial"
    _fake_previous_stage(trial, tiny_root, "cam")
    pipeline = tiny_pipeline()
    pipeline = replace(pipeline, affinity=replace(pipeline.affinity, max_train_images=2))
    stage = AffinityStage(config={"pipeline": pipeline.to_dict(), "data_root": str(tiny_root),
                                  "trial_dir": str(trial)})
    ids = VOCLayout(tiny_root).ids("train_aug")
    assert len(ids) > 2
    assert sorted(p.stem for p in (trial / "affinity" / "crf").iterdir()) == sorted(ids[:2])
    assert [stage.dataset[k][0] for k in range(len(stage.dataset))] == ids[:2]


def test_a_seam_cam_stage_stores_min_max_cams_with_the_negative_floor_at_zero(tiny_root,
                                                                               tmp_path):
    # SEAM's min-max maps each present class's minimum below 0 and its maximum to
    # (max - min - eps) / (max - min + eps), about 1; stored maps hold [0, 1]: min 0, max ~1
    pipeline = tiny_pipeline("seam")
    pipeline = replace(pipeline, cam=replace(pipeline.cam, epochs=1))
    stage = CamStage(config={"pipeline": pipeline.to_dict(), "data_root": str(tiny_root),
                             "trial_dir": str(tmp_path / "trial")})
    result = {"done": False}
    while not result["done"]:
        result = stage.train()
    cams = sorted((tmp_path / "trial" / "cam" / "cams").glob("*.npz"))
    assert len(cams) == len(VOCLayout(tiny_root).ids("train_aug")) + len(
        VOCLayout(tiny_root).ids("val"))
    for path in cams:
        cam, label = load_cam(path)
        for c in np.flatnonzero(label):
            assert cam[c].min() == 0 and cam[c].max() >= 0.99


def test_a_stage_with_done_json_reports_it_without_training(tiny_root, tmp_path):
    config = {"pipeline": tiny_pipeline().to_dict(), "data_root": str(tiny_root),
              "trial_dir": str(tmp_path / "trial")}
    write_json(tmp_path / "trial" / "cam" / "DONE.json", {"cam/val/J": 12.5})
    stage = CamStage(config=config)
    result = stage.train()
    assert result["done"] and result["cam/val/J"] == 12.5
    assert not hasattr(stage, "trainer")


def test_a_stage_without_its_inputs_names_them(tiny_root, tmp_path):
    config = {"pipeline": tiny_pipeline().to_dict(), "data_root": str(tiny_root),
              "trial_dir": str(tmp_path / "trial")}
    with pytest.raises(FileNotFoundError, match="cam.*DONE.json"):
        AffinityStage(config=config)


@pytest.mark.parametrize("method", ["icam", "seam"])
def test_final_loss_adds_the_fsl_as_the_authors_code_when_the_method_uses_it(method):
    from icam.stages.final import FinalTrainer
    from tests.test_losses import all_pairs_fsl

    pipeline = pipeline_config("cpu", method, seed=0)
    pipeline = replace(pipeline, final=replace(pipeline.final, backbone="tiny", crop=32,
                                               output_stride=4,
                                               weights=None))
    trainer = FinalTrainer(pipeline, max_iterations=1, device=torch.device("cpu"))
    images, targets = trainer.random_batch(2)
    trainer.model.eval()
    with torch.no_grad():
        trainer.model.cls_conv.weight.mul_(30.0)  # confident, varied class probabilities
        losses = trainer.losses((images, targets))
        coarse = trainer.model(images)
    if method == "seam":
        assert set(losses) == {"total", "ce"}
        return
    # the FSL's features: the de-normalised image at the output-stride size (bilinear, corners)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    small = torch.nn.functional.interpolate(images, coarse.shape[2:], mode="bilinear",
                                            align_corners=True)
    x = (small * std + mean).clamp(0, 1).double()
    expected = all_pairs_fsl(x, torch.softmax(coarse.double(), 1), 2.5, 5.0)
    assert abs(float(expected)) > 1e-4  # the probabilities vary: a sum worth comparing
    assert float(losses["fsl"]) == pytest.approx(float(expected), rel=2e-3)
    # train_final.py adds 0.5 · sum w f ||a_i - a_j||² / NHW; all_pairs_fsl has g = ½||.||²
    assert float(losses["total"] - losses["ce"]) == pytest.approx(float(expected), rel=2e-3)


@pytest.mark.parametrize("scale, side", [(0.3, 19), (0.5, 32)])
def test_the_cam_stages_second_view_is_the_crop_resized_by_its_siamese_scale(scale, side):
    from icam.stages.cam import CamTrainer

    base = pipeline_config(seed=0)
    cam = replace(base.cam, backbone="tiny", weights=None, crop=64, siamese_scale=scale)
    trainer = CamTrainer(replace(base, cam=cam), max_iterations=1)
    seen = []
    forward = trainer.model.forward
    trainer.model.forward = lambda x: seen.append(tuple(x.shape[2:])) or forward(x)
    labels = torch.zeros(2, 20)
    labels[:, 3] = 1
    trainer.losses((torch.randn(2, 3, 64, 64), labels))
    assert seen == [(64, 64), (side, side)]  # floor(64 x scale): bilinear resize by a factor


@pytest.mark.parametrize("cls, previous", [(CamStage, None), (AffinityStage, "cam"),
                                           (FinalStage, "affinity")])
def test_loader_workers_leave_batches_and_trial_key_unchanged(cls, previous, tiny_root,
                                                              tmp_path):
    """Data loading in worker processes draws every augmentation from (seed, epoch, image):
    the same batches, bit for bit, as in the trial's process, so the key leaves it out."""
    stages = []
    for count in (0, 2):
        pipeline = tiny_pipeline()
        pipeline = replace(pipeline, **{cls.trainer_cls.stage: replace(
            getattr(pipeline, cls.trainer_cls.stage), num_workers=count)})
        trial = tmp_path / f"workers{count}"
        if previous:
            _fake_previous_stage(trial, tiny_root, previous)
        stages.append(cls(config={"pipeline": pipeline.to_dict(), "data_root": str(tiny_root),
                                  "trial_dir": str(trial)}))
    inline, workers = stages
    assert trial_key(inline.pipeline) == trial_key(workers.pipeline)
    for iteration in range(2 * inline.iterations_per_epoch):  # two epochs: two augmentations
        inline.trainer.iteration = workers.trainer.iteration = iteration
        a, b = inline._next_batch(), workers._next_batch()
        flat_a, flat_b = _tensors(a), _tensors(b)
        assert len(flat_a) == len(flat_b) > 1
        assert all(torch.equal(x, y) for x, y in zip(flat_a, flat_b, strict=True))


def _tensors(batch) -> list[torch.Tensor]:
    """The tensors of a (nested) batch tuple, in order."""
    if isinstance(batch, torch.Tensor):
        return [batch]
    return [t for item in batch for t in _tensors(item)]
