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


def foreground(acc: JFAccumulator) -> tuple[float, float]:
    """(predicted, true) share of the non-void pixels that are foreground, in percent."""
    total = max(1, int(acc.confusion.sum()))
    return (float(100 * (1 - acc.confusion[:, 0].sum() / total)),
            float(100 * (1 - acc.confusion[0, :].sum() / total)))


def flooded(acc: JFAccumulator) -> bool:
    """One image's prediction is a single foreground class where its truth has background."""
    classes = np.flatnonzero(acc.pred_pixels)
    return bool(len(classes) == 1 and classes[0] != 0 and acc.confusion[0].sum() > 0)


def split_metrics(stage: str, scored: list[tuple[tuple[str, ...], JFAccumulator]]) -> dict:
    """`<stage>/<split>/<J|F|JF>` (percent) from (splits, JFAccumulator) pairs, one per image,
    with `fg` and `fg_truth` (`foreground`) and `flooded` (the count of `flooded` images)."""
    metrics = {}
    for split in ("train", "val"):
        acc, floods = JFAccumulator(), 0
        for splits, image_acc in scored:
            if split in splits:
                acc.merge(image_acc)
                floods += flooded(image_acc)
        result = acc.result()
        metrics.update({f"{stage}/{split}/{m}": result[m] for m in ("J", "F", "JF")})
        metrics[f"{stage}/{split}/images"] = acc.num_images
        fg, fg_truth = foreground(acc)
        metrics.update({f"{stage}/{split}/fg": fg, f"{stage}/{split}/fg_truth": fg_truth,
                        f"{stage}/{split}/flooded": floods})
    return metrics

