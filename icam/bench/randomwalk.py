"""`python -m icam.bench randomwalk`: the random walk's labels, sparse (ours) vs dense (naive).

    python -m icam.bench randomwalk [--size 375x500] [--stride 8] [--classes 2] [--images 5]

Per image: random AffinityNet-like features at the image's feature size, a CAM with
`--classes` present classes, and the labels of `propagate_labels` after
`random_walk_transition`. The naive procedure is the reference's (infer_aff.py): a dense
hw × hw transition, applied 2^logt times to all 21 maps (the background and 20 classes,
absent ones zero). Both run in this process on the same inputs; their labels may differ only
where two scores tie to float32 rounding (the sums run in another order).
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch
import torch.nn.functional as F

from icam.models.affinity import affinities, affinity_offsets, random_walk_transition
from icam.randomwalk import cams_with_background, propagate_labels


def dense_transition(features: torch.Tensor, radius: int = 5, beta: float = 8) -> torch.Tensor:
    """The reference's hw × hw matrix: affinity^β of the pairs (both ways), 1 on the diagonal,
    columns normalised."""
    _, _, h, w = features.shape
    aff = affinities(features, radius)[0]  # P × h' × w'
    a = torch.eye(h * w, dtype=features.dtype)
    ys, xs = torch.meshgrid(torch.arange(aff.shape[1]),
                            torch.arange(radius - 1, radius - 1 + aff.shape[2]), indexing="ij")
    i = (ys * w + xs).flatten()  # the source pixels
    for k, (dy, dx) in enumerate(affinity_offsets(radius)):
        j = ((ys + dy) * w + xs + dx).flatten()
        a[i, j] = a[j, i] = aff[k].flatten()
    a = a.pow(beta)
    return a / a.sum(dim=0, keepdim=True)


def dense_labels(cam_fg: np.ndarray, features: torch.Tensor, stride: int, logt: int = 6,
                 alpha: float = 6) -> np.ndarray:
    height, width = cam_fg.shape[1:]
    h, w = features.shape[2:]
    t = dense_transition(features)
    cam = F.pad(cams_with_background(cam_fg, alpha), (0, w * stride - width,
                                                        0, h * stride - height))
    v = F.avg_pool2d(cam[None], stride).flatten(2)
    for _ in range(2**logt):
        v = v @ t
    up = F.interpolate(v.view(1, -1, h, w), (h * stride, w * stride), mode="bilinear",
                       align_corners=False)
    return up[0, :, :height, :width].argmax(dim=0).to(torch.uint8).numpy()


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m icam.bench randomwalk",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--size", default="375x500", help="HxW of the images (VOC's typical)")
    p.add_argument("--stride", type=int, default=8)
    p.add_argument("--classes", type=int, default=2, help="present classes per image")
    p.add_argument("--images", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    height, width = (int(v) for v in args.size.lower().split("x"))
    h, w = math.ceil(height / args.stride), math.ceil(width / args.stride)
    gen = torch.Generator().manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    times = {"naive dense": 0.0, "ours sparse": 0.0}
    differ = 0
    for _ in range(args.images):
        # smooth features (a few regions), so that the affinities vary as a trained net's do
        features = F.interpolate(torch.rand(1, 32, 6, 8, generator=gen), (h, w),
                                 mode="bilinear", align_corners=False)
        cam = np.zeros((20, height, width), np.float32)
        present = rng.choice(20, args.classes, replace=False)
        cam[present] = rng.random((args.classes, height, width)) ** 3
        start = time.perf_counter()
        naive = dense_labels(cam, features, args.stride)
        times["naive dense"] += time.perf_counter() - start
        start = time.perf_counter()
        ours = propagate_labels(cam, random_walk_transition(features), stride=args.stride)
        times["ours sparse"] += time.perf_counter() - start
        differ += int((naive != ours).sum())
    pixels = args.images * height * width
    print(f"{args.images} images {height}x{width}, features {h}x{w}, {args.classes} classes, "
          f"{torch.get_num_threads()} threads; labels differ at {differ} of {pixels} pixels")
    for name, seconds in times.items():
        print(f"  {name:12s} {1000 * seconds / args.images:8.1f} ms per image")
    print(f"  speed-up {times['naive dense'] / times['ours sparse']:.1f}x")
    return 0 if differ <= pixels // 10000 else 1  # more than ties: a wrong walk
