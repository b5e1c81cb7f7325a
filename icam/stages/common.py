"""What the three stage trainables share.

`StageTrainer` owns a model and its optimiser and trains it on batches (plain PyTorch, no Ray:
the benchmark and the harness's memory probe use it alone). `StageTrainable` is the Ray Tune
class trainable around it: data order, one Tune step per epoch (or per `steps_per_report`
iterations), checkpoints, and the stage's products once training is over.

Randomness flows from the trial's seed: torch, numpy and `random` are seeded from it, the
importance sampler gets its own generator, the data order of epoch e is a permutation drawn
from (seed, stage, e), and each item's augmentation from (seed, epoch, index).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import time
from pathlib import Path

import numpy as np
import torch
from ray import tune
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from icam import parallel, progress
from icam.atomic import atomic_path, atomic_write
from icam.config import STAGES, PipelineConfig, TrainConfig
from icam.storage import Storage

LR_MULTIPLIERS = (1, 2, 10, 20)
"""Pretrained weights, pretrained biases, new weights, new biases (biases without decay)."""

STATE_FILE = "state.pt"
DONE_FILE = "DONE.json"


# --- seeds and random states -----------------------------------------------------------------


def derive_seed(seed: int, *keys) -> int:
    """A 63-bit seed from the trial seed and any strings/ints (stage, purpose, epoch)."""
    words = [int.from_bytes(hashlib.sha1(str(k).encode()).digest()[:4], "little") for k in keys]
    state = np.random.SeedSequence([seed, *words]).generate_state(2, dtype=np.uint32)
    return int(state[0]) << 31 ^ int(state[1])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def capture_rng(generator: torch.Generator | None = None) -> dict:
    """Global torch/CUDA/numpy/python RNG states (and `generator`'s) as tensors and plain values."""
    _, keys, pos, has_gauss, gauss = np.random.get_state()
    version, py_state, py_gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "python": {"version": version, "state": torch.tensor(py_state, dtype=torch.int64),
                   "gauss": py_gauss},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    if generator is not None:
        state["generator"] = generator.get_state()
    return state


def restore_rng(state: dict, generator: torch.Generator | None = None) -> None:
    """Inverse of `capture_rng`."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"],
                         n["has_gauss"], n["gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"].tolist()), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if generator is not None:
        generator.set_state(state["generator"])


# --- files -----------------------------------------------------------------------------------


def write_json(path: str | os.PathLike, obj) -> None:
    with atomic_write(path, "w") as f:
        json.dump(obj, f, indent=1, sort_keys=True)


def read_json(path: str | os.PathLike):
    with open(path) as f:
        return json.load(f)


def save_state(path: str | os.PathLike, state: dict) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_state(path: str | os.PathLike) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


KEY_NEUTRAL = {"extended": False}
"""Stage settings added after studies were stored: at these values they stay out of the
trial key, so stored trials keep their folders (and resume) across the addition."""


def trial_key(pipeline: PipelineConfig) -> str:
    """`<method>-s<seed>-<hash of the whole configuration>`: a trial's folder name."""
    values = pipeline.to_dict()
    for stage in STAGES:
        for name, neutral in KEY_NEUTRAL.items():
            if values[stage].get(name) == neutral:
                del values[stage][name]
    text = json.dumps(values, sort_keys=True)
    digest = hashlib.sha1(text.encode()).hexdigest()[:10]
    return f"{pipeline.method.name}-s{pipeline.seed}-{digest}"


def read_done(stage_dir: str | os.PathLike | Storage) -> dict | None:
    """The metrics of a finished stage (its DONE.json in storage), or None."""
    stage_dir = Storage.open(stage_dir)
    return stage_dir.read_json(DONE_FILE) if stage_dir.exists(DONE_FILE) else None


# --- device and optimiser --------------------------------------------------------------------


def training_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def autocast(device: torch.device, bf16: bool):
    """bfloat16 autocast on CUDA when asked; a no-op context otherwise."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16,
                          enabled=bf16 and device.type == "cuda")


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
                power: float) -> None:
    """lr = initial lr * (1 - iteration / max_iterations)^power, per iteration."""
    factor = (1 - min(iteration, max_iterations) / max_iterations) ** power
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


# --- evaluation ------------------------------------------------------------------------------


def ground_truth(voc_root: str | os.PathLike, image_id: str) -> np.ndarray:
    """An image's ground truth: VOC's own mask, else SBD's (SegmentationClassAug)."""
    from icam.data.voc import load_mask

    path = Path(voc_root) / "SegmentationClass" / f"{image_id}.png"
    if not path.is_file():
        path = Path(voc_root) / "SegmentationClassAug" / f"{image_id}.png"
    return load_mask(path)


def score(pred: np.ndarray, voc_root: str | os.PathLike, image_id: str):
    """J/F sums of one predicted label map against its ground truth."""
    from icam.metrics import JFAccumulator

    acc = JFAccumulator()
    acc.add(pred, ground_truth(voc_root, image_id))
    return acc


def split_metrics(stage: str, scored: list[tuple[tuple[str, ...], object]]) -> dict:
    """`<stage>/<split>/<J|F|JF>` (percent) from (splits, JFAccumulator) pairs, one per image."""
    from icam.metrics import JFAccumulator

    metrics = {}
    for split in ("train", "val"):
        acc = JFAccumulator()
        for splits, image_acc in scored:
            if split in splits:
                acc.merge(image_acc)
        result = acc.result()
        metrics.update({f"{stage}/{split}/{m}": result[m] for m in ("J", "F", "JF")})
        metrics[f"{stage}/{split}/images"] = acc.num_images
    return metrics


# --- the trainer -----------------------------------------------------------------------------


class StageTrainer:
    """A stage's model and optimiser. Subclasses set `stage` and implement `build_model`,
    `losses(batch) -> {"total", ...}` and `random_batch(n)`."""

    stage = ""

    def __init__(self, pipeline: PipelineConfig, max_iterations: int,
                 device: torch.device | None = None):
        self.pipeline = pipeline
        self.cfg: TrainConfig = getattr(pipeline, self.stage)
        self.device = device or training_device()
        self.max_iterations = max(1, max_iterations)
        self.model, self.optimizer = self.fresh_model()
        self.generator = torch.Generator(self.device)
        self.generator.manual_seed(derive_seed(pipeline.seed, self.stage, "sampler"))
        self.iteration = 0

    def fresh_model(self) -> tuple[nn.Module, torch.optim.Optimizer]:
        """A new model (pre-trained weights where configured) on the device, and its optimiser."""
        model = self.build_model().to(self.device)
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
        from icam.models import build_backbone

        return build_backbone(self.cfg.backbone, self.cfg.output_stride, self.cfg.frozen_bn)

    def load_weights(self, module: nn.Module) -> None:
        if self.cfg.weights:
            from icam.models.weights import load_pretrained

            load_pretrained(module, self.cfg.weights, strict=False)

    def train_batch(self, batch) -> dict[str, float]:
        """One SGD iteration with the poly learning rate; returns the losses as floats.

        A non-finite model output or loss stops training at once: FloatingPointError naming
        the trial, the iteration and the output or loss terms (`check_finite`).
        """
        set_poly_lr(self.optimizer, self.iteration, self.max_iterations, self.cfg.poly_power)
        self.iteration += 1
        self.model.train()
        batch = to_device(batch, self.device, self.cfg.channels_last)
        with autocast(self.device, self.cfg.bf16):
            losses = self.losses(batch)
        self.check_finite(losses)
        self.optimizer.zero_grad(set_to_none=True)
        losses["total"].backward()
        self.optimizer.step()
        return {name: float(value.detach()) for name, value in losses.items()}

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
                "iteration": self.iteration, "rng": capture_rng(self.generator)}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.iteration = state["iteration"]
        restore_rng(state["rng"], self.generator)


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


