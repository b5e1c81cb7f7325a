"""`python -m icam.bench pcm`: the PCM at inference, in cache-sized blocks (ours) vs the whole
hw × hw affinity matrix (naive).

    python -m icam.bench pcm [--size 54x72] [--classes 21] [--channels 24] [--threads 1]

The default is the cpu preset's largest CAM view (a 144 × 192 image at scale 1.5, output
stride 4, the image and its mirror). The naive procedure is the module's formula written out:
relu(fᵀf), its column sums, the K × hw product divided by them. Both run in this process on
the same inputs, alternating, without gradients.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from icam.models.cam import pcm


def naive_pcm(cam: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    n, k, h, w = cam.shape
    f = features.flatten(2)
    f = f / (f.norm(dim=1, keepdim=True) + 1e-5)
    aff = torch.relu(f.transpose(1, 2) @ f)
    return ((cam.flatten(2) @ aff) / (aff.sum(dim=1, keepdim=True) + 1e-5)).view(n, k, h, w)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m icam.bench pcm",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--size", default="54x72", help="h x w of the CAM (feature) map")
    p.add_argument("--batch", type=int, default=2, help="views at once (image and mirror)")
    p.add_argument("--classes", type=int, default=21)
    p.add_argument("--channels", type=int, default=24, help="PCM feature channels")
    p.add_argument("--threads", type=int, default=1, help="torch threads (a trial's CPUs)")
    p.add_argument("--rounds", type=int, default=20)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    h, w = (int(v) for v in args.size.lower().split("x"))
    g = torch.Generator().manual_seed(0)
    cam = torch.randn(args.batch, args.classes, h, w, generator=g)
    features = torch.randn(args.batch, args.channels, h, w, generator=g)
    sides = {"naive whole matrix": naive_pcm, "ours in blocks": pcm}
    times: dict[str, list[float]] = {name: [] for name in sides}
    with torch.no_grad():
        outputs = {name: fn(cam, features) for name, fn in sides.items()}  # warm-up
        for _ in range(args.rounds):
            for name, fn in sides.items():
                start = time.perf_counter()
                fn(cam, features)
                times[name].append(time.perf_counter() - start)
    naive, ours = outputs.values()
    error = float((ours - naive).abs().max() / naive.abs().max())
    print(f"PCM of {args.batch} x {args.classes} x {h} x {w} ({h * w} pixels), "
          f"{args.channels} feature channels, {args.threads} thread(s); max relative "
          f"difference {error:.1e}")
    medians = {name: statistics.median(t) for name, t in times.items()}
    for name, seconds in medians.items():
        print(f"  {name:20s} {1000 * seconds:7.1f} ms (median of {args.rounds})")
    print(f"  speed-up {medians['naive whole matrix'] / medians['ours in blocks']:.2f}x")
    return 0 if error < 1e-5 else 1
