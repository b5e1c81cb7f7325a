"""bfloat16 on a CPU as on CUDA (`icam.precision`): when it is on, that everything after the
network stays float32, and that each stage's training and CAM inference agree with fp32.

torch computes bf16 on every CPU (emulated without AMX or AVX512-BF16, only slower), so these
run everywhere; networks are the tiny backbone at 64-80 pixels on the embedded benchmark's
images.
"""

import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn

from icam import precision
from icam.config import pipeline_config
from icam.data import transforms as T
from icam.data.synthetic import render_sample
from icam.data.voc import labels_from_mask
from icam.extended import cyclic_cross_entropy, pretended_underfitting_loss
from icam.inference import CONVENTIONS, cam_argmax_labels, infer_cam, seam_min_max
from icam.losses import cam_losses, cam_probabilities, feature_similarity_loss
from icam.models import build_backbone
from icam.models.affinity import (
    affinities,
    affinity_labels,
    affinity_loss,
    random_walk,
    random_walk_transition,
)
from icam.models.cam import CamNet, pcm
from icam.models.weights import load_pretrained
from icam.stages import TRAINERS
from icam.stages.trainer import to_device

COSINE = 0.99
"""Per parameter group: bf16's gradient against fp32's, same batch, weights, dropout masks and
importance samples."""

COSINE_SEAM = 0.98
"""SEAM's CAM losses select pixels (each map's min and max, the top 20 % of ECR's errors, the
lowest quarter of min pooling), and bf16's rounding moves a few across a selection's edge:
0.988-0.996 measured on four batches of the benchmark; another dropout mask alone moves the
fp32 gradient to a cosine of 0.4 or less."""

COSINE_BATCH_STATISTICS = 0.95
"""The final stage's backbone, whose batch norm trains on batch statistics: its backward takes
from the incoming gradient its mean and its projection on the normalised input, most of it,
so bf16's rounding of that gradient grows relative to what is left: 0.955-0.966 measured at
batch 2-8 and crops 64-160 (the same stage with frozen statistics: >= COSINE, tested below);
another dropout mask alone moves the fp32 gradient to a cosine of 0.37-0.50."""


# --- when bf16 is on -----------------------------------------------------------------------------


@pytest.mark.parametrize("setting, device, backbone, instructions, on", [
    (True, "cpu", "lite0", False, True),  # an explicit setting always wins
    (False, "cuda", "resnet38", True, False),
    ("auto", "cuda", "lite0", False, True),
    ("auto", "cpu", "resnet38", True, True),
    ("auto", "cpu", "res2net101", True, True),
    ("auto", "cpu", "resnet38", False, False),  # no bf16 matrix instructions: emulated, slow
    ("auto", "cpu", "lite0", True, False),  # the cpu preset's Lite0 stays fp32
    ("auto", "cpu", "tiny", True, False),
])
def test_auto_turns_bf16_on_where_it_pays(setting, device, backbone, instructions, on,
                                          monkeypatch):
    monkeypatch.setattr(precision, "cpu_has_bf16_matmul", lambda: instructions)
    assert precision.use_bf16(setting, torch.device(device), backbone) is on


@pytest.mark.parametrize("amx, avx512_bf16", [(False, False), (True, False), (False, True)])
def test_bf16_matrix_instructions_are_amx_or_avx512_bf16(amx, avx512_bf16, monkeypatch):
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16,
                        raising=False)
    assert precision.cpu_has_bf16_matmul() is (amx or avx512_bf16)


# --- float32 after the network -------------------------------------------------------------------


