"""Stage 3: DeepLab-v1 (LargeFOV) trained on the AffinityNet's random-walk labels (read from
a copy in the node's cache).

Products in `<trial_dir>/final/` (in the study's storage): `pred/<id>.png`, the multi-scale +
flip predictions after the dense CRF for train and val, and their J/F. Test-time CRF as in the
authors' evaluation script (lib/utils/DenseCRF.py): softmax unaries, Gaussian sxy 3 compat 3,
bilateral sxy 32 srgb 13 compat 10, one mean-field iteration."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from icam import NUM_CLASSES, VOID
from icam.crf import dense_crf
from icam.data.transforms import SegmentationTrain
from icam.data.voc import (
    InferenceDataset,
    SegmentationDataset,
    VOCLayout,
    keep_item,
    load_image,
    save_mask,
)
from icam.losses import denormalized_features, feature_similarity_loss
from icam.models.deeplab import DeepLabV1
from icam.parallel import map_items
from icam.stages.common import StageTrainable, StageTrainer, read_done, score, split_metrics
from icam.storage import Storage

CRF_PARAMS = {"iterations": 1, "bilateral_sxy": 32}
"""The final stage's test-time CRF (the rest as `icam.crf.dense_crf`'s defaults)."""

FINAL_FSL_WEIGHT = 1.0
"""With the FSL on, the final stage adds the FSL on DeepLab's output-stride softmax, as the
authors' train_final.py does (the paper leaves this out): its 0.5 · L_fs with ||a_i - a_j||²
is 1.0 × our FSL with g = ½||a_i - a_j||² (eq. 11)."""

BLOCK = 32
"""Images whose probabilities are held at once between inference and the CRF tasks."""


class FinalTrainer(StageTrainer):
    stage = "final"

    def build_model(self) -> nn.Module:
        model = DeepLabV1(self.backbone(), num_classes=NUM_CLASSES)
        self.load_weights(model)
        return model

    def losses(self, batch) -> dict[str, torch.Tensor]:
        images, targets = batch
        coarse = self.model(images)
        logits = F.interpolate(coarse, images.shape[2:], mode="bilinear", align_corners=True)
        ce = F.cross_entropy(logits.float(), targets, ignore_index=VOID)
        method = self.pipeline.method
        if not method.fsl:
            return {"total": ce, "ce": ce}
        features = denormalized_features(images, coarse.shape[2:])
        fsl = feature_similarity_loss(features, torch.softmax(coarse.float(), dim=1),
                                      method.mu, method.sigma)
        return {"total": ce + FINAL_FSL_WEIGHT * fsl, "ce": ce, "fsl": fsl}

    def random_batch(self, n: int):
        crop = self.cfg.crop
        g = torch.Generator().manual_seed(0)
        targets = torch.randint(0, NUM_CLASSES, (n, crop, crop), generator=g)
        targets[:, :, : crop // 8] = VOID
        return torch.randn(n, 3, crop, crop, generator=g), targets


@torch.no_grad()
def segment(model: nn.Module, views: list[torch.Tensor], size: tuple[int, int],
            device: torch.device) -> np.ndarray:
    """K x H x W class probabilities: softmax of the view logits upsampled (align_corners)
    to `size`, mirrored back and averaged over scales and flips."""
    total, count = 0.0, 0
    for batch in views:
        logits = model(batch.to(device)).float()
        logits = F.interpolate(logits, size, mode="bilinear", align_corners=True)
        if logits.shape[0] == 2:
            logits[1] = logits[1].flip(-1)
        total = total + logits.sum(dim=0)
        count += logits.shape[0]
    return torch.softmax(total / count, dim=0).cpu().numpy()


def _final_products(item: tuple, stage_dir: str, voc_root: str) -> tuple:
    """One image: dense CRF on the probabilities, argmax, PNG, and its J/F sums."""
    image_id, splits, probs = item
    image = load_image(Path(voc_root) / "JPEGImages" / f"{image_id}.jpg")
    pred = dense_crf(image, probs, **CRF_PARAMS).argmax(axis=0).astype(np.uint8)
    save_mask(Storage.open(stage_dir) / "pred" / f"{image_id}.png", pred)
    return splits, score(pred, voc_root, image_id)


class FinalStage(StageTrainable):
    """Ray Tune trainable of the final stage: `steps_per_report` iterations per step."""

    trainer_cls = FinalTrainer

    def check_inputs(self) -> None:
        if read_done(self.trial_dir / "affinity") is None:
            raise FileNotFoundError(f"{self.trial_dir / 'affinity'}: no finished AffinityNet "
                                    "stage (DONE.json) for this trial; run it first")

    def train_dataset(self):
        transform = SegmentationTrain(crop=self.cfg.crop, scale=self.cfg.scale)
        labels = self.trial_dir.local_folder("affinity/rw", self.cache)
        return SegmentationDataset(self.data_root, "train_aug", labels, transform,
                                   seed=self.pipeline.seed)

    def collate(self, items: list):
        return torch.stack([x for _, x, _ in items]), torch.stack([y for _, _, y in items])

    def products(self) -> dict:
        layout = VOCLayout(self.data_root)
        model = self.trainer.model.eval()
        work = functools.partial(_final_products, stage_dir=str(self.stage_dir),
                                 voc_root=str(layout.root))
        scored = []
        for split in ("train", "val"):
            dataset = InferenceDataset(self.data_root, split, self.cfg.infer_scales, flip=True)
            loader = DataLoader(dataset, batch_size=None, collate_fn=keep_item,
                                num_workers=self.cfg.num_workers)
            block = []
            for k, (image_id, image, views, _) in enumerate(loader):
                probs = segment(model, views, image.shape[:2], self.trainer.device)
                block.append((image_id, (split,), probs))
                if len(block) == BLOCK or k == len(dataset) - 1:
                    scored += map_items(work, block, desc=f"final CRF {split}")
                    block = []
        return split_metrics(self.stage, scored)
