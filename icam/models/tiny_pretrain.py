"""The tiny backbone's stand-in for ImageNet pre-training.

The paper's backbone starts from ImageNet weights: features and batch-norm statistics learned
on a broad classification task that was not made from VOC. The tiny backbone gets the same
start from `icam.data.procedural`: 48 procedural classes (shape family × texture family)
that share no class, shape family or texture with the embedded benchmark, on random colours,
backgrounds and clutter. Trained as a classification network is (batch norm on batch
statistics), at output stride 8; the CAM and AffinityNet stages then freeze its statistics,
and the cpu preset runs it at output stride 4 with doubled dilations.

    python -m icam.models.tiny_pretrain --out icam/models/tiny_generic.npz

The shipped file (named "tiny-generic" in configs) was written by this command with its
defaults; the `.npz` holds the backbone's state dict plus the crop classifier (`head.*`).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from icam.data.procedural import NUM_CLASSES, render_crops
from icam.data.transforms import color_jitter, normalize
from icam.models.tiny import TinyBackbone

TRAIN_STREAM, HELD_OUT_STREAM = 0x6E11, 0x6E12
"""Random streams of the training and held-out crops."""


class CropClassifier(nn.Module):
    """TinyBackbone -> global average pooling -> linear head over the procedural classes.
    Batch norm normalises with batch statistics and learns its running statistics; its affine
    parameters stay at the identity, as in every stage of this backbone."""

    def __init__(self):
        super().__init__()
        self.backbone = TinyBackbone(width=16, frozen_bn=False)
        self.head = nn.Linear(self.backbone.channels["conv6"], NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x).mean(dim=(2, 3)))


def _augment(crops: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
    """Flip and a brightness, contrast and saturation jitter (no hue shift: hue carries
    information here, as in ImageNet), then ImageNet normalisation."""
    out = []
    for crop in crops:
        if rng.random() < 0.5:
            crop = np.ascontiguousarray(crop[:, ::-1])
        out.append(normalize(color_jitter(crop, 0.3, 0.3, 0.3, 0.0, rng)))
    return torch.stack(out)


@torch.no_grad()
def accuracy(model: CropClassifier, crops: np.ndarray, classes: np.ndarray) -> float:
    model.eval()
    logits = torch.cat([model(torch.stack([normalize(c) for c in crops[i:i + 256]]))
                        for i in range(0, len(crops), 256)])
    return float((logits.argmax(1).numpy() == classes).mean())


def pretrain(num_crops: int = 20000, epochs: int = 8, batch_size: int = 64, lr: float = 2e-3,
             seed: int = 0, progress: bool = True) -> CropClassifier:
    """Adam with a linearly decaying learning rate."""
    torch.manual_seed(seed)
    rng = np.random.default_rng([TRAIN_STREAM, seed, 1])
    crops, classes = render_crops(num_crops, TRAIN_STREAM, seed)
    targets = torch.from_numpy(classes)
    model = CropClassifier()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    steps_per_epoch = max(1, num_crops // batch_size)
    total = epochs * steps_per_epoch
    bar = tqdm(total=total, desc="pre-training", disable=not progress, mininterval=5)
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
    parser.add_argument("--num-crops", type=int, default=20000)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    start = time.time()
    model = pretrain(args.num_crops, args.epochs, seed=args.seed)
    held_out = render_crops(960, HELD_OUT_STREAM, args.seed)
    print(f"held-out crop accuracy {100 * accuracy(model, *held_out):.1f}% over {NUM_CLASSES} "
          f"classes ({time.time() - start:.0f} s)")
    print(f"wrote {save_npz(model, args.out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
