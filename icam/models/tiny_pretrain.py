"""The tiny backbone's stand-in for ImageNet pre-training.

The paper's backbone starts from ImageNet weights: it has already learned to tell objects
apart from object-centred photographs before it ever sees VOC's weak labels. The tiny backbone
gets the same start here: fully supervised classification of object-centred crops (and of
object-free background crops) rendered by the synthetic generator from its own random stream,
disjoint from every benchmark the generator writes. No segmentation mask is used in training;
the masks only locate each object's box, as ImageNet's photographers framed theirs.

    python -m icam.models.tiny_pretrain --out icam/models/tiny_synthetic.npz

The shipped file (named "tiny-synthetic" in configs) was written by this command with its
defaults; the `.npz` holds the backbone's state dict plus the crop classifier (`head.*`).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from tqdm import tqdm

from icam.data.synthetic import CLASSES, render_sample
from icam.data.transforms import color_jitter, normalize
from icam.models.tiny import TinyBackbone

CROP = 64
STREAM = 0x1CA4  # first entropy word of the pre-training stream (benchmarks use 3-word keys)
BACKGROUND_CROP = 48


def _object_crop(image: np.ndarray, region: np.ndarray) -> np.ndarray:
    """The object's bounding box with a 15% margin, resized to CROP x CROP."""
    ys, xs = np.nonzero(region)
    margin = int(0.15 * max(np.ptp(ys), np.ptp(xs)))
    box = (max(0, xs.min() - margin), max(0, ys.min() - margin),
           min(image.shape[1], xs.max() + margin + 1), min(image.shape[0], ys.max() + margin + 1))
    return np.asarray(Image.fromarray(image).crop(box).resize((CROP, CROP), Image.BICUBIC))


def render_crops(count: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """`count` crops (N x CROP x CROP x 3 uint8) and classes (0 background, k = CLASSES[k-1])."""
    crops, classes, index = [], [], 0
    while len(crops) < count:
        rng = np.random.default_rng([STREAM, seed, 0, index])
        image, mask = render_sample(rng)
        index += 1
        for k, cls in enumerate(CLASSES, start=1):
            if (mask == cls.voc_id).sum() >= 50:
                crops.append(_object_crop(image, mask == cls.voc_id))
                classes.append(k)
        h, w = mask.shape
        for _ in range(3):  # one object-free background crop, if one is found quickly
            y, x = rng.integers(0, h - BACKGROUND_CROP), rng.integers(0, w - BACKGROUND_CROP)
            window = (slice(y, y + BACKGROUND_CROP), slice(x, x + BACKGROUND_CROP))
            if (mask[window] == 0).all():
                patch = Image.fromarray(image[window]).resize((CROP, CROP), Image.BICUBIC)
                crops.append(np.asarray(patch))
                classes.append(0)
                break
    return np.stack(crops[:count]), np.asarray(classes[:count])


class CropClassifier(nn.Module):
    """TinyBackbone -> global average pooling -> linear head over background + the classes."""

    def __init__(self):
        super().__init__()
        self.backbone = TinyBackbone(width=16)
        self.head = nn.Linear(self.backbone.channels["conv6"], len(CLASSES) + 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x).mean(dim=(2, 3)))


def _augment(crops: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
    """Flip and the CAM stage's colour jitter, then ImageNet normalisation."""
    out = []
    for crop in crops:
        if rng.random() < 0.5:
            crop = np.ascontiguousarray(crop[:, ::-1])
        out.append(normalize(color_jitter(crop, 0.3, 0.3, 0.3, 0.1, rng)))
    return torch.stack(out)


@torch.no_grad()
def accuracy(model: CropClassifier, crops: np.ndarray, classes: np.ndarray) -> float:
    model.eval()
    logits = model(torch.stack([normalize(c) for c in crops]))
    return float((logits.argmax(1).numpy() == classes).mean())


def pretrain(num_crops: int = 3000, epochs: int = 4, batch_size: int = 32, lr: float = 2e-3,
             seed: int = 0, progress: bool = True) -> CropClassifier:
    """Train a CropClassifier with Adam and a linearly decaying learning rate."""
    torch.manual_seed(seed)
    rng = np.random.default_rng([STREAM, seed, 1])
    crops, classes = render_crops(num_crops, seed)
    targets = torch.from_numpy(classes)
    model = CropClassifier()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    steps_per_epoch = max(1, num_crops // batch_size)
    total = epochs * steps_per_epoch
    bar = tqdm(total=total, desc="pre-training", disable=not progress)
    for step in range(total):
        if step % steps_per_epoch == 0:
            order = rng.permutation(num_crops)
        batch = order[(step % steps_per_epoch) * batch_size:][:batch_size]
        for group in optimizer.param_groups:
            group["lr"] = lr * (1 - step / total)
        model.train()
        loss = F.cross_entropy(model(_augment(crops[batch], rng)), targets[batch])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        bar.update()
        bar.set_postfix(loss=f"{loss.item():.3f}")
    bar.close()
    return model


def save_npz(model: CropClassifier, path: str | Path) -> Path:
    """Backbone state (its own names) and `head.weight`/`head.bias`, as float32 arrays."""
    path = Path(path)
    arrays = {k: v.numpy() for k, v in model.backbone.state_dict().items()
              if not k.endswith("num_batches_tracked")}
    arrays.update({f"head.{k}": v.numpy() for k, v in model.head.state_dict().items()})
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez_compressed(tmp, **arrays)
    tmp.replace(path)
    return path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="the .npz file to write")
    parser.add_argument("--num-crops", type=int, default=3000)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    start = time.time()
    model = pretrain(args.num_crops, args.epochs, seed=args.seed)
    held_out = render_crops(500, seed=args.seed + 1)
    print(f"held-out crop accuracy {100 * accuracy(model, *held_out):.1f}% "
          f"({time.time() - start:.0f} s)")
    print(f"wrote {save_npz(model, args.out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
