"""`python -m icam.bench infer`: CAM inference in fp32 against bf16, time and labels.

    python -m icam.bench infer --backbone resnet38 --size 224 --scales 0.5,1.0

A CamNet of `--backbone` (its own initial weights: this measures time, not quality) infers the
CAMs of `--images` images of the embedded benchmark, `--size` pixels square, at `--scales`
with flips (`icam.inference.infer_cam`), once in fp32 and once with the network in bfloat16
(`icam.precision`), after one warm-up image each. Prints images/s of each and the share of
pixels whose CAM label (ICAM's argmax with the background 1 - sum) is the same.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from icam.config import BACKBONES


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m icam.bench infer",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--backbone", default="lite0", choices=BACKBONES)
    p.add_argument("--images", type=int, default=2)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--scales", default="0.5,1.0,1.5,2.0", help="comma-separated")
    args = p.parse_args(argv)
    if args.images < 1 or args.size < 16:
        p.error("--images must be >= 1 and --size >= 16")
    args.scales = tuple(float(s) for s in args.scales.split(","))
    return args


def timed_cams(model, images: list, labels: list, scales: tuple, bf16: bool) -> tuple:
    """(seconds per image after a warm-up image, the CAMs) of `infer_cam` over `images`."""
    from icam.inference import infer_cam

    infer_cam(model, images[0], labels[0], scales, bf16=bf16)
    start = time.perf_counter()
    cams = [infer_cam(model, x, y, scales, bf16=bf16) for x, y in zip(images, labels,
                                                                      strict=True)]
    return (time.perf_counter() - start) / len(images), cams


def main(argv: list[str]) -> int:
    from icam.data.synthetic import render_sample
    from icam.data.voc import labels_from_mask
    from icam.inference import cam_argmax_labels
    from icam.models import build_backbone
    from icam.models.cam import CamNet

    args = parse_args(argv)
    torch.manual_seed(0)
    model = CamNet(build_backbone(args.backbone), num_classes=21).eval()
    rng = np.random.default_rng(0)
    samples = [render_sample(rng, (args.size, args.size)) for _ in range(args.images)]
    images = [image for image, _ in samples]
    labels = [labels_from_mask(mask) for _, mask in samples]
    fp32, cams32 = timed_cams(model, images, labels, args.scales, bf16=False)
    bf16, cams16 = timed_cams(model, images, labels, args.scales, bf16=True)
    same = np.mean([np.mean(cam_argmax_labels(a) == cam_argmax_labels(b))
                    for a, b in zip(cams32, cams16, strict=True)])
    print(f"CAM inference, {args.backbone}, {args.images} images of {args.size}², scales "
          f"{','.join(map(str, args.scales))} with flips, on {torch.get_num_threads()} threads")
    print(f"{'precision':<10}{'images/s':>10}{'s/image':>9}{'speed':>8}")
    for name, seconds in (("fp32", fp32), ("bf16", bf16)):
        print(f"{name:<10}{1 / seconds:>10.3f}{seconds:>9.2f}{fp32 / seconds:>7.2f}x")
    print(f"bf16 gives the fp32 label on {100 * same:.2f} % of the pixels")
    return 0
