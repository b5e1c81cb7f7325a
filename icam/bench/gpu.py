"""`python -m icam.bench gpu`: the GPU check of the paper preset, one table, minutes.

Per stage of the paper preset (ResNet-38, 448², batch 8, channels_last), fp32 against bf16:
images/s and peak memory of a training step on random data (`icam.bench.train`), and how
many trials `--gpus-per-trial auto` packs on this GPU at that peak (the harness's memory probe
measures the same step: `icam.harness.trials_per_gpu`). Without CUDA it says so and exits 0.
"""

from __future__ import annotations

import argparse

import torch

from icam.config import STAGES

BACKBONE, CROP, BATCH = "resnet38", 448, 8


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m icam.bench gpu",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=3, help="timed steps per row (after one)")
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("no CUDA device: the GPU check needs one (nothing measured)")
        return 0
    from icam.bench.train import measure_stage
    from icam.harness import trials_per_gpu

    print(f"paper preset, {BACKBONE}, {CROP}², batch {BATCH}, channels_last, {args.steps} "
          f"steps on {torch.cuda.get_device_name()}")
    print(f"{'stage':<10}{'precision':<10}{'images/s':>10}{'peak GiB':>10}{'speed':>8}"
          f"{'trials/GPU':>12}")
    for stage in STAGES:
        fp32 = None
        for bf16 in (False, True):
            row = measure_stage(stage, BACKBONE, BATCH, CROP, args.steps, bf16,
                                channels_last=True)
            fp32 = fp32 or row["images_per_s"]
            trials = trials_per_gpu(row["peak_bytes"], row["total_bytes"])
            print(f"{stage:<10}{'bf16' if bf16 else 'fp32':<10}{row['images_per_s']:>10.2f}"
                  f"{row['peak_bytes'] / 2**30:>10.2f}{row['images_per_s'] / fp32:>7.2f}x"
                  f"{trials:>12d}", flush=True)
    return 0
