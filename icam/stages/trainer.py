"""A stage's model and optimiser, trained on batches in plain PyTorch (no Ray).

`StageTrainer` builds the model, its SGD or Adam over four parameter groups and the poly
learning rate, and runs one iteration at a time on the training device; with bf16 on
(`icam.precision.use_bf16`) the network runs in bfloat16 and its losses in float32
(`StageTrainer.forward`). The Tune trainable (`icam.stages.trainable`) drives it; the
benchmark and the harness's memory probe use it alone (`measure_training`).
"""

from __future__ import annotations

import math
import os
import time

import torch
from torch import nn

from icam.config import PipelineConfig, TrainConfig
from icam.models import build_backbone
from icam.models.resnet38 import set_bn_momentum
from icam.models.weights import load_pretrained
from icam.precision import run_network, use_bf16
from icam.stages.files import trial_key
from icam.stages.seeding import capture_rng, derive_seed, restore_rng

LR_MULTIPLIERS = (1, 2, 10, 20)
"""Pretrained weights, pretrained biases, new weights, new biases (biases without decay)."""
GROUP_NAMES = ("pre_w", "pre_b", "new_w", "new_b")
"""The parameter groups' names in the loss curve (`StageTrainer.grad_norms`)."""


def training_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def build_optimizer(groups, cfg: TrainConfig) -> torch.optim.Optimizer:
    """SGD (the reference) or Adam over the four parameter groups (pretrained weights, biases,
    new weights, biases) at lr, 2 lr, 10 lr, 20 lr; biases without weight decay."""
    param_groups = []
    for k, (params, mult) in enumerate(zip(groups, LR_MULTIPLIERS, strict=True)):
        decay = cfg.weight_decay if k % 2 == 0 else 0.0
        param_groups.append({"params": list(params), "lr": cfg.lr * mult,
                             "initial_lr": cfg.lr * mult, "weight_decay": decay})
    if cfg.optimizer == "adam":
        return torch.optim.Adam(param_groups, lr=cfg.lr)
    return torch.optim.SGD(param_groups, lr=cfg.lr, momentum=cfg.momentum)


def set_poly_lr(optimizer: torch.optim.Optimizer, iteration: int, max_iterations: int,
                power: float, warmup: int = 0) -> None:
    """lr = initial lr * (1 - iteration / max_iterations)^power, per iteration; in the first
    `warmup` iterations also times (iteration + 1) / warmup (a linear warm-up)."""
    factor = (1 - min(iteration, max_iterations) / max_iterations) ** power
    if iteration < warmup:
        factor *= (iteration + 1) / warmup
    for group in optimizer.param_groups:
        group["lr"] = group["initial_lr"] * factor


