"""Stage 2: AffinityNet, trained on CRF labels of the CAM stage's CAMs, then the random walk.

Training labels, made first from `<trial_dir>/cam/cams/` (kept in storage across restarts):
`<trial_dir>/affinity/crf/<id>.npz`, the dense-CRF scores of each train_aug image AffinityNet
trains on (the first `max_train_images` when that is set) with the background (1 - max)^α at
the method's two exponents (ICAM: 2 and 4; SEAM: 4 and 24), which `icam.data.affinity` crops,
pools by the output stride and combines as the authors do. Crops without the random resize,
as the authors (`TrainConfig.resize_long` is not used here).

Products in `<trial_dir>/affinity/`: `rw/<id>.png`, the random-walk labels of train_aug (the
final stage's training labels) and val (beta 8, no CRF), and their J/F on train and val.
Pairs, features and the walk are at the backbone's output stride; the walk's background
exponent and length are `TrainConfig.rw_alpha` and `rw_logt` (the authors' 6 and 6); with
`rw_floor` the walk's background is at least the CAM labels' own (`propagate_labels`); with
`rw_keep` only on an image where the walk alone keeps less than that share of their background.
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch
from torch import nn

from icam import progress
from icam.data.affinity import AffinityDataset, AffinityTrain, save_crf_scores
from icam.data.voc import VOCLayout, load_image, save_mask
from icam.inference import CONVENTIONS, cam_background, crf_scores, load_cam
from icam.models.affinity import AffinityNet, affinities, affinity_labels, affinity_loss
from icam.parallel import map_items
from icam.randomwalk import random_walk_labels
from icam.stages.files import read_done
from icam.stages.scoring import score, split_metrics
from icam.stages.trainable import StageTrainable
from icam.stages.trainer import StageTrainer
from icam.storage import Storage

RADIUS = 5
"""Pairs within this radius (in stride-8 feature pixels) train the affinities."""


class AffinityTrainer(StageTrainer):
    stage = "affinity"

    def build_model(self) -> nn.Module:
        model = AffinityNet(self.backbone())
        self.load_weights(model)
        return model

    def losses(self, batch) -> dict[str, torch.Tensor]:
        images, (bg, fg, neg) = batch
        aff = affinities(self.forward(images), RADIUS)
        loss = affinity_loss(aff, bg, fg, neg)
        return {"total": loss, "aff": loss}

    def random_batch(self, n: int):
        crop, stride = self.cfg.crop, self.cfg.output_stride
        g = torch.Generator().manual_seed(0)
        size = -(-crop // stride)
        labels = torch.randint(0, 3, (n, size, size), generator=g)
        labels[labels == 2] = 255
        return torch.randn(n, 3, crop, crop, generator=g), affinity_labels(labels, RADIUS)


def _write_crf_scores(image_id: str, cam_dir: str, out_dir: str, voc_root: str,
                      alphas: tuple[float, float]) -> None:
    """One train_aug image: its CRF scores at the low and high background exponents."""
    cam, label = load_cam(Storage.open(cam_dir) / f"{image_id}.npz")
    image = load_image(Path(voc_root) / "JPEGImages" / f"{image_id}.jpg")
    low, high = (crf_scores(cam, image, alpha, label) for alpha in alphas)
    save_crf_scores(Storage.open(out_dir) / f"{image_id}.npz", low, high)


def _write_labels(item: tuple, stage_dir: str, voc_root: str) -> tuple:
    """One image: PNG of its random-walk labels and, for train/val images, their J/F sums."""
    image_id, splits, labels = item
    save_mask(Storage.open(stage_dir) / "rw" / f"{image_id}.png", labels)
    return splits, (score(labels, voc_root, image_id) if splits else None)


class AffinityStage(StageTrainable):
    """Ray Tune trainable of the AffinityNet stage: one step per epoch, then the products."""

    trainer_cls = AffinityTrainer

    def check_inputs(self) -> None:
        if read_done(self.trial_dir / "cam") is None:
            raise FileNotFoundError(f"{self.trial_dir / 'cam'}: no finished CAM stage "
                                    "(DONE.json) for this trial; run it first")

    def write_crf_scores(self) -> Path:
        """The CRF scores in crf/, made for the training images that lack them; returns a
        local folder holding them (a copy in the node's cache when the storage is remote)."""
        layout = VOCLayout(self.data_root)
        out = self.stage_dir / "crf"
        have = out.files()
        trained_on = layout.ids("train_aug")[:self.cfg.max_train_images]
        todo = [i for i in trained_on if f"{i}.npz" not in have]
        alphas = CONVENTIONS[self.pipeline.method.formulation]["crf_alphas"]
        work = functools.partial(_write_crf_scores, cam_dir=str(self.trial_dir / "cam" / "cams"),
                                 out_dir=str(out), voc_root=str(layout.root), alphas=alphas)
        map_items(work, todo, desc="CRF labels")
        return self.stage_dir.local_folder("crf", self.cache)

    def train_dataset(self):
        return AffinityDataset(self.data_root, "train_aug", self.write_crf_scores(),
                               AffinityTrain(crop=self.cfg.crop), stride=self.cfg.output_stride,
                               radius=RADIUS, seed=self.pipeline.seed,
                               limit=self.cfg.max_train_images)

    def collate(self, items: list):
        images = torch.stack([x for _, x, _ in items])
        return images, tuple(torch.stack([y[k] for _, _, y in items]) for k in range(3))

    @torch.no_grad()
    def products(self) -> dict:
        layout = VOCLayout(self.data_root)
        evaluated = {"train": layout.ids("train"), "val": layout.ids("val")}
        splits: dict[str, tuple] = {}
        for split, ids in evaluated.items():
            for i in ids:
                splits[i] = (*splits.get(i, ()), split)
        ids = list(dict.fromkeys([*layout.ids("train_aug"), *evaluated["val"],
                                  *evaluated["train"]]))
        model = self.trainer.model.eval()
        work = functools.partial(_write_labels, stage_dir=str(self.stage_dir),
                                 voc_root=str(layout.root))
        cams = self.trial_dir / "cam" / "cams"
        background = CONVENTIONS[self.pipeline.method.formulation]["cam_background"]
        block, scored = [], []
        with progress.task("random walk", len(ids)) as bar:
            for k, image_id in enumerate(ids):
                image = load_image(layout.image_path(image_id))
                cam, _ = load_cam(cams / f"{image_id}.npz")
                guarded = self.cfg.rw_floor or self.cfg.rw_keep > 0
                floor = cam_background(cam, background) if guarded else None
                labels = random_walk_labels(model, image, cam, logt=self.cfg.rw_logt,
                                            alpha=self.cfg.rw_alpha,
                                            stride=self.cfg.output_stride,
                                            device=self.trainer.device, floor=floor,
                                            keep=None if self.cfg.rw_floor else self.cfg.rw_keep,
                                            bf16=self.trainer.bf16)
                block.append((image_id, splits.get(image_id, ()), labels))
                if len(block) == 64 or k == len(ids) - 1:
                    scored += map_items(work, block, progress=False)
                    bar.update(len(block))
                    block = []
        return split_metrics(self.stage, [s for s in scored if s[1] is not None])
