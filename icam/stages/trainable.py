"""One stage of one trial as a Ray Tune class trainable: data order, steps, checkpoints, resume.

`StageTrainable` drives a `StageTrainer` through one Tune step per epoch (or per
`steps_per_report` iterations), checkpoints the trainer's whole state after every step, and
writes the stage's training loss curve (`losses.csv`: the mean loss of every step), its
products and its DONE marker once training is over. A stage that finds its
marker reports the stored metrics and trains nothing; one restored from a checkpoint continues
with the batch it would have drawn next.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
from ray import tune
from torch.utils.data import DataLoader, Dataset, Subset

from icam import parallel, progress
from icam.config import PipelineConfig, TrainConfig
from icam.stages.files import (
    DONE_FILE,
    STATE_FILE,
    load_state,
    read_done,
    save_state,
    trial_key,
    write_json,
)
from icam.stages.seeding import derive_seed, seed_everything
from icam.stages.trainer import StageTrainer, cap_gpu_memory
from icam.storage import Storage

LOSSES_FILE = "losses.csv"
"""A stage's training loss curve, beside its products: one row per Tune step."""


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def loss_curve_csv(curve: list[dict]) -> str:
    """`round,iteration,epoch,loss` rows of a loss curve, then the columns its steps share:
    the loss terms (`loss_<term>`), the mean gradient norm of each parameter group
    (`grad_<group>`) and the new weights' learning rate at the step's end (`lr_new_w`)."""
    fixed = ["round", "iteration", "epoch", "loss"]
    extra = [k for k in curve[0] if k not in fixed and all(k in r for r in curve)] if curve else []
    rows = [",".join(fixed + extra)]
    for r in curve:
        values = [str(r["round"]), str(r["iteration"]), f"{r['epoch']:g}"]
        rows.append(",".join(values + [f"{r[k]:.6g}" for k in ["loss", *extra]]))
    return "\n".join(rows) + "\n"


class StageTrainable(tune.Trainable):
    """One stage of one trial as a Ray Tune class trainable.

    config: "pipeline" (PipelineConfig.to_dict()), "data_root", and "artefacts" (the study's
    artefact folder, a local path or storage URI; the trial's folder is
    `<artefacts>/<trial_key>`) or "trial_dir"; optional "cpus" (the study's CPUs per trial,
    raised to the stage's `threads` (`TrainConfig.cpus`): torch threads unless `threads` is
    set, and map_items' helpers on the others: `icam.parallel.start_helpers`),
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
        cpus = self.cfg.cpus(int(config.get("cpus") or 0))
        if self.cfg.threads or cpus:
            torch.set_num_threads(self.cfg.threads or cpus)
        if cpus:
            parallel.start_helpers(cpus - 1)  # the CPUs torch leaves idle between its loops
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
            self.stage_dir.write_bytes(loss_curve_csv(trainer.loss_curve).encode(), LOSSES_FILE)
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
                sums.setdefault("loss" if name == "total" else f"loss_{name}", []).append(value)
            for name, value in trainer.grad_norms.items():
                sums.setdefault(f"grad_{name}", []).append(value)
            images += self.batch_size
            self._training.update()
        seconds = time.perf_counter() - start
        result = {k: _mean(v) for k, v in sums.items()}
        trainer.loss_curve.append({
            "round": trainer.round, "iteration": trainer.iteration,
            "epoch": round(trainer.iteration / self.iterations_per_epoch, 3), **result,
            "lr_new_w": trainer.optimizer.param_groups[2]["lr"]})
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