def _g(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _cam_outputs(n=2, size=8):
    def out(seed):
        g = _g(seed)
        return {"logits": 3 * torch.randn(n, 21, size, size, generator=g),
                "rv": 3 * torch.randn(n, 21, size, size, generator=g)}

    labels = (torch.rand(n, 20, generator=_g(9)) < 0.2).float()
    labels[:, 3] = 1
    return out(1), out(2), torch.randn(n, 3, 8 * size, 8 * size, generator=_g(3)), labels


def _targets(n=2, size=16):
    targets = torch.randint(0, 21, (n, size, size), generator=_g(4))
    targets[:, :2] = 255
    return targets


def _cam_losses(method):
    return lambda out1, out2, image, labels: cam_losses(
        out1, out2, image, labels, pipeline_config("cpu", method).method, _g(5))


FLOAT32_CASES = {  # name: (function, its tensor arguments)
    "icam losses (IS, FSL, ER, ECR)": (_cam_losses("icam"), _cam_outputs()),
    "seam losses": (_cam_losses("seam"), _cam_outputs()),
    "FSL": (lambda x, a: feature_similarity_loss(x, a, 2.5, 2.0),
            (torch.rand(2, 3, 10, 10, generator=_g(6)),
             torch.randn(2, 5, 10, 10, generator=_g(7)).softmax(1))),
    "AffinityNet loss": (
        lambda f, bg, fg, neg: affinity_loss(affinities(f, 3), bg, fg, neg),
        (torch.randn(2, 8, 9, 9, generator=_g(8)),
         *affinity_labels(torch.randint(0, 3, (2, 9, 9), generator=_g(9)), 3))),
    "PUF": (pretended_underfitting_loss, (torch.randn(2, 21, 16, 16, generator=_g(10)),
                                          _targets())),
    "cyclic CE": (cyclic_cross_entropy, (torch.randn(2, 21, 16, 16, generator=_g(11)),
                                        _targets())),
    "PCM": (pcm, (torch.randn(2, 21, 6, 6, generator=_g(12)),
                  torch.randn(2, 16, 6, 6, generator=_g(13)))),
    "softmax CAMs": (lambda logits, rv: cam_probabilities({"logits": logits, "rv": rv},
                                                           "icam"),
                     (torch.randn(2, 21, 6, 6, generator=_g(14)),
                      torch.randn(2, 21, 6, 6, generator=_g(15)))),
    "SEAM's normalisation": (seam_min_max, (torch.rand(3, 8, 8, generator=_g(16)),)),
    "random walk": (
        lambda f, cams: random_walk(cams, random_walk_transition(f, 3, 8), 2),
        (torch.randn(1, 8, 7, 7, generator=_g(17)), torch.rand(1, 3, 7, 7, generator=_g(18)))),
}


def _flat(x) -> list[torch.Tensor]:
    if isinstance(x, dict):
        return [t for v in x.values() for t in _flat(v)]
    if isinstance(x, (tuple, list)):
        return [t for v in x for t in _flat(v)]
    return [x]


def _bf16(x):
    """`x` with its floating tensors (also inside dicts and tuples) as bf16."""
    if isinstance(x, dict):
        return {k: _bf16(v) for k, v in x.items()}
    if isinstance(x, (tuple, list)):
        return type(x)(_bf16(v) for v in x)
    return x.bfloat16() if x.is_floating_point() else x


@pytest.mark.parametrize("name", list(FLOAT32_CASES))
def test_losses_and_post_processing_run_in_float32_under_autocast(name):
    """On bf16 inputs under bf16 autocast, the same float32 result, bit for bit, as on those
    values in float32 without autocast (the FSL's torch.cdist takes no bf16 on a CPU)."""
    fn, args = FLOAT32_CASES[name]
    half = _bf16(args)
    expected = fn(*precision.to_float32(half))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = fn(*half)
    for e, g in zip(_flat(expected), _flat(got), strict=True):
        assert g.dtype == torch.float32
        assert torch.equal(g.to_dense(), e.to_dense())


# --- the stages' trainers ------------------------------------------------------------------------


def _samples(n: int, crop: int):
    rng = np.random.default_rng(0)
    samples = [render_sample(rng, (crop, crop)) for _ in range(n)]
    images = torch.stack([T.normalize(image[:crop, :crop]) for image, _ in samples])
    masks = [mask[:crop, :crop] for _, mask in samples]
    return images, masks


def _batch(stage: str, crop: int, n: int = 2):
    """A batch of the embedded benchmark shaped as the stage's loader gives it."""
    images, masks = _samples(n, crop)
    if stage == "cam":
        return images, torch.stack([torch.as_tensor(labels_from_mask(m)) for m in masks])
    targets = torch.stack([torch.as_tensor(m.astype(np.int64)) for m in masks])
    if stage == "final":
        return images, targets
    return images, affinity_labels(targets[:, 4::8, 4::8], 5)  # stride-8 labels


def _trainer(stage: str, method: str, **overrides):
    pipeline = pipeline_config("cpu", method, seed=1)
    cfg = replace(getattr(pipeline, stage), backbone="tiny", weights=None, bf16=True,
                  **overrides)
    torch.manual_seed(0)
    return TRAINERS[stage](replace(pipeline, **{stage: cfg}), max_iterations=10)


def _gradients(trainer, batch, bf16: bool) -> list[torch.Tensor | None]:
    """Per parameter group, the gradient of the total loss on `batch`, flattened; the same
    dropout masks and importance samples each time."""
    trainer.bf16 = bf16
    trainer.model.train()
    torch.manual_seed(0)
    trainer.generator.manual_seed(0)
    trainer.optimizer.zero_grad(set_to_none=True)
    trainer.losses(to_device(batch, trainer.device))["total"].backward()
    grads = []
    for group in trainer.optimizer.param_groups:
        parts = [p.grad.flatten() for p in group["params"] if p.grad is not None]
        grads.append(torch.cat(parts) if parts else None)
    return grads


def _conv_dtypes(model: nn.Module) -> tuple[set, list]:
    """The output dtypes the model's convolutions give, recorded from now on."""
    seen: set = set()
    handles = [m.register_forward_hook(lambda _m, _i, out: seen.add(out.dtype))
               for m in model.modules() if isinstance(m, nn.Conv2d)]
    return seen, handles


def _train_and_compare(trainer, batch, bounds: tuple[float, ...]) -> list[float]:
    """Two bf16 iterations with finite losses, in which the network's convolutions give bf16;
    then per parameter group, the cosine of bf16's gradient with fp32's on the batch."""
    seen, handles = _conv_dtypes(trainer.model)
    for _ in range(2):
        losses = trainer.train_batch(batch)
        assert all(math.isfinite(v) for v in losses.values()), losses
    for handle in handles:
        handle.remove()
    assert seen == {torch.bfloat16}
    cosines = []
    for k, (g32, g16) in enumerate(zip(_gradients(trainer, batch, False),
                                       _gradients(trainer, batch, True), strict=True)):
        if g32 is None:
            continue
        cosine = float(torch.nn.functional.cosine_similarity(g32, g16, dim=0))
        assert cosine >= bounds[k], (k, cosine)
        cosines.append(cosine)
    return cosines


@pytest.mark.parametrize("stage, method, crop, bounds", [
    ("cam", "icam", 64, (COSINE,) * 4),
    ("cam", "seam", 64, (COSINE_SEAM,) + (COSINE,) * 3),
    ("affinity", "icam", 80, (COSINE,) * 4),
    ("final", "icam", 64, (COSINE_BATCH_STATISTICS,) + (COSINE,) * 3),
])
def test_each_stage_trains_in_bf16_with_gradients_as_fp32(stage, method, crop, bounds):
    trainer = _trainer(stage, method, crop=crop)
    assert trainer.bf16
    _train_and_compare(trainer, _batch(stage, crop), bounds)


def test_final_stage_with_frozen_statistics_has_gradients_as_fp32():
    """What sets the final stage's backbone apart is its batch statistics."""
    _train_and_compare(_trainer("final", "icam", crop=64, frozen_bn=True),
                       _batch("final", 64), (COSINE,) * 4)


def test_extended_training_trains_both_rounds_in_bf16_with_gradients_as_fp32():
    trainer = _trainer("final", "icam", crop=64, extended=True)
    batch = _batch("final", 64)
    bounds = (COSINE_BATCH_STATISTICS,) + (COSINE,) * 3
    _train_and_compare(trainer, batch, bounds)  # round 1: the pretended under-fitting loss
    trainer.start_cyclic_round()
    trainer.bf16 = True
    _train_and_compare(trainer, batch, bounds)  # round 2: cross-entropy on cyclic masks


# --- CAM inference -------------------------------------------------------------------------------


def _probed_cam_net() -> CamNet:
    """A CamNet on Lite0's ImageNet weights whose classifier is a linear probe fitted in closed
    form (ridge regression) to the benchmark's masks: CAMs as decisive as a trained network's,
    without training one (an untrained classifier's near-ties would flip at any rounding)."""
    torch.manual_seed(0)
    model = CamNet(build_backbone("lite0")).eval()
    load_pretrained(model, "lite0-imagenet", strict=False)
    images, masks = _samples(16, 64)
    with torch.no_grad():
        features = model.backbone.forward_as_dict(images)["conv6"]
    size = features.shape[2:]
    targets = torch.stack([torch.as_tensor(m[4::8, 4::8].astype(np.int64)) for m in masks])
    assert targets.shape[1:] == size
    x = features.permute(0, 2, 3, 1).flatten(0, 2)
    keep = targets.flatten() != 255
    x, y = x[keep], 10 * nn.functional.one_hot(targets.flatten()[keep], 21).float() - 5
    w = torch.linalg.solve(x.T @ x + 0.01 * len(x) * torch.eye(x.shape[1]), x.T @ y)
    with torch.no_grad():
        model.fc8.weight.copy_(w.T[:, :, None, None])
    return model


def _inferred_labels(model: CamNet, formulation: str, images: int = 3):
    """(fp32 labels, bf16 labels, ground truth) of benchmark images, at scale 1 with flips."""
    rng = np.random.default_rng(1)
    background = CONVENTIONS[formulation]["cam_background"]
    out = []
    for _ in range(images):
        image, mask = render_sample(rng, (64, 96))
        label = labels_from_mask(mask)
        fp32 = infer_cam(model, image, label, (1.0,), formulation=formulation)
        bf16 = infer_cam(model, image, label, (1.0,), formulation=formulation, bf16=True)
        assert bf16.dtype == np.float32 and np.isfinite(bf16).all() and bf16.max() <= 1 + 1e-6
        assert not np.array_equal(bf16, fp32)  # the network did run in bf16
        out.append((cam_argmax_labels(fp32, background), cam_argmax_labels(bf16, background),
                    mask))
    return out


def _share(pairs) -> float:
    return sum(int((a == b).sum()) for a, b in pairs) / sum(a.size for a, _ in pairs)


def test_cam_inference_in_bf16_gives_the_fp32_labels():
    labels = _inferred_labels(_probed_cam_net(), "icam")
    truth = [(a, np.where(m == 255, a, m)) for a, _, m in labels]
    assert _share(truth) >= 0.8  # the probe's CAMs find the objects
    assert _share([(a, b) for a, b, _ in labels]) >= 0.99


def test_seam_cam_inference_runs_in_bf16():
    """SEAM infers from the PCM's output alone, min-max normalised per class; with the PCM's
    layers untrained (as here) its maps span a few hundredths, which the normalisation
    magnifies along with bf16's rounding, so only the run itself is checked here."""
    torch.manual_seed(0)
    model = CamNet(build_backbone("tiny"), pcm_source="seam").eval()
    assert len(_inferred_labels(model, "seam", images=1)) == 1


# --- the benchmarks ------------------------------------------------------------------------------


def test_bench_train_compare_prints_fp32_and_bf16_with_the_speed_ratio(capsys):
    from icam.bench.train import main

    assert main(["--stage", "affinity", "--backbone", "tiny", "--batch", "1", "--crop", "80",
                 "--steps", "1", "--compare"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines[2:]] == ["fp32", "bf16"]
    assert lines[2].endswith("1.00x") and lines[3].endswith("x")


def test_bench_gpu_without_cuda_says_so_in_one_line(monkeypatch, capsys):
    from icam.bench.gpu import main

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main([]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "no CUDA" in out
