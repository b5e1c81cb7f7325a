"""`python -m icam.bench allocator`: CAM inference and CAM training with glibc's default
malloc (naive) and with freed memory kept for reuse (ours, `icam.allocator.MALLOC_ENV`, as
Ray's workers run).

    python -m icam.bench allocator [--images 20] [--steps 10] [--threads 2] [--rounds 3]

Each side runs `--rounds` times, alternating, each time in a fresh subprocess on the same
inputs (the cpu preset's tiny CamNet, random 144x192 images at its inference scales, then
`--steps` training iterations on a random batch of its crop) and reports milliseconds per
image and per iteration, and a digest of every CAM and loss: the two must agree bit for bit,
since only where freed memory goes changes. The medians over the rounds are reported
(timings on a 2-core machine vary by 10-20 % from run to run).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time


def workload(args: argparse.Namespace) -> dict:
    """Time the inference and the training in this process; digest their outputs."""
    import numpy as np
    import torch

    from icam.config import pipeline_config
    from icam.inference import infer_cam
    from icam.stages.cam import CamTrainer

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    pipeline = pipeline_config("cpu", "icam")
    trainer = CamTrainer(pipeline, max_iterations=args.steps + 1)
    model = trainer.model.net.eval()
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (144, 192, 3), dtype=np.uint8) for _ in range(args.images)]
    label = np.zeros(20, np.float32)
    label[[4, 11]] = 1
    digest = hashlib.sha1()
    infer_cam(model, images[0], label, pipeline.cam.infer_scales)  # warm-up
    start = time.perf_counter()
    for image in images:
        digest.update(infer_cam(model, image, label, pipeline.cam.infer_scales).tobytes())
    inference = (time.perf_counter() - start) / len(images)
    batch = trainer.random_batch(pipeline.cam.batch_size)
    trainer.train_batch(batch)  # warm-up
    start = time.perf_counter()
    for _ in range(args.steps):
        digest.update(json.dumps(trainer.train_batch(batch), sort_keys=True).encode())
    training = (time.perf_counter() - start) / args.steps
    return {"inference_ms": 1000 * inference, "training_ms": 1000 * training,
            "digest": digest.hexdigest()}


def run_side(side: str, args: argparse.Namespace) -> dict:
    from icam.allocator import MALLOC_ENV

    env = {k: v for k, v in os.environ.items() if k not in MALLOC_ENV}
    if side == "ours":
        env.update(MALLOC_ENV)
    command = [sys.executable, "-m", "icam.bench", "allocator", "--side", side,
               "--images", str(args.images), "--steps", str(args.steps),
               "--threads", str(args.threads)]
    out = subprocess.run(command, check=True, capture_output=True, text=True, env=env).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m icam.bench allocator",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=20)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--side", choices=("naive", "ours"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.side is not None:  # one side, in its own process
        print(json.dumps(workload(args)))
        return 0
    runs = {"naive": [], "ours": []}
    for _ in range(args.rounds):
        for side, results in runs.items():
            results.append(run_side(side, args))
    naive, ours = ({key: statistics.median(r[key] for r in results)
                    for key in ("inference_ms", "training_ms")} for results in runs.values())
    same = len({r["digest"] for results in runs.values() for r in results}) == 1
    print(f"CAM stage, cpu preset, {args.threads} threads: {args.images} images 144x192 at "
          f"the inference scales, {args.steps} training iterations, medians of {args.rounds} "
          f"rounds; outputs {'identical' if same else 'DIFFER'}")
    for what, key in (("inference", "inference_ms"), ("training", "training_ms")):
        unit = "image" if what == "inference" else "iteration"
        print(f"  {what:9s} naive {naive[key]:7.1f} ms per {unit}, ours {ours[key]:7.1f} ms, "
              f"speed-up {naive[key] / ours[key]:.2f}x")
    return 0 if same else 1
