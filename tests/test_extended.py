"""PMM's extended training: the pretended under-fitting loss and plain CE against direct
implementations, and the cyclic pseudo-mask round of the final stage (masks, fresh model,
resuming from either round)."""

import copy
import math
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import tests.test_stages as stage_tests
from icam.config import PipelineConfig, pipeline_config
from icam.crf import dense_crf
from icam.data.voc import InferenceDataset, VOCLayout, load_mask
from icam.extended import cyclic_cross_entropy, pretended_underfitting_loss
from icam.models import build_backbone
from icam.models.efficientnet_lite import lite0_state_dict
from icam.stages import FinalStage
from icam.stages.files import trial_key
from tests.test_stages import _fake_previous_stage, tiny_pipeline

VOID = 255


def direct_pixel_ce(logits: torch.Tensor, targets: torch.Tensor) -> list[float]:
    """-log(exp(z_t) / sum_c exp(z_c)) at each pixel, 0 at void pixels, by loops."""
    n, k, h, w = logits.shape
    values = []
    for b in range(n):
        for y in range(h):
            for x in range(w):
                t = int(targets[b, y, x])
                if t == VOID:
                    values.append(0.0)
                    continue
                z = [float(logits[b, c, y, x]) for c in range(k)]
                values.append(-(z[t] - math.log(sum(math.exp(v) for v in z))))
    return values


def _inputs(scale: float):
    g = torch.Generator().manual_seed(3)
    logits = scale * torch.randn(2, 3, 2, 3, generator=g)
    targets = torch.randint(0, 3, (2, 2, 3), generator=g)
    targets[0, 0, 0] = VOID
    return logits, targets


def test_puf_is_the_plain_mean_while_the_loss_is_high():
    logits, targets = _inputs(3.0)
    values = direct_pixel_ce(logits, targets)
    mean = sum(values) / len(values)  # every pixel counts, the void one as 0 (mmseg 0.8)
    assert mean >= 0.5
    assert float(pretended_underfitting_loss(logits, targets)) == pytest.approx(mean, rel=1e-6)
    assert float(cyclic_cross_entropy(logits, targets)) == pytest.approx(mean, rel=1e-6)


def test_puf_clamps_each_pixel_at_k_once_the_mean_is_below_beta():
    targets = torch.tensor([[[0, 1, 2], [1, VOID, 0]]])
    logits = torch.full((1, 3, 2, 3), -4.0)
    logits.scatter_(1, targets.clamp(max=2)[:, None], 4.0)  # confident and right ...
    logits[0, :, 0, 1] = torch.tensor([0.2, 0.0, 0.1])  # ... but for one unsure pixel
    logits.requires_grad_(True)
    values = direct_pixel_ce(logits.detach(), targets)
    assert sum(values) / 6 < 0.5 and values[1] > 0.5
    clamped = [min(v, 0.5) for v in values]
    loss = pretended_underfitting_loss(logits, targets)
    assert float(loss.detach()) == pytest.approx(sum(clamped) / 6, rel=1e-6)
    assert float(loss.detach()) < sum(values) / 6
    loss.backward()
    grad = logits.grad[0].abs().sum(dim=0)
    assert grad[0, 1] == 0  # above k: no gradient
    assert grad[1, 1] == 0  # void
    assert (grad[0, 0] > 0) and (grad[1, 0] > 0)
    other = pretended_underfitting_loss(logits.detach(), targets, beta=0.01, k=0.5)
    assert float(other) == pytest.approx(sum(values) / 6, rel=1e-6)  # β not reached


# --- the cyclic round in the final stage ------------------------------------------------------


tiny_root = stage_tests.tiny_root  # the stage tests' fixtures: a tiny synthetic VOC, and
_logdir_in_tmp = stage_tests._logdir_in_tmp  # trainables' log folders kept in tmp_path


def extended_pipeline() -> PipelineConfig:
    cfg = tiny_pipeline()
    return replace(cfg, final=replace(cfg.final, extended=True, iterations=2,
                                      steps_per_report=1, batch_size=4))


def test_extended_stays_in_the_final_stage_and_leaves_other_keys_alone():
    cfg = pipeline_config("cpu", "icam")
    with pytest.raises(ValueError, match="cam.extended"):
        replace(cfg, cam=replace(cfg.cam, extended=True))
    with pytest.raises(ValueError, match="extended='yes'"):
        replace(cfg.final, extended="yes")
    et = replace(cfg, final=replace(cfg.final, extended=True))
    assert trial_key(et) != trial_key(cfg)
    assert PipelineConfig.from_dict(et.to_dict()) == et


