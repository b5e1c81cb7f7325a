"""Validated configuration: the method (what the paper varies) and the training stages.

Every value is checked on construction, so a bad grid fails before any Ray worker starts,
with a message naming the field and its allowed range.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace

FORMULATIONS = ("icam", "seam")
POOLINGS = ("avg", "max")
BACKBONES = ("resnet38", "res2net101", "lite0", "lite0-r2n", "tiny")
STAGES = ("cam", "affinity", "final")


def _check(ok: bool, name: str, value, allowed: str) -> None:
    if not ok:
        raise ValueError(f"{name}={value!r} is invalid: allowed {allowed}")


def _is_real(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass(frozen=True)
class MethodConfig:
    """The CAM stage's losses. Defaults are the paper's ICAM (reference-facts.md)."""

    name: str = "icam"
    formulation: str = "icam"  # "icam": softmax CAMs (eq. 1); "seam": SEAM's own losses
    lam: float = 0.8  # λ of eq. 8: weight of the importance-sampling term
    pooling: str = "avg"  # pooled branch: "avg" = GAP of logits (eq. 2-3), "max" = GMP (eq. 4)
    num_samples: int = 100  # pixels drawn per class and image (eq. 5-6)
    fsl: bool = True  # feature similarity loss (eq. 9-13)
    mu: float = 2.5  # bias of f (eq. 12)
    sigma: float = 5.0  # std of the spatial weight (eq. 10)
    learn_fsl: bool = False  # early ICAM: μ and σ are learned parameters
    rv_pooling: str = "max"  # PCM branch pooling

    def __post_init__(self) -> None:
        _check(isinstance(self.name, str) and self.name != "", "name", self.name,
               "a non-empty string")
        _check(self.formulation in FORMULATIONS, "formulation", self.formulation,
               " | ".join(FORMULATIONS))
        _check(_is_real(self.lam) and 0.0 <= self.lam <= 1.0, "lambda", self.lam,
               "a number in [0, 1]")
        _check(self.pooling in POOLINGS, "pooling", self.pooling, " | ".join(POOLINGS))
        _check(self.rv_pooling in POOLINGS, "rv_pooling", self.rv_pooling, " | ".join(POOLINGS))
        _check(isinstance(self.num_samples, int) and not isinstance(self.num_samples, bool)
               and self.num_samples >= 1, "num_samples", self.num_samples, "an integer >= 1")
        _check(isinstance(self.fsl, bool), "fsl", self.fsl, "true | false")
        _check(isinstance(self.learn_fsl, bool), "learn_fsl", self.learn_fsl, "true | false")
        _check(_is_real(self.mu) and math.isfinite(self.mu), "mu", self.mu,
               "a finite number")
        _check(_is_real(self.sigma) and math.isfinite(self.sigma) and self.sigma > 0, "sigma",
               self.sigma, "a finite number > 0")
        if self.formulation == "seam":
            _check(self.lam == 0.0 and not self.fsl, "formulation", self.formulation,
                   "'seam' only with lambda=0 and fsl=false (use formulation='icam' to add "
                   "importance sampling or FSL)")

    def columns(self) -> dict:
        """The trials.csv columns of this method (design.md)."""
        return {"method": self.name, "lambda": self.lam, "pooling": self.pooling,
                "num_samples": self.num_samples, "fsl": self.fsl, "mu": self.mu,
                "sigma": self.sigma}


METHOD_PRESETS: dict[str, dict] = {
    "icam": {},
    "seam": dict(formulation="seam", lam=0.0, fsl=False),
    "seam+is": dict(fsl=False),
    "seam+fsl": dict(lam=0.0),
    "icam-early": dict(lam=1.0, num_samples=1, learn_fsl=True),
}
"""Table 4's contributions are ICAM's losses with one part switched off; `seam` is SEAM."""

_METHOD_ALIASES = {"lambda": "lam"}


def method_config(preset: str = "icam", **overrides) -> MethodConfig:
    """A method preset with overrides (`lambda=` is accepted for `lam=`)."""
    if preset not in METHOD_PRESETS:
        raise ValueError(f"method={preset!r} is invalid: allowed {' | '.join(METHOD_PRESETS)}")
    values = {"name": preset, **METHOD_PRESETS[preset]}
    known = {f.name for f in fields(MethodConfig)}
    for key, value in overrides.items():
        key = _METHOD_ALIASES.get(key, key)
        if key not in known:
            raise ValueError(f"unknown method field {key!r}: allowed {', '.join(sorted(known))}")
        values[key] = value
    return MethodConfig(**values)


OPTIMIZERS = ("sgd", "adam")


@dataclass(frozen=True)
class TrainConfig:
    """One training stage. Defaults are the paper's CAM stage (Table 1)."""

    backbone: str = "resnet38"
    weights: str | None = None  # backbone weights: .params / .pth / .npz or a built-in name
    output_stride: int = 8  # resnet38, res2net101: 8; lite0, tiny: 4 or 8
    frozen_bn: bool = True  # backbone batch norm keeps its pre-trained statistics
    crop: int = 448
    resize_long: tuple[int, int] = (448, 768)  # random long-side resize (CAM, AffinityNet)
    scale: tuple[float, float] = (0.5, 1.5)  # random scale (final stage)
    batch_size: int = 8
    epochs: int = 8
    iterations: int | None = None  # final stage: a fixed number of iterations
    steps_per_report: int = 500  # final stage: iterations per Tune step
    optimizer: str = "sgd"  # "sgd" (the paper's) | "adam"
    lr: float = 0.01
    momentum: float = 5e-4  # as run: the authors' PolyOptimizer passes 5e-4 as SGD's momentum
    weight_decay: float = 5e-4
    poly_power: float = 0.9
    warmup: int = 0  # iterations of linear learning-rate warm-up before the poly schedule
    clip_grad: float | None = None  # the whole gradient's L2 norm clipped to this (None: not)
    bn_momentum: float = 3e-4  # batch norm that trains (final stage): the authors' resnet38d.py
    siamese_scale: float = 0.3  # CAM stage: SEAM's second view is the crop resized by this
    rw_alpha: float = 6.0  # AffinityNet stage: the random walk's background (1 - max)^α
    rw_logt: int = 6  # AffinityNet stage: the walk takes 2^logt steps
    rw_floor: bool = False  # AffinityNet stage: the walk's background at least the CAM labels'
    rw_keep: float = 0.0  # AffinityNet stage: an image whose walk keeps less than this share of
    # the CAM labels' background walks again with the floor (0: never; rw_floor: always)
    num_workers: int = 0
    threads: int | None = None  # torch threads (CPU): None = the trial's CPUs; a study axis,
    # since the thread count sets the order of float reductions (studies/robustness.py)
    infer_scales: tuple[float, ...] = (0.5, 1.0, 1.5, 2.0)
    bf16: bool | str = False  # the network in bfloat16: true | false | "auto" (icam.precision)
    channels_last: bool = False
    max_train_images: int | None = None  # use a prefix of the training list (quick runs)
    extended: bool = False  # final stage: PMM's extended training (icam.extended), "et" rows

    def __post_init__(self) -> None:
        _check(self.backbone in BACKBONES, "backbone", self.backbone, " | ".join(BACKBONES))
        strides = (8,) if self.backbone in ("resnet38", "res2net101") else (4, 8)
        _check(self.output_stride in strides, "output_stride", self.output_stride,
               f"{' | '.join(map(str, strides))} for backbone {self.backbone}")
        _check(isinstance(self.frozen_bn, bool), "frozen_bn", self.frozen_bn, "true | false")
        for name in ("crop", "batch_size", "epochs", "steps_per_report"):
            value = getattr(self, name)
            _check(isinstance(value, int) and value >= 1, name, value, "an integer >= 1")
        _check(self.iterations is None or (isinstance(self.iterations, int)
               and self.iterations >= 1), "iterations", self.iterations, "None or an integer >= 1")
        _check(self.max_train_images is None or (isinstance(self.max_train_images, int)
               and self.max_train_images >= 1), "max_train_images", self.max_train_images,
               "None or an integer >= 1")
        _check(isinstance(self.num_workers, int) and self.num_workers >= 0, "num_workers",
               self.num_workers, "an integer >= 0")
        _check(self.threads is None or (isinstance(self.threads, int)
               and not isinstance(self.threads, bool) and self.threads >= 1), "threads",
               self.threads, "None or an integer >= 1")
        for name in ("resize_long", "scale"):
            pair = getattr(self, name)
            _check(isinstance(pair, tuple) and len(pair) == 2 and all(map(_is_real, pair))
                   and 0 < pair[0] <= pair[1], name, pair, "(low, high) with 0 < low <= high")
        _check(self.optimizer in OPTIMIZERS, "optimizer", self.optimizer, " | ".join(OPTIMIZERS))
        _check(_is_real(self.lr) and self.lr > 0, "lr", self.lr, "a number > 0")
        _check(_is_real(self.momentum) and 0 <= self.momentum < 1, "momentum", self.momentum,
               "a number in [0, 1)")
        _check(_is_real(self.weight_decay) and self.weight_decay >= 0, "weight_decay",
               self.weight_decay, "a number >= 0")
        _check(_is_real(self.poly_power) and self.poly_power >= 0, "poly_power",
               self.poly_power, "a number >= 0")
        _check(isinstance(self.warmup, int) and not isinstance(self.warmup, bool)
               and self.warmup >= 0, "warmup", self.warmup, "an integer >= 0")
        _check(self.clip_grad is None or (_is_real(self.clip_grad) and self.clip_grad > 0),
               "clip_grad", self.clip_grad, "None or a number > 0")
        _check(_is_real(self.bn_momentum) and 0 < self.bn_momentum <= 1, "bn_momentum",
               self.bn_momentum, "a number in (0, 1]")
        _check(_is_real(self.siamese_scale) and 0 < self.siamese_scale <= 1, "siamese_scale",
               self.siamese_scale, "a number in (0, 1]")
        _check(_is_real(self.rw_alpha) and self.rw_alpha > 0, "rw_alpha", self.rw_alpha,
               "a number > 0")
        _check(isinstance(self.rw_logt, int) and not isinstance(self.rw_logt, bool)
               and 0 <= self.rw_logt <= 10, "rw_logt", self.rw_logt, "an integer in 0..10")
        _check(isinstance(self.extended, bool), "extended", self.extended, "true | false")
        _check(isinstance(self.rw_floor, bool), "rw_floor", self.rw_floor, "true | false")
        _check(_is_real(self.rw_keep) and 0 <= self.rw_keep <= 1
               and not (self.rw_floor and self.rw_keep > 0), "rw_keep", self.rw_keep,
               "a number in [0, 1], and 0 with rw_floor (the floor then holds everywhere)")
        _check(isinstance(self.bf16, bool) or self.bf16 == "auto", "bf16", self.bf16,
               "true | false | 'auto'")
        scales = self.infer_scales
        _check(isinstance(scales, tuple) and len(scales) >= 1
               and all(_is_real(s) and s > 0 for s in scales), "infer_scales", scales,
               "one or more numbers > 0")

    def cpus(self, granted: int) -> int:
        """The CPUs a trial of this stage asks for: the study's `granted`, at least `threads`."""
        return max(granted, self.threads or 0)

    def columns(self) -> dict:
        """This stage's trials.csv columns: `backbone`, `training` ("et" for extended
        training, blank otherwise: Table 5's names) and `threads` (blank: the trial's CPUs)."""
        return {"backbone": self.backbone, "training": "et" if self.extended else "",
                "threads": "" if self.threads is None else self.threads}


