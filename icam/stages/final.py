"""Stage 3: DeepLab-v1 (LargeFOV) trained on the AffinityNet's random-walk labels (read from
a copy in the node's cache).

Products in `<trial_dir>/final/` (in the study's storage): `pred/<id>.png`, the multi-scale +
flip predictions after the dense CRF for train and val, and their J/F. Test-time CRF as in the
authors' evaluation script (lib/utils/DenseCRF.py): softmax unaries, Gaussian sxy 3 compat 3,
bilateral sxy 32 srgb 13 compat 10, one mean-field iteration.

With `extended` (PMM's extended training, icam.extended): round 1 trains with the pretended
under-fitting loss; its last model writes the cyclic pseudo-masks `cp/<id>.png` of train_aug;
round 2 trains a fresh model (pre-trained backbone) on them with plain cross-entropy, and the
predictions follow PMM's test time (softmax averaged over views, PMM's CRF). No FSL in either
round: PMM's segmentation code, which produced the paper's "et" rows, has none. A checkpoint
holds its round; a trial that stops while the masks are made resumes from round 1's last
checkpoint and keeps the masks already written.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from icam import NUM_CLASSES, VOID, progress
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
from icam.extended import (
    CYCLIC_CRF,
    cyclic_cross_entropy,
    pretended_underfitting_loss,
)
from icam.losses import denormalized_features, feature_similarity_loss
from icam.models.deeplab import DeepLabV1
from icam.parallel import map_items
from icam.precision import run_network
from icam.stages.files import read_done
from icam.stages.scoring import score, split_metrics
from icam.stages.seeding import derive_seed
from icam.stages.trainable import StageTrainable
from icam.stages.trainer import StageTrainer
from icam.storage import Storage

CRF_PARAMS = {"iterations": 1, "bilateral_sxy": 32}
"""The final stage's test-time CRF (the rest as `icam.crf.dense_crf`'s defaults)."""

FINAL_FSL_WEIGHT = 1.0
"""With the FSL on, the final stage adds the FSL on DeepLab's output-stride softmax, as the
authors' train_final.py does (the paper leaves this out): its 0.5 · L_fs with ||a_i - a_j||²
is 1.0 × our FSL with g = ½||a_i - a_j||² (eq. 11)."""

BLOCK = 32
"""Images whose probabilities are held at once between inference and the CRF tasks."""

CYCLIC_DIR = "cp"
"""Extended training: the cyclic pseudo-masks, `<trial_dir>/final/cp/<id>.png`."""


class FinalTrainer(StageTrainer):
    stage = "final"
    # round (StageTrainer's): 1 (PUF, AffinityNet's labels) or 2 (cyclic pseudo-masks)

    def build_model(self) -> nn.Module:
        model = DeepLabV1(self.backbone(), num_classes=NUM_CLASSES)
        self.load_weights(model)
        return model

    def start_cyclic_round(self) -> None:
        """Round 2: a fresh model from the pre-trained weights (its new layers drawn from the
        trial's seed), a fresh optimiser, iteration 0."""
        torch.manual_seed(derive_seed(self.pipeline.seed, self.stage, "cyclic"))
        self.model, self.optimizer = self.fresh_model()
        self.iteration, self.round = 0, 2

    def state_dict(self) -> dict:
        return {**super().state_dict(), "round": self.round}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.round = int(state.get("round", 1))

    def losses(self, batch) -> dict[str, torch.Tensor]:
        images, targets = batch
        coarse = self.forward(images)
        logits = F.interpolate(coarse, images.shape[2:], mode="bilinear", align_corners=True)
        if self.cfg.extended and self.round == 1:
            puf = pretended_underfitting_loss(logits, targets)
            return {"total": puf, "puf": puf}
        if self.cfg.extended:
            ce = cyclic_cross_entropy(logits, targets)
            return {"total": ce, "ce": ce}
        ce = F.cross_entropy(logits, targets, ignore_index=VOID)
        method = self.pipeline.method
        if not method.fsl:
            return {"total": ce, "ce": ce}
        features = denormalized_features(images, coarse.shape[2:])
        fsl = feature_similarity_loss(features, torch.softmax(coarse, dim=1),
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
            device: torch.device, softmax_first: bool = False,
            bf16: bool = False) -> np.ndarray:
    """K x H x W class probabilities: softmax of the view logits upsampled (align_corners)
    to `size`, mirrored back and averaged over scales and flips; with `softmax_first` the
    softmax of each view is averaged instead (PMM's aug_test). With `bf16` the network runs
    in bfloat16; the rest, and so the CRF's input, is float32."""
    total, count = 0.0, 0
    for batch in views:
        logits = run_network(model, batch.to(device), bf16)
        logits = F.interpolate(logits, size, mode="bilinear", align_corners=True)
        if softmax_first:
            logits = torch.softmax(logits, dim=1)
        if logits.shape[0] == 2:
            logits[1] = logits[1].flip(-1)
        total = total + logits.sum(dim=0)
        count += logits.shape[0]
    mean = total / count
    return (mean if softmax_first else torch.softmax(mean, dim=0)).cpu().numpy()


def _final_products(item: tuple, out_dir: str, voc_root: str, crf: dict) -> tuple:
    """One image: dense CRF on the probabilities, argmax, PNG in `out_dir`, and its J/F sums
    (None for an image without splits to score)."""
    image_id, splits, probs = item
    image = load_image(Path(voc_root) / "JPEGImages" / f"{image_id}.jpg")
    pred = dense_crf(image, probs, **crf).argmax(axis=0).astype(np.uint8)
    save_mask(Storage.open(out_dir) / f"{image_id}.png", pred)
    return splits, score(pred, voc_root, image_id) if splits else None


class FinalStage(StageTrainable):
    """Ray Tune trainable of the final stage: `steps_per_report` iterations per step."""

    trainer_cls = FinalTrainer

    def check_inputs(self) -> None:
        if read_done(self.trial_dir / "affinity") is None:
            raise FileNotFoundError(f"{self.trial_dir / 'affinity'}: no finished AffinityNet "
                                    "stage (DONE.json) for this trial; run it first")

    def train_dataset(self):
        cyclic = hasattr(self, "trainer") and self.trainer.round == 2
        source = (self.stage_dir, CYCLIC_DIR) if cyclic else (self.trial_dir, "affinity/rw")
        labels = source[0].local_folder(source[1], self.cache)
        transform = SegmentationTrain(crop=self.cfg.crop, scale=self.cfg.scale)
        return SegmentationDataset(self.data_root, "train_aug", labels, transform,
                                   seed=self.pipeline.seed)

    def collate(self, items: list):
        return torch.stack([x for _, x, _ in items]), torch.stack([y for _, _, y in items])

    def _step(self) -> dict:
        if self.finished is not None or not self.cfg.extended:
            return super()._step()
        trainer = self.trainer
        if trainer.round == 1 and trainer.iteration >= trainer.max_iterations:
            if self._training is not None:
                self._training.close()
                self._training = None  # round 2 counts its iterations on a bar of its own
            made = self.cyclic_pseudo_masks()
            trainer.start_cyclic_round()
            self.dataset, self._batches = self.training_set(), None
            return {"round": 2, "cyclic_masks_made": made, "epoch": 0, "iteration": 0,
                    "max_iterations": trainer.max_iterations, "done": False}
        return {**super()._step(), "round": trainer.round}

    def training_desc(self) -> str:
        return f"training round {self.trainer.round}" if self.cfg.extended else "training"

    def load_checkpoint(self, checkpoint_dir: str) -> None:
        super().load_checkpoint(checkpoint_dir)
        if self.finished is None and self.trainer.round == 2:
            self.dataset = self.training_set()

    def cyclic_pseudo_masks(self) -> int:
        """Round 1's last model predicts train_aug into `cp/` (PMM's test time and CRF, argmax,
        no ignore region); masks already there are kept. Returns how many were made.

        PMM took round 1's checkpoint with the best val mIoU (checked every 2k iterations),
        which chooses by val ground truth; here the last one is used (no val labels seen)."""
        folder = self.stage_dir / CYCLIC_DIR
        dataset = InferenceDataset(self.data_root, "train_aug", self.cfg.infer_scales, flip=True)
        have = folder.files()
        dataset.ids = [i for i in dataset.ids if f"{i}.png" not in have]
        self.predict(dataset, folder, (), "cyclic pseudo-masks")
        return len(dataset)

    def predict(self, dataset: InferenceDataset, folder: Storage, splits: tuple[str, ...],
                desc: str) -> list:
        """CRF'd multi-scale predictions of `dataset` as PNGs in the storage `folder`;
        (splits, J/F sums) per image (sums None without `splits`)."""
        model = self.trainer.model.eval()
        work = functools.partial(_final_products, out_dir=str(folder),
                                 voc_root=str(VOCLayout(self.data_root).root),
                                 crf=CYCLIC_CRF if self.cfg.extended else CRF_PARAMS)
        loader = DataLoader(dataset, batch_size=None, collate_fn=keep_item,
                            num_workers=self.cfg.num_workers)
        scored, block = [], []
        with progress.task(desc, len(dataset)) as bar:
            for k, (image_id, image, views, _) in enumerate(loader):
                probs = segment(model, views, image.shape[:2], self.trainer.device,
                                softmax_first=self.cfg.extended, bf16=self.trainer.bf16)
                block.append((image_id, splits, probs))
                if len(block) == BLOCK or k == len(dataset) - 1:
                    scored += map_items(work, block, progress=False)
                    bar.update(len(block))
                    block = []
        return scored

    def products(self) -> dict:
        scored = []
        for split in ("train", "val"):
            dataset = InferenceDataset(self.data_root, split, self.cfg.infer_scales, flip=True)
            scored += self.predict(dataset, self.stage_dir / "pred", (split,),
                                   f"prediction + CRF {split}")
        return split_metrics(self.stage, scored)