def to_device(x, device: torch.device, channels_last: bool = False):
    """Move a batch (tensors, possibly nested in tuples/lists/dicts) to `device`."""
    if isinstance(x, torch.Tensor):
        if channels_last and x.dim() == 4 and x.is_floating_point():
            return x.to(device, memory_format=torch.channels_last, non_blocking=True)
        return x.to(device, non_blocking=True)
    if isinstance(x, dict):
        return {k: to_device(v, device, channels_last) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(to_device(v, device, channels_last) for v in x)
    return x


def cap_gpu_memory(fraction: float | None) -> None:
    """Let this process use at most `fraction` of the GPU, so trials sharing it cannot starve
    each other (no-op without CUDA or for a whole GPU)."""
    if fraction and 0 < fraction < 1 and torch.cuda.is_available():
        torch.cuda.set_per_process_memory_fraction(fraction)



class StageTrainer:
    """A stage's model and optimiser. Subclasses set `stage` and implement `build_model`,
    `losses(batch) -> {"total", ...}` (calling the model through `forward`) and
    `random_batch(n)`."""

    stage = ""
    round = 1  # training rounds: 1, but 2 in the final stage's extended training

    def __init__(self, pipeline: PipelineConfig, max_iterations: int,
                 device: torch.device | None = None):
        self.pipeline = pipeline
        self.cfg: TrainConfig = getattr(pipeline, self.stage)
        self.device = device or training_device()
        self.max_iterations = max(1, max_iterations)
        self.bf16 = use_bf16(self.cfg.bf16, self.device, self.cfg.backbone)
        self.model, self.optimizer = self.fresh_model()
        self.generator = torch.Generator(self.device)
        self.generator.manual_seed(derive_seed(pipeline.seed, self.stage, "sampler"))
        self.iteration = 0
        self.loss_curve: list[dict] = []  # per Tune step: round, iteration, epoch, mean losses
        self.grad_norms: dict[str, float] = {}  # of the last iteration (`group_grad_norms`)

    def fresh_model(self) -> tuple[nn.Module, torch.optim.Optimizer]:
        """A new model (pre-trained weights where configured) on the device, and its optimiser."""
        model = self.build_model().to(self.device)
        set_bn_momentum(model, self.cfg.bn_momentum)  # acts where batch norm trains
        if self.cfg.channels_last:
            model = model.to(memory_format=torch.channels_last)
        model.register_forward_hook(self._check_outputs)
        return model, build_optimizer(model.parameter_groups(), self.cfg)

    def build_model(self) -> nn.Module:
        raise NotImplementedError

    def losses(self, batch) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def random_batch(self, n: int):
        """A batch of `n` random inputs shaped like the loader's (benchmarks, memory probe)."""
        raise NotImplementedError

    def backbone(self) -> nn.Module:
        """A fresh backbone with this stage's output stride and batch-norm mode."""
        return build_backbone(self.cfg.backbone, self.cfg.output_stride, self.cfg.frozen_bn)

    def forward(self, x: torch.Tensor):
        """The model's outputs on `x` as float32; with `bf16`, the network ran in bfloat16."""
        return run_network(self.model, x, self.bf16)

    def load_weights(self, module: nn.Module) -> None:
        if self.cfg.weights:
            load_pretrained(module, self.cfg.weights, strict=False)

    def train_batch(self, batch) -> dict[str, float]:
        """One SGD iteration with the poly learning rate; returns the losses as floats.

        A non-finite model output or loss stops training at once: FloatingPointError naming
        the trial, the iteration and the output or loss terms (`check_finite`).
        """
        set_poly_lr(self.optimizer, self.iteration, self.max_iterations, self.cfg.poly_power,
                    self.cfg.warmup)
        self.iteration += 1
        self.model.train()
        batch = to_device(batch, self.device, self.cfg.channels_last)
        losses = self.losses(batch)
        self.check_finite(losses)
        self.optimizer.zero_grad(set_to_none=True)
        losses["total"].backward()
        self.grad_norms = self.group_grad_norms()  # before clipping: what the loss gave
        if self.cfg.clip_grad is not None:
            params = [p for group in self.optimizer.param_groups for p in group["params"]]
            torch.nn.utils.clip_grad_norm_(params, self.cfg.clip_grad)
        self.optimizer.step()
        return {name: float(value.detach()) for name, value in losses.items()}

    @torch.no_grad()
    def group_grad_norms(self) -> dict[str, float]:
        """The L2 norm of each parameter group's gradient (GROUP_NAMES), for the loss curve."""
        norms = {}
        for name, group in zip(GROUP_NAMES, self.optimizer.param_groups, strict=True):
            grads = [p.grad.detach().float().pow(2).sum() for p in group["params"]
                     if p.grad is not None]
            norms[name] = float(torch.stack(grads).sum().sqrt()) if grads else 0.0
        return norms

    def check_finite(self, losses: dict[str, torch.Tensor]) -> None:
        """Raise FloatingPointError when the total loss is not finite, naming its terms."""
        if torch.isfinite(losses["total"]).all():
            return
        values = {name: float(value.detach()) for name, value in losses.items()}
        bad = [name for name, v in values.items() if name != "total" and not math.isfinite(v)]
        terms = ", ".join(f"'{name}' = {values[name]}" for name in bad or ["total"])
        raise self.stopped(f"non-finite {self.stage} loss at iteration {self.iteration}: {terms}")

    def _check_outputs(self, module: nn.Module, inputs, output) -> None:
        """Forward hook: in training, a non-finite model output stops before its losses (the
        importance sampler, for one, cannot draw from a NaN CAM)."""
        if not module.training:
            return
        named = output.items() if isinstance(output, dict) else [("output", output)]
        for name, value in named:
            if value.is_floating_point() and not torch.isfinite(value).all():
                raise self.stopped(f"non-finite {self.stage} model output '{name}' at iteration "
                                   f"{self.iteration}, before its losses")

    def stopped(self, what: str) -> FloatingPointError:
        return FloatingPointError(f"trial {trial_key(self.pipeline)}: {what}; training stopped "
                                  f"(lr {self.cfg.lr:g})")

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "iteration": self.iteration, "rng": capture_rng(self.generator),
                "loss_curve": self.loss_curve}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.iteration = state["iteration"]
        restore_rng(state["rng"], self.generator)
        self.loss_curve = list(state["loss_curve"])


def measure_training(trainer: StageTrainer, steps: int, batch_size: int) -> dict:
    """Images/s and peak memory of `steps` iterations on random data (after one warm-up).

    Peak memory: CUDA max_memory_allocated on GPU, the process's peak RSS on CPU.
    """
    batch = trainer.random_batch(batch_size)
    trainer.train_batch(batch)
    cuda = trainer.device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(steps):
        trainer.train_batch(batch)
    if cuda:
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated()
        total = torch.cuda.get_device_properties(trainer.device).total_memory
    else:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    seconds = time.perf_counter() - start
    return {"images_per_s": steps * batch_size / seconds, "peak_bytes": int(peak),
            "total_bytes": int(total), "seconds_per_step": seconds / steps}

