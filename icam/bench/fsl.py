"""`python -m icam.bench fsl`: windowed FSL against the all-pairs formula (eq. 9-13).

Each implementation runs forward + backward in its own fresh process, so the extra peak
memory (peak RSS during the call minus RSS before it) is not mixed with the other's.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import time

import torch

from icam.losses import feature_similarity_loss


def all_pairs_fsl(features: torch.Tensor, probs: torch.Tensor, mu: float,
                  sigma: float) -> torch.Tensor:
    """The naive reference: full (HW)² matrices for w, d, f and g, as the authors' code."""
    n, c, h, w = features.shape
    x = features.reshape(n, c, h * w).transpose(1, 2)
    a = probs.reshape(n, probs.shape[1], h * w).transpose(1, 2)
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    pos = torch.stack([ys.flatten(), xs.flatten()], dim=1).to(features.dtype)
    weight = torch.exp(-torch.cdist(pos, pos).square() / (2 * sigma ** 2)) / (
        2 * math.pi * sigma ** 2)
    d = (torch.cdist(x, x, p=1) / c).clamp(0, 1)
    f = torch.tanh(mu + torch.log((d + 1e-5) / (1 - d + 1e-5)))
    g = 0.5 * torch.cdist(a, a, p=2).square()
    return -(weight * g * f).sum() / (n * h * w)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def _peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _inputs(args):
    gen = torch.Generator().manual_seed(args.seed)
    features = torch.rand(args.batch, 3, args.size, args.size, generator=gen)
    logits = torch.randn(args.batch, args.classes, args.size, args.size, generator=gen)
    return features, logits.requires_grad_()


def _worker(args) -> dict:
    torch.set_num_threads(args.threads)
    features, logits = _inputs(args)
    loss_fn = all_pairs_fsl if args.impl == "naive" else feature_similarity_loss
    before = _rss_bytes()
    start = time.perf_counter()
    loss = loss_fn(features, logits.softmax(dim=1), args.mu, args.sigma)
    loss.backward()
    first = time.perf_counter() - start
    extra = max(_peak_rss_bytes() - before, 0)
    value, grad = loss.item(), logits.grad.clone()
    times = [first]
    for _ in range(args.repeats - 1):
        logits.grad = None
        start = time.perf_counter()
        loss_fn(features, logits.softmax(dim=1), args.mu, args.sigma).backward()
        times.append(time.perf_counter() - start)
    torch.save({"grad": grad}, args.grad_out)
    return {"seconds": min(times), "extra_peak_bytes": extra, "loss": value}


def _run(impl: str, args, grad_out: str) -> dict:
    cmd = [sys.executable, "-m", "icam.bench.fsl", "--worker", impl, "--grad-out", grad_out]
    for key in ("batch", "classes", "size", "mu", "sigma", "repeats", "threads", "seed"):
        cmd += [f"--{key}", str(getattr(args, key))]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m icam.bench fsl", description=__doc__)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--classes", type=int, default=21)
    parser.add_argument("--size", type=int, default=56)
    parser.add_argument("--mu", type=float, default=2.5)
    parser.add_argument("--sigma", type=float, default=5.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--worker", choices=("naive", "windowed"), help=argparse.SUPPRESS)
    parser.add_argument("--grad-out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        args.impl = args.worker
        print(json.dumps(_worker(args)))
        return 0

    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        results = {}
        for impl in ("naive", "windowed"):
            grad_path = str(Path(tmp) / f"{impl}.pt")
            results[impl] = _run(impl, args, grad_path)
            results[impl]["grad"] = torch.load(grad_path, weights_only=True)["grad"]
    naive, fast = results["naive"], results["windowed"]
    loss_rel = abs(fast["loss"] - naive["loss"]) / abs(naive["loss"])
    grad_rel = ((fast["grad"] - naive["grad"]).norm() / naive["grad"].norm()).item()
    mib = 2 ** 20
    print(f"FSL forward+backward, N={args.batch} K={args.classes} {args.size}x{args.size} "
          f"sigma={args.sigma} radius={math.ceil(4 * args.sigma)} threads={args.threads}")
    print(f"  all-pairs : {naive['seconds'] * 1e3:9.1f} ms  extra peak "
          f"{naive['extra_peak_bytes'] / mib:8.1f} MiB")
    print(f"  windowed  : {fast['seconds'] * 1e3:9.1f} ms  extra peak "
          f"{fast['extra_peak_bytes'] / mib:8.1f} MiB")
    speed = naive["seconds"] / fast["seconds"]
    memory = naive["extra_peak_bytes"] / max(fast["extra_peak_bytes"], 1)
    print(f"  speed-up {speed:.1f}x (goal >= 8x), memory ratio {memory:.1f}x (goal >= 20x)")
    print(f"  relative difference: loss {loss_rel:.2e}, gradient {grad_rel:.2e} (goal <= 1e-3)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
