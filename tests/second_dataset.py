"""A second VOC-layout dataset, made unlike the embedded benchmark and unlike the tiny
backbone's pre-training task: other classes (VOC ids 1, 3, 12, 13, 19), other shapes
(rectangles, triangles, trapezoids, half-discs, bars), saturated plain colours with grain
instead of muted textured bodies, and two-tone horizon backgrounds with vertical gradients
instead of scenes with clutter. A class is its shape; its colour is random.

    python -m tests.second_dataset --out DIR [--num-train N] [--num-val M] [--seed S]

It shows whether the pre-trained backbone's features and frozen batch-norm statistics fit
data they were not made from (tests/test_regime.py; docs/findings.md, its table of CAM-stage J/F).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from icam.data.voc import save_mask

CLASSES = {1: "rectangle", 3: "triangle", 12: "trapezoid", 13: "half_disc", 19: "bar"}
SIZE = (150, 200)


def _outline(kind: str, cy: float, cx: float, r: float, angle: float) -> list[tuple]:
    if kind == "rectangle":
        pts = [(-1, -0.6), (1, -0.6), (1, 0.6), (-1, 0.6)]
    elif kind == "triangle":
        pts = [(-1, 0.8), (1, 0.8), (0, -1)]
    elif kind == "trapezoid":
        pts = [(-1, 0.7), (1, 0.7), (0.45, -0.7), (-0.45, -0.7)]
    elif kind == "half_disc":
        t = np.linspace(0, np.pi, 24)
        pts = [(np.cos(a), -np.sin(a) + 0.4) for a in t]
    else:  # bar
        pts = [(-1, -0.25), (1, -0.25), (1, 0.25), (-1, 0.25)]
    c, s = np.cos(angle), np.sin(angle)
    return [(cx + r * (c * x - s * y), cy + r * (s * x + c * y)) for x, y in pts]


def render(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One image (uint8 H×W×3) and its mask (VOC ids, 255 void band along borders)."""
    h, w = SIZE
    horizon = int(rng.uniform(0.3, 0.7) * h)
    top, bottom = rng.uniform(40, 230, 3), rng.uniform(20, 200, 3)
    ramp = np.linspace(0.75, 1.15, h)[:, None, None]
    canvas = np.where(np.arange(h)[:, None, None] < horizon, top, bottom) * ramp
    canvas = np.broadcast_to(canvas, (h, w, 3)).astype(np.float32).copy()
    labels = np.zeros((h, w), np.uint8)
    count = int(rng.integers(1, 4))
    for voc_id in rng.choice(list(CLASSES), size=count, replace=False):
        im = Image.new("L", (w, h), 0)
        r = rng.uniform(0.18, 0.35) * h
        centre = (rng.uniform(0.25, 0.75) * h, rng.uniform(0.2, 0.8) * w)
        outline = _outline(CLASSES[int(voc_id)], *centre, r, rng.uniform(-0.4, 0.4))
        ImageDraw.Draw(im).polygon(outline, fill=1)
        region = np.asarray(im, bool)
        colour = np.zeros(3)
        colour[rng.integers(3)] = 255
        colour[rng.integers(3)] = rng.uniform(0, 255)
        canvas[region] = colour
        labels[region] = voc_id
    canvas += 12.0 * rng.standard_normal(canvas.shape)
    border = np.zeros((h, w), bool)
    padded = np.pad(labels, 1, mode="edge")
    for dy in (0, 1, 2):
        for dx in (0, 1, 2):
            border |= padded[dy:dy + h, dx:dx + w] != labels
    mask = np.where(border, 255, labels).astype(np.uint8)
    return np.clip(canvas, 0, 255).astype(np.uint8), mask


def write(out: str | Path, num_train: int = 300, num_val: int = 80, seed: int = 0) -> Path:
    """The dataset in the VOC 2012 layout (train and val lists)."""
    out = Path(out)
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    for code, (split, count) in enumerate((("train", num_train), ("val", num_val))):
        ids = [f"{split}_{i:05d}" for i in range(count)]
        for i, image_id in enumerate(ids):
            image, mask = render(np.random.default_rng([seed, 0x2D, code, i]))
            Image.fromarray(image).save(out / "JPEGImages" / f"{image_id}.jpg", quality=90)
            save_mask(out / "SegmentationClass" / f"{image_id}.png", mask)
        (out / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("\n".join(ids) + "\n")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--num-train", type=int, default=300)
    parser.add_argument("--num-val", type=int, default=80)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(write(args.out, args.num_train, args.num_val, args.seed))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