# --- the trainable ---------------------------------------------------------------------------


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


class StageTrainable(tune.Trainable):
    """One stage of one trial as a Ray Tune class trainable.

    config: "pipeline" (PipelineConfig.to_dict()), "data_root", and "artefacts" (the study's
    artefact folder, a local path or storage URI; the trial's folder is
    `<artefacts>/<trial_key>`) or "trial_dir"; optional "cpus" (torch threads, and map_items'
    helpers on the others: `icam.parallel.start_helpers`),
    "gpu_fraction" (CUDA memory cap) and "cache" (this node's cache folder, `cache_root`).
    Products are written to and read from storage (`self.trial_dir`, `self.stage_dir`).
    Subclasses set `trainer_cls` and implement `train_dataset()`, `collate(items)` and
    `products() -> metrics`, the stage's outputs and their J/F once training is over.
    """

    trainer_cls: type[StageTrainer] = StageTrainer

    @property
    def stage(self) -> str:
        return self.trainer_cls.stage

    def setup(self, config: dict) -> None:
        self.setup_at = time.time()
        self.pipeline = PipelineConfig.from_dict(config["pipeline"])
        self.cfg: TrainConfig = getattr(self.pipeline, self.stage)
        self.data_root = str(config["data_root"])
        trial_dir = config.get("trial_dir") or Storage.open(config["artefacts"]) / trial_key(
            self.pipeline)
        self.trial_dir = Storage.open(trial_dir)
        self.stage_dir = self.trial_dir / self.stage
        self.cache = config.get("cache")
        self.finished = read_done(self.stage_dir)
        if self.finished is not None:
            return
        progress.attach(f"{self.stage} {trial_key(self.pipeline)}")
        if config.get("cpus"):
            torch.set_num_threads(max(1, int(config["cpus"])))
            parallel.start_helpers(int(config["cpus"]) - 1)  # the CPUs torch leaves idle
        cap_gpu_memory(config.get("gpu_fraction"))
        self.check_inputs()
        self.trial_dir.write_json("config.json", self.pipeline.to_dict())
        seed_everything(self.pipeline.seed)
        self.dataset = self.training_set()
        self.batch_size = min(self.cfg.batch_size, len(self.dataset))
        self.iterations_per_epoch = len(self.dataset) // self.batch_size
        if self.cfg.iterations is None:
            max_iterations = self.cfg.epochs * self.iterations_per_epoch
            self.iterations_per_step = self.iterations_per_epoch
        else:
            max_iterations = self.cfg.iterations
            self.iterations_per_step = self.cfg.steps_per_report
        self.trainer = self.trainer_cls(self.pipeline, max_iterations)
        self._batches = None
        self._batches_epoch = -1
        self._training = None  # the training loop's progress (icam.progress.Task)

    def training_set(self) -> Dataset:
        """`train_dataset()`, cut to its first `max_train_images` items when that is set."""
        dataset = self.train_dataset()
        if self.cfg.max_train_images is not None:
            dataset = Subset(dataset, range(min(len(dataset), self.cfg.max_train_images)))
        return dataset

    # hooks
    def check_inputs(self) -> None:
        """Raise a clear error when the previous stage's artefacts are missing."""

    def train_dataset(self) -> Dataset:
        raise NotImplementedError

    def collate(self, items: list):
        raise NotImplementedError

    def products(self) -> dict:
        raise NotImplementedError

    # the data order
    def epoch_batches(self, epoch: int) -> list[list[int]]:
        """The index batches of `epoch`: a permutation drawn from (seed, stage, epoch)."""
        g = torch.Generator().manual_seed(derive_seed(self.pipeline.seed, self.stage, epoch))
        order = torch.randperm(len(self.dataset), generator=g).tolist()
        b = self.batch_size
        return [order[i * b:(i + 1) * b] for i in range(self.iterations_per_epoch)]

    def _next_batch(self):
        epoch, offset = divmod(self.trainer.iteration, self.iterations_per_epoch)
        if self._batches is None or self._batches_epoch != epoch:
            base = self.dataset.dataset if isinstance(self.dataset, Subset) else self.dataset
            base.set_epoch(epoch)
            loader_seed = derive_seed(self.pipeline.seed, self.stage, "loader", epoch)
            loader = DataLoader(self.dataset, batch_sampler=self.epoch_batches(epoch)[offset:],
                                num_workers=self.cfg.num_workers, collate_fn=self.collate,
                                generator=torch.Generator().manual_seed(loader_seed),
                                pin_memory=self.trainer.device.type == "cuda")
            self._batches, self._batches_epoch = iter(loader), epoch
        return next(self._batches)

    @property
    def epoch(self) -> int:
        return self.trainer.iteration // self.iterations_per_epoch

    def training_desc(self) -> str:
        """The training progress bar's name."""
        return "training"

    # Tune's interface
    def step(self) -> dict:
        result = self._step()
        result.update(setup_at=self.setup_at, wall_time=time.time())
        return result

    def _step(self) -> dict:
        if self.finished is not None:
            return {**self.finished, "done": True}
        trainer = self.trainer
        if trainer.iteration >= trainer.max_iterations:
            if self._training is not None:
                self._training.close()
            metrics = self.products()
            self.stage_dir.write_json(DONE_FILE, metrics)
            self.finished = metrics
            return {**metrics, "done": True}
        count = min(self.iterations_per_step, trainer.max_iterations - trainer.iteration)
        if self._training is None:
            self._training = progress.task(self.training_desc(), trainer.max_iterations,
                                           trainer.iteration)
        sums: dict[str, list[float]] = {}
        start, images = time.perf_counter(), 0
        for _ in range(count):
            batch = self._next_batch()
            for name, value in trainer.train_batch(batch).items():
                sums.setdefault(name, []).append(value)
            images += self.batch_size
            self._training.update()
        seconds = time.perf_counter() - start
        result = {("loss" if k == "total" else f"loss_{k}"): _mean(v) for k, v in sums.items()}
        result.update(images_per_s=images / seconds, epoch=self.epoch,
                      iteration=trainer.iteration, max_iterations=trainer.max_iterations,
                      lr=trainer.optimizer.param_groups[0]["lr"], done=False)
        return result

    def save_checkpoint(self, checkpoint_dir: str) -> None:
        info = {"stage": self.stage, "trial_key": trial_key(self.pipeline),
                "finished": self.finished is not None}
        if self.finished is None:
            save_state(Path(checkpoint_dir) / STATE_FILE, self.trainer.state_dict())
            info.update(iteration=self.trainer.iteration, epoch=self.epoch)
        write_json(Path(checkpoint_dir) / "position.json", info)

    def load_checkpoint(self, checkpoint_dir: str) -> None:
        path = Path(checkpoint_dir) / STATE_FILE
        if self.finished is None and path.is_file():
            self.trainer.load_state_dict(load_state(path))
            self._batches = None
            self._training = None