_PAPER = {  # the code as run (reference-facts.md, "As run"); Table 1's text in comments
    "cam": TrainConfig(bf16="auto"),  # Table 1: momentum 0.9
    "affinity": TrainConfig(bf16="auto"),  # SEAM's text: lr 0.1
    "final": TrainConfig(crop=448, batch_size=10, lr=0.001, momentum=0.9, frozen_bn=False,
                         iterations=20000, infer_scales=(0.5, 0.75, 1.0, 1.25, 1.5, 1.75),
                         bf16="auto"),
}
_LITE0 = dict(backbone="lite0", weights="lite0-imagenet", output_stride=8, crop=128,
              batch_size=8, channels_last=True,  # channels_last: CPU speed, not the recipe
              bf16=False)  # fp32 on every device: bf16 on a CPU is measured slower for Lite0
_CPU = {  # a scale model of _PAPER: sizes, and the CPU_DEPARTURES (docs/recipe.md)
    "cam": TrainConfig(**_LITE0, resize_long=(128, 192), epochs=20, lr=0.02,
                       infer_scales=(0.5, 1.0, 1.5), siamese_scale=0.5, clip_grad=5.0,
                       warmup=74),  # iterations: 2 of 20 epochs on the embedded benchmark
    "affinity": TrainConfig(**_LITE0, epochs=6, infer_scales=(1.0,), rw_alpha=2.0, rw_logt=2,
                            rw_keep=0.5),
    "final": replace(_PAPER["final"], **_LITE0, iterations=300, steps_per_report=100, lr=0.01,
                     bn_momentum=0.02, infer_scales=(0.75, 1.0, 1.25)),
}
CPU_DEPARTURES = {
    ("cam", "lr"): "0.02, not 0.01: at 0.01 the loss still fell steeply when 6 epochs ended "
                   "(1.47, 1.19 in the last two; train J 56); at 0.02 over 10 epochs the last "
                   "four moved within 0.86-1.21 (train J 82; siamese view 0.3 then); 0.04 "
                   "(train J 69.5) and momentum 0.9 at 0.005 (26.9) did worse at 10 epochs",
    ("cam", "siamese_scale"): "0.5, not 0.3: 0.3 of a 128-pixel crop is a 5-pixel CAM (VOC's "
                              "second view: 17) on which an object is 2 CAM pixels across (VOC "
                              "7); seed 0, train J at 0.3, 0.5, 0.7: ICAM 81.7, 81.6, 74.6 "
                              "(foreground 24 %, 26 %, 21 %; truth 27 %), SEAM 59.0, 61.1, 65.3 "
                              "(31 %, 30 %, 27 %); mean 70.4, 71.4, 70.0",
    ("cam", "clip_grad"): "5, not unclipped: ICAM, seeds 0-9 on one thread (2026-12-07): "
                          "unclipped, 1 of 10 draws failed (seed 0: one class took the "
                          "background, train foreground 57 % against 27 %, train J 52.4) and "
                          "seed 6 spiked at epochs 10-11 into a plateau (loss 0.83, J 75.3); "
                          "train J 79.2 +- 10.0. Clipped at 5, 0 of 10 failed, every loss ended "
                          "at 0.3-0.4, train J 82.2 +- 1.2 (the eight healthy draws 1.0 lower); "
                          "at two threads 1 of 3 clipped draws failed where the unclipped "
                          "recipe on that draw trained: 1 of 13 against 1 of 11, inconclusive",
    ("cam", "warmup"): "74 iterations (2 epochs), not none: ICAM, clipped at 5, on the draws the "
                       "clipped recipe was measured on first (seeds 0-9 on one thread, seed 1 "
                       "on two; 2026-12-07): without it 1 of 11 failed (seed 1 on two threads, "
                       "five classes took the background, train J 26.5), with it 0 of 11 (that "
                       "draw 82.7); mean train J on one thread 81.9 +- 1.9 against 82.2 +- 1.2. "
                       "Chosen by the failure count first, on one draw of difference: the two-"
                       "thread draws after it tested it frozen (docs/findings.md)",
    ("affinity", "rw_keep"): "0.5, not the authors' walk alone: an image whose walk keeps "
                             "less than half of the CAM labels' background walks again from "
                             "them (rw_floor). On a CAM warm over the background (the "
                             "unclipped failed draw, val J 55.8) the walk alone gave 31.6, "
                             "whole images one class; from the floor 54.2. The floor on every "
                             "image (the preset of 2026-12-07 morning) failed 2 of 20 draws on "
                             "train (AffinityNet train J 2.2 and 2.8 below the CAM's; mean "
                             "+0.9) and cost the walk its growth on CAMs that under-cover; the "
                             "walk alone, on the same 20 CAMs, kept at least 71 % of every "
                             "image's CAM-label background (the guard stands aside) and failed "
                             "1 of 20 (-2.1; mean +3.8)",
    ("affinity", "rw_alpha"): "2, not 6: ICAM's CAMs with the background (1 - max)^6 call 37 % of "
                              "the train pixels foreground before any walk (truth 25 %; "
                              "foreground IoU 0.68), with ^2 26 % (IoU 0.84): at 16 CAM pixels "
                              "across, the CAMs' tails reach further in object widths than "
                              "on VOC",
    ("affinity", "rw_logt"): "2, not 6: a walk's reach grows with the square root of its steps, "
                             "and an object is 0.28 times as many CAM pixels across as on VOC, "
                             "so 64 x 0.28^2 = 5 steps reach as far in object widths; over the "
                             "ten baseline trials (6 epochs) 16, 8, 4 steps give mean train J "
                             "66.3, 67.6, 68.1 (1 or 2 steps, on two trials: no better)",
    ("final", "lr"): "0.01, not 0.001: 300 iterations are 1.5 % of the authors' 20,000; at 0.001 "
                     "the model stays near its labels' prior (losses 0.87, 0.36, 0.30; train J "
                     "83.8, SEAM 66.1), at 0.01 it learns the objects (0.46, 0.21, 0.17; train J "
                     "90.6, SEAM 74.1; seed 0, the baseline's CAM and AffinityNet stages)",
    ("final", "bn_momentum"): "0.02, not 3e-4: the authors' momentum averages the running "
                              "statistics over the last sixth of 20,000 iterations; over 300 "
                              "they stay 91 % at their start: the same training (lr 0.001 "
                              "then; losses 1.04, 0.48, 0.44) tests at train J 71.7 with 3e-4, "
                              "93.3 with 0.02",
}
"""Where the cpu preset's schedule departs from the authors' code as run, and the measured
reason (on the embedded benchmark's train split)."""
TRAIN_PRESETS = {"paper": _PAPER, "cpu": _CPU}


