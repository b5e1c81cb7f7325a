"""Stage 1: the CAM network (SEAM's siamese network with ICAM's or SEAM's losses).

Products in `<trial_dir>/cam/` (in the study's storage): `cams/<id>.npz` (multi-scale + flip
CAMs of train_aug and val, uint8-quantised), `labels/` (the CAM pseudo-labels of train and
val, argmax without CRF with the method's background: ICAM's 1 - sum, SEAM's constant 0.26)
and their J/F. The CRF labels AffinityNet trains on are made from `cams/` by the affinity
stage, so a study that stops here does not pay for them.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Subset

from icam import parallel, progress
from icam.config import PipelineConfig
from icam.data.transforms import ClassificationTrain
from icam.data.voc import ClassificationDataset, InferenceDataset, VOCLayout, keep_item, save_mask
from icam.inference import CONVENTIONS, cam_argmax_labels, infer_cam, load_cam, save_cam
from icam.losses import FslParameters, cam_losses, siamese_view
from icam.models.cam import CamNet
from icam.stages.scoring import score, split_metrics
from icam.stages.trainable import StageTrainable
from icam.stages.trainer import StageTrainer
from icam.storage import Storage


class CamModel(nn.Module):
    """CamNet, plus the learned μ and σ of the FSL for early ICAM."""

    def __init__(self, pipeline: PipelineConfig, backbone: nn.Module):
        super().__init__()
        method = pipeline.method
        source = "seam" if method.formulation == "seam" else "logits"
        self.net = CamNet(backbone, num_classes=21, pcm_source=source)
        self.fsl = FslParameters(method.mu, method.sigma) if method.learn_fsl else None

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.net(x)

    def parameter_groups(self):
        pretrained_w, pretrained_b, new_w, new_b = self.net.parameter_groups()
        if self.fsl is not None:  # μ and σ train as a new layer
            new_w = [*new_w, *self.fsl.parameters()]
        return pretrained_w, pretrained_b, new_w, new_b


class CamTrainer(StageTrainer):
    stage = "cam"

    def build_model(self) -> nn.Module:
        model = CamModel(self.pipeline, self.backbone())
        self.load_weights(model.net)
        return model

    def losses(self, batch) -> dict[str, torch.Tensor]:
        images, labels = batch
        view2 = siamese_view(images, self.cfg.siamese_scale)
        out1, out2 = self.forward(images), self.forward(view2)
        return cam_losses(out1, out2, images, labels, self.pipeline.method, self.generator,
                          fsl_params=self.model.fsl, image2=view2)

    def random_batch(self, n: int):
        crop = self.cfg.crop
        g = torch.Generator().manual_seed(0)
        labels = (torch.rand(n, 20, generator=g) < 0.15).float()
        labels[torch.arange(n), torch.randint(0, 20, (n,), generator=g)] = 1
        return torch.randn(n, 3, crop, crop, generator=g), labels


def _cam_products(item: tuple, stage_dir: str, voc_root: str,
                  background: float | None) -> tuple:
    """One train or val image: its evaluated CAM labels and their J/F sums."""
    image_id, splits = item
    stage = Storage.open(stage_dir)
    cam, _ = load_cam(stage / "cams" / f"{image_id}.npz")
    labels = cam_argmax_labels(cam, background)
    save_mask(stage / "labels" / f"{image_id}.png", labels)
    return splits, score(labels, voc_root, image_id)


class CamStage(StageTrainable):
    """Ray Tune trainable of the CAM stage: one step per epoch, then one for the products."""

    trainer_cls = CamTrainer

    def train_dataset(self):
        transform = ClassificationTrain(crop=self.cfg.crop, resize_long=self.cfg.resize_long)
        return ClassificationDataset(self.data_root, "train_aug", transform,
                                     seed=self.pipeline.seed)

    def collate(self, items: list):
        return torch.stack([x for _, x, _ in items]), torch.stack([y for _, _, y in items])

    @torch.no_grad()
    def write_cams(self, split: str, ids: list[str]) -> None:
        """Multi-scale + flip CAMs of `ids` (of `split`) into cams/, keeping those there."""
        out = self.stage_dir / "cams"
        dataset = InferenceDataset(self.data_root, split, self.cfg.infer_scales, flip=True)
        wanted = set(ids) - {name.removesuffix(".npz") for name in out.files()}
        todo = [k for k, i in enumerate(dataset.ids) if i in wanted]
        loader = DataLoader(Subset(dataset, todo), batch_size=None, collate_fn=keep_item,
                            num_workers=self.cfg.num_workers)
        model = self.trainer.model.net.eval()

        def infer(item) -> None:
            image_id, image, views, label = item
            cam = infer_cam(model, image, label.numpy(), views=views,
                            formulation=self.pipeline.method.formulation,
                            device=self.trainer.device, bf16=self.trainer.bf16)
            # SEAM's min-max leaves the pixels below min + eps at -(min + eps) / (max - min +
            # eps) (`seam_min_max`); stored CAMs hold [0, 1], so they are stored as 0
            save_cam(out / f"{image_id}.npz", np.maximum(cam, 0), label.numpy())

        # on a CPU, one image per torch thread (`parallel.threaded`); on a GPU, one at a time
        threads = torch.get_num_threads() if self.trainer.device.type == "cpu" else 1
        with progress.task(f"CAM inference {split}", len(todo)) as bar:
            for _ in parallel.threaded(infer, loader, threads):
                bar.update()

    def products(self) -> dict:
        layout = VOCLayout(self.data_root)
        train_aug = layout.ids("train_aug")
        evaluated = {"train": layout.ids("train"), "val": layout.ids("val")}
        self.write_cams("train_aug", train_aug)
        self.write_cams("val", evaluated["val"])
        extra = sorted(set(evaluated["train"]) - set(train_aug) - set(evaluated["val"]))
        self.write_cams("train", extra)
        splits: dict[str, tuple] = {}
        for split, ids in evaluated.items():
            for i in ids:
                splits[i] = (*splits.get(i, ()), split)
        background = CONVENTIONS[self.pipeline.method.formulation]["cam_background"]
        work = functools.partial(_cam_products, stage_dir=str(self.stage_dir),
                                 voc_root=str(layout.root), background=background)
        scored = parallel.map_items(work, list(splits.items()), desc="CAM labels")
        return split_metrics(self.stage, scored)
