"""AffinityNet training data: image crops with the pair labels of their pseudo-label maps.

The pseudo-labels are `<label_dir>/<id>.png` from `icam.inference.affinity_labels` (confident
foreground and background, 255 unsure). Each crop's label map is reduced to the feature
stride (8) and turned into the (bg, fg, neg) pair masks of `icam.models.affinity`.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from icam import VOID
from icam.data import transforms as T
from icam.data.voc import SegmentationDataset
from icam.models.affinity import affinity_labels

STRIDE = 8
_NUM_IDS = 22  # class ids 0-20, then VOID counted as id 21


class AffinityTrain:
    """(image uint8 H×W×3, mask H×W, rng) -> (normalised 3×crop×crop, long crop×crop mask).

    The reference's AffinityNet augmentation: colour jitter, optional random long-side resize
    (the authors use none), horizontal flip, and a random crop padded with the mean colour
    and VOID.
    """

    def __init__(self, crop: int = 448, resize_long: tuple[int, int] | None = None,
                 flip: bool = True,
                 jitter: tuple[float, float, float, float] | None = (0.3, 0.3, 0.3, 0.1)):
        if crop <= 0 or crop % STRIDE:
            raise ValueError(f"crop={crop}: must be a positive multiple of {STRIDE}")
        if resize_long is not None and not 0 < resize_long[0] <= resize_long[1]:
            raise ValueError(f"resize_long={resize_long}: need 0 < low <= high")
        self.crop = crop
        self.resize_long = resize_long
        self.flip = flip
        self.jitter = jitter

    def __call__(self, image: np.ndarray, mask: np.ndarray,
                 rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        if image.shape[:2] != mask.shape:
            raise ValueError(f"image {image.shape[:2]} and mask {mask.shape} sizes differ")
        if self.resize_long is not None:
            image = T.random_resize_long(image, *self.resize_long, rng)
            mask = T.resize(mask, image.shape[:2], nearest=True)
        if self.flip and rng.random() < 0.5:
            image, mask = image[:, ::-1], mask[:, ::-1]
        if self.jitter is not None:
            image = T.color_jitter(np.ascontiguousarray(image), *self.jitter, rng)
        x = T.normalize(image)
        y = torch.from_numpy(np.ascontiguousarray(mask).astype(np.int64))
        box = T.random_crop_box(*y.shape, self.crop, rng)
        return T.crop_pad(x, box, self.crop, 0.0), T.crop_pad(y, box, self.crop, VOID)


def reduce_labels(labels: torch.Tensor, stride: int = STRIDE) -> torch.Tensor:
    """H×W class ids (VOID = 255) -> ceil(H/s)×ceil(W/s): the most frequent id of each s×s
    block (VOID included, padding counted as VOID; ties go to the lower id, VOID last)."""
    height, width = labels.shape
    h, w = -(-height // stride), -(-width // stride)
    padded = labels.new_full((h * stride, w * stride), VOID)
    padded[:height, :width] = labels
    if not (((padded >= 0) & (padded < _NUM_IDS - 1)) | (padded == VOID)).all():
        raise ValueError(f"reduce_labels: ids must be 0-{_NUM_IDS - 2} or {VOID}")
    ids = torch.where(padded == VOID, _NUM_IDS - 1, padded)
    block = torch.arange(h * w).view(h, 1, w, 1).expand(h, stride, w, stride).reshape(ids.shape)
    counts = torch.bincount((block * _NUM_IDS + ids).flatten(), minlength=h * w * _NUM_IDS)
    winner = counts.view(h, w, _NUM_IDS).argmax(dim=-1)
    return torch.where(winner == _NUM_IDS - 1, VOID, winner)


class AffinityDataset(SegmentationDataset):
    """Items `(id, image 3×H×W tensor, (bg, fg, neg))`: float pair masks P×h'×w' over the
    stride-8 labels, laid out as `icam.models.affinity.affinities` (P = 34 for radius 5).

    `transform`: an `AffinityTrain` (or any (image, mask, rng) -> (x, y) transform).
    """

    def __init__(self, root, split: str, label_dir: str | os.PathLike, transform=None,
                 radius: int = 5, seed: int = 0):
        super().__init__(root, split, label_dir=label_dir, transform=transform, seed=seed)
        self.radius = radius

    def __getitem__(self, index: int):
        image_id, x, y = super().__getitem__(index)
        bg, fg, neg = affinity_labels(reduce_labels(y)[None], self.radius)
        return image_id, x, (bg[0], fg[0], neg[0])