def _direct_cyclic_mask(model, root, image_id, scales):
    """Softmax of each view (upsampled, mirrored back), averaged; PMM's CRF; argmax."""
    dataset = InferenceDataset(root, "train_aug", scales, flip=True)
    _, image, views, _ = dataset[dataset.ids.index(image_id)]
    probs = []
    with torch.no_grad():
        for batch in views:
            p = torch.softmax(F.interpolate(model(batch), image.shape[:2], mode="bilinear",
                                            align_corners=True), dim=1)
            probs += [p[0], p[1].flip(-1)]
    mean = torch.stack(probs).mean(dim=0).numpy()
    refined = dense_crf(image, mean, iterations=10, gauss_sxy=1, gauss_compat=3,
                        bilateral_sxy=67, bilateral_srgb=3, bilateral_compat=4)
    return refined.argmax(axis=0)


class RecordedTask:
    """A progress task that only counts (stands in for icam.progress.task)."""

    made: list = []

    def __init__(self, desc: str, total: int, initial: int = 0, enabled: bool = True):
        self.desc, self.total, self.n = desc, total, initial
        RecordedTask.made.append(self)

    def update(self, k: int = 1) -> None:
        self.n += k

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass


def test_cyclic_round_masks_restart_and_resume(tiny_root, tmp_path, monkeypatch):
    monkeypatch.setattr("icam.progress.task", RecordedTask)
    RecordedTask.made = []
    trial = tmp_path / "trial"
    _fake_previous_stage(trial, tiny_root, "affinity")
    config = {"pipeline": extended_pipeline().to_dict(), "data_root": str(tiny_root),
              "trial_dir": str(trial)}
    a = FinalStage(config=dict(config))
    first = a.train()
    assert first["round"] == 1 and "loss_puf" in first and "loss_ce" not in first
    a.train()
    a.save_checkpoint(str(tmp_path / "end_of_round_1"))
    round1 = copy.deepcopy(a.trainer.model).eval()

    turn = a.train()  # the cyclic pseudo-masks, then round 2 from the pre-trained weights
    ids = VOCLayout(tiny_root).ids("train_aug")
    cp = trial / "final" / "cp"
    assert turn["round"] == 2 and turn["iteration"] == 0 and not turn["done"]
    assert turn["cyclic_masks_made"] == len(ids)
    assert sorted(p.stem for p in cp.iterdir()) == sorted(ids)
    for image_id in ids[:2]:
        assert np.array_equal(load_mask(cp / f"{image_id}.png"),
                              _direct_cyclic_mask(round1, tiny_root, image_id,
                                                  extended_pipeline().final.infer_scales))
    pretrained, _ = lite0_state_dict(build_backbone("lite0"))
    state = a.trainer.model.state_dict()
    for name, value in pretrained.items():
        assert torch.equal(state["backbone." + name], value), name
    assert a.dataset.label_dir == cp
    start_of_round_2 = {k: v.clone() for k, v in a.trainer.model.state_dict().items()}
    a.save_checkpoint(str(tmp_path / "start_of_round_2"))
    second = a.train()
    assert second["round"] == 2 and second["iteration"] == 1 and "loss_ce" in second

    # stopped while the masks were made: round 1's last checkpoint, some masks written
    (cp / f"{ids[0]}.png").unlink()
    kept = {p.name: p.stat().st_mtime_ns for p in cp.iterdir()}
    b = FinalStage(config=dict(config))
    b.load_checkpoint(str(tmp_path / "end_of_round_1"))
    assert b.train()["cyclic_masks_made"] == 1
    assert {p.name: p.stat().st_mtime_ns for p in cp.iterdir() if p.name in kept} == kept
    state_b = b.trainer.model.state_dict()
    assert all(torch.equal(state_b[k], start_of_round_2[k]) for k in state_b)

    # stopped in round 2: its checkpoint brings back the round, the masks and the model
    c = FinalStage(config=dict(config))
    c.load_checkpoint(str(tmp_path / "start_of_round_2"))
    assert c.trainer.round == 2 and c.dataset.label_dir == cp
    resumed = c.train()
    assert resumed["loss"] == second["loss"]
    state_a, state_c = a.trainer.model.state_dict(), c.trainer.model.state_dict()
    assert all(torch.equal(state_a[k], state_c[k]) for k in state_a)

    while not (result := a.train())["done"]:
        pass
    assert result["final/val/images"] == len(VOCLayout(tiny_root).ids("val"))
    assert (trial / "final" / "DONE.json").is_file()
    # progress: each round's iterations on a bar of their own, none past its total (a's two
    # rounds, then c's round 2 resumed and stopped after one iteration)
    iterations = extended_pipeline().final.iterations
    bars = [(t.desc, t.total, t.n) for t in RecordedTask.made if t.desc.startswith("training")]
    assert bars == [("training round 1", iterations, iterations),
                    ("training round 2", iterations, iterations),
                    ("training round 2", iterations, 1)]
