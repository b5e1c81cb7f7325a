"""J and F of a stage's predictions against the ground truth, per image and per split."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from icam.data.voc import load_mask
from icam.metrics import JFAccumulator


def ground_truth(voc_root: str | os.PathLike, image_id: str) -> np.ndarray:
    """An image's ground truth: VOC's own mask, else SBD's (SegmentationClassAug)."""
    path = Path(voc_root) / "SegmentationClass" / f"{image_id}.png"
    if not path.is_file():
        path = Path(voc_root) / "SegmentationClassAug" / f"{image_id}.png"
    return load_mask(path)


def score(pred: np.ndarray, voc_root: str | os.PathLike, image_id: str) -> JFAccumulator:
    """J/F sums of one predicted label map against its ground truth."""
    acc = JFAccumulator()
    acc.add(pred, ground_truth(voc_root, image_id))
    return acc


def split_metrics(stage: str, scored: list[tuple[tuple[str, ...], JFAccumulator]]) -> dict:
    """`<stage>/<split>/<J|F|JF>` (percent) from (splits, JFAccumulator) pairs, one per image."""
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