def train_config(preset: str, stage: str, **overrides) -> TrainConfig:
    """The training settings of `stage` under `preset` ("paper" | "cpu"), with overrides."""
    if preset not in TRAIN_PRESETS:
        raise ValueError(f"preset={preset!r} is invalid: allowed {' | '.join(TRAIN_PRESETS)}")
    if stage not in STAGES:
        raise ValueError(f"stage={stage!r} is invalid: allowed {' | '.join(STAGES)}")
    return replace(TRAIN_PRESETS[preset][stage], **overrides)


@dataclass(frozen=True)
class PipelineConfig:
    """One trial: a method, a seed and the three stages' settings."""

    method: MethodConfig = field(default_factory=MethodConfig)
    seed: int = 0
    preset: str = "cpu"
    cam: TrainConfig = field(default_factory=lambda: train_config("cpu", "cam"))
    affinity: TrainConfig = field(default_factory=lambda: train_config("cpu", "affinity"))
    final: TrainConfig = field(default_factory=lambda: train_config("cpu", "final"))

    def __post_init__(self) -> None:
        _check(isinstance(self.seed, int) and self.seed >= 0, "seed", self.seed,
               "an integer >= 0")
        _check(self.preset in TRAIN_PRESETS, "preset", self.preset,
               " | ".join(TRAIN_PRESETS))
        for stage in ("cam", "affinity"):
            _check(not getattr(self, stage).extended, f"{stage}.extended", True,
                   "false (extended training is the final stage's: final.extended)")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> PipelineConfig:
        """Inverse of `to_dict`, also after a JSON round trip (lists back to tuples)."""
        stages = {}
        for stage in STAGES:
            raw = dict(values[stage])
            for key, value in raw.items():
                if isinstance(value, list):
                    raw[key] = tuple(value)
            stages[stage] = TrainConfig(**raw)
        return cls(method=MethodConfig(**values["method"]), seed=values["seed"],
                   preset=values["preset"], **stages)


def pipeline_config(preset: str = "cpu", method: str = "icam", seed: int = 0,
                    **method_overrides) -> PipelineConfig:
    """A trial's full configuration from a training preset and a method preset."""
    return PipelineConfig(
        method=method_config(method, **method_overrides), seed=seed, preset=preset,
        **{stage: train_config(preset, stage) for stage in STAGES})
