"""`python -m icam.bench depthwise`: forward+backward of Lite0's dilated depthwise
convolutions, PyTorch's CPU backward (naive) vs `icam.models.depthwise` (ours).

    python -m icam.bench depthwise [--batch 8] [--threads 2] [--rounds 5]

The shapes are those of the cpu preset's CAM step (128-pixel crops, output stride 8): per
row, the padded input, the kernel and the dilation of one of Lite0's blocks. Both sides run
in this process on the same tensors, alternating.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from icam.models.depthwise import depthwise_conv2d

SHAPES = (  # (channels, output side, kernel, dilation): Lite0's dilated depthwise layers
    (480, 16, 3, 2), (480, 16, 3, 2), (480, 16, 5, 2), (672, 16, 5, 2), (672, 16, 5, 2),
)


def naive(x: torch.Tensor, weight: torch.Tensor, dilation: int) -> torch.Tensor:
    return F.conv2d(x, weight, dilation=dilation, groups=weight.shape[0])


def ours(x: torch.Tensor, weight: torch.Tensor, dilation: int) -> torch.Tensor:
    return depthwise_conv2d(x, weight, (dilation, dilation))


def step(fn, x, weight, dilation, grad) -> tuple[torch.Tensor, ...]:
    x.grad = weight.grad = None
    fn(x, weight, dilation).backward(grad)
    return x.grad, weight.grad


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m icam.bench depthwise",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--threads", type=int, default=2, help="torch threads (a trial's CPUs)")
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    print(f"depthwise forward+backward, batch {args.batch}, channels_last, "
          f"{args.threads} thread(s), median of {args.rounds}")
    print(f"{'channels':>8} {'side':>5} {'k':>2} {'d':>2} {'naive ms':>9} {'ours ms':>8} "
          f"{'speed-up':>9} {'max rel. diff':>14}")
    totals = {"naive": 0.0, "ours": 0.0}
    for channels, side, kernel, dilation in SHAPES:
        padded = side + (kernel - 1) * dilation
        x = torch.randn(args.batch, channels, padded, padded, generator=g)
        x = x.to(memory_format=torch.channels_last).requires_grad_()
        weight = torch.randn(channels, 1, kernel, kernel, generator=g, requires_grad=True)
        grad = torch.randn(args.batch, channels, side, side, generator=g)
        grad = grad.to(memory_format=torch.channels_last)
        sides = {"naive": naive, "ours": ours}
        results = {name: step(fn, x, weight, dilation, grad) for name, fn in sides.items()}
        times: dict[str, list[float]] = {name: [] for name in sides}
        for _ in range(args.rounds):
            for name, fn in sides.items():
                start = time.perf_counter()
                step(fn, x, weight, dilation, grad)
                times[name].append(time.perf_counter() - start)
        error = max(float((a - b).abs().max() / b.abs().max())
                    for a, b in zip(results["ours"], results["naive"], strict=True))
        median = {name: statistics.median(t) for name, t in times.items()}
        for name in totals:
            totals[name] += median[name]
        print(f"{channels:>8} {side:>5} {kernel:>2} {dilation:>2} {median['naive'] * 1e3:>9.1f} "
              f"{median['ours'] * 1e3:>8.1f} {median['naive'] / median['ours']:>8.1f}x "
              f"{error:>14.1e}")
    print(f"{'all':>8} {'':>5} {'':>2} {'':>2} {totals['naive'] * 1e3:>9.1f} "
          f"{totals['ours'] * 1e3:>8.1f} {totals['naive'] / totals['ours']:>8.1f}x")
    return 0
