"""AffinityNet training data: image crops with the pair labels of their CRF label scores.

As the authors' AffDataset (voc/data.py): the dense-CRF probabilities of an image at the two
background exponents (low α: more background, high α: less) are cropped and flipped with the
image, average-pooled by the feature stride, and arg-maxed per α; confident foreground is
where the low-α scores still say foreground, confident background where the high-α scores
still say background, the rest (and the crop's padding) is ignored. The (bg, fg, neg) pair
masks of `icam.models.affinity` follow.

Scores are stored per image as `<dir>/<id>.npz` (`save_crf_scores`): the probabilities of the
background and the present classes at both exponents, at 12 bits (`icam.codec`).
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from icam import VOID, codec
from icam.data import transforms as T
from icam.data.voc import _VOCDataset, load_image
from icam.models.affinity import affinity_labels
from icam.storage import Storage

NO_SCORE = 1e-5
"""A pooled cell whose scores all stay below this is padding: ignored (the reference's)."""


def save_crf_scores(path: str | os.PathLike | Storage, low: np.ndarray,
                    high: np.ndarray) -> None:
    """Write the (1 + P)×H×W CRF probabilities at the low and high α, at 12 bits
    (`icam.codec`), all or nothing, to a local path or a storage location."""
    if low.shape != high.shape or low.ndim != 3:
        raise ValueError(f"{path}: low and high scores must be (1+P)×H×W of one shape, got "
                         f"{low.shape} and {high.shape}")
    buffer = io.BytesIO()
    np.savez_compressed(buffer, low=codec.encode(low), high=codec.encode(high),
                        levels=codec.LEVELS)
    Storage.open(path).write_bytes(buffer.getvalue())


def load_crf_scores(path: str | os.PathLike) -> np.ndarray:
    """2(1 + P)×H×W float32 in [0, 1]: the low-α channels, then the high-α ones."""
    try:
        with np.load(path, allow_pickle=False) as f:
            low, high = codec.read_maps(f, "low"), codec.read_maps(f, "high")
    except (OSError, KeyError, ValueError) as err:
        raise ValueError(f"{path}: not a CRF score file written by save_crf_scores ({err})") \
            from err
    return np.concatenate([low, high])


def pooled_affinity_labels(scores: torch.Tensor, stride: int) -> torch.Tensor:
    """h×w labels from 2(1 + P)×H×W crop scores (H, W multiples of `stride`): 0 background,
    1 + p a present class, VOID unsure or padding."""
    pooled = F.avg_pool2d(scores[None], stride)[0]
    low, high = pooled.chunk(2)
    labels = low.argmax(dim=0)
    labels[labels == 0] = VOID
    labels[high.argmax(dim=0) == 0] = 0
    labels[pooled.amax(dim=0) < NO_SCORE] = VOID
    return labels


class AffinityTrain:
    """(image uint8 H×W×3, scores K×H×W, rng) -> (normalised 3×crop×crop, K×crop×crop scores).

    The reference's AffinityNet augmentation: colour jitter, horizontal flip, and a random crop
    (no resize). The reference crops the image before normalising it, so its padding is black
    (`NORMALISED_BLACK`); the scores are padded with 0 (no score).
    """

    def __init__(self, crop: int = 448, flip: bool = True,
                 jitter: tuple[float, float, float, float] | None = (0.3, 0.3, 0.3, 0.1)):
        if crop <= 0:
            raise ValueError(f"crop={crop}: must be positive")
        self.crop = crop
        self.flip = flip
        self.jitter = jitter

    def __call__(self, image: np.ndarray, scores: np.ndarray,
                 rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        if image.shape[:2] != scores.shape[1:]:
            raise ValueError(f"image {image.shape[:2]} and scores {scores.shape[1:]} sizes "
                             "differ")
        if self.flip and rng.random() < 0.5:
            image, scores = image[:, ::-1], scores[:, :, ::-1]
        if self.jitter is not None:
            image = T.color_jitter(np.ascontiguousarray(image), *self.jitter, rng)
        x = T.normalize(image)
        s = torch.from_numpy(np.ascontiguousarray(scores))
        box = T.random_crop_box(*s.shape[1:], self.crop, rng)
        return (T.crop_pad(x, box, self.crop, T.NORMALISED_BLACK),
                T.crop_pad(s, box, self.crop, 0.0))


class AffinityDataset(_VOCDataset):
    """Items `(id, image 3×crop×crop tensor, (bg, fg, neg))`: float pair masks P×h'×w' over
    the pooled labels, laid out as `icam.models.affinity.affinities` (P = 34 for radius 5).

    `score_dir` holds `<id>.npz` from `save_crf_scores` for every image of the split (of its
    first `limit` images when that is set); the crop must be a multiple of `stride`, the
    backbone's output stride.
    """

    def __init__(self, root, split: str, score_dir: str | os.PathLike,
                 transform: AffinityTrain, stride: int = 8, radius: int = 5, seed: int = 0,
                 limit: int | None = None):
        super().__init__(root, split, seed)
        self.ids = self.ids[:limit]
        if transform.crop % stride:
            raise ValueError(f"crop={transform.crop}: must be a multiple of the output stride "
                             f"{stride}")
        self.score_dir = Path(score_dir)
        self.transform = transform
        self.stride = stride
        self.radius = radius
        present = set(os.listdir(self.score_dir)) if self.score_dir.is_dir() else set()
        for image_id in self.ids:
            if f"{image_id}.npz" not in present:
                raise FileNotFoundError(f"{self.score_dir / (image_id + '.npz')}: CRF scores "
                                        f"not found for id {image_id} of "
                                        f"{self.layout.list_path(split)}")

    def __getitem__(self, index: int):
        image_id = self.ids[index]
        image = load_image(self.layout.image_path(image_id))
        scores = load_crf_scores(self.score_dir / f"{image_id}.npz")
        x, s = self.transform(image, scores, self.rng(index))
        labels = pooled_affinity_labels(s, self.stride)
        bg, fg, neg = affinity_labels(labels[None], self.radius)
        return image_id, x, (bg[0], fg[0], neg[0])
