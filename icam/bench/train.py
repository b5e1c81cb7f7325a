"""`python -m icam.bench train`: training throughput and peak memory of one stage.

    python -m icam.bench train --stage cam --backbone resnet38 --batch 8 --crop 448 --compare

Runs `--steps` SGD iterations of the stage's model and loss on random data (after one
warm-up iteration) and reports images/s and peak memory: CUDA max_memory_allocated on a GPU,
the process's peak RSS on CPU (a lifetime peak, so later rows never report less). `--bf16`
runs the network in bfloat16 on a CPU as on CUDA (`icam.precision`); `--compare` runs fp32
and then bf16 in the same process and prints bf16's speed against fp32's.
"""

from __future__ import annotations

import argparse
import gc
import json
from dataclasses import replace

import torch

from icam.config import BACKBONES, METHOD_PRESETS, STAGES, pipeline_config


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m icam.bench train", description=__doc__)
    p.add_argument("--stage", default="cam", choices=STAGES)
    p.add_argument("--backbone", default="lite0", choices=BACKBONES)
    p.add_argument("--method", default="icam", choices=list(METHOD_PRESETS))
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--crop", type=int, default=448)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--bf16", action="store_true", help="the network in bfloat16")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--output-stride", type=int, choices=(4, 8),
                   help="the backbone's output stride (default: the preset's)")
    p.add_argument("--compare", action="store_true", help="fp32 and bf16 in one run")
    p.add_argument("--json", action="store_true", help="print one JSON object per row")
    args = p.parse_args(argv)
    for name in ("batch", "crop", "steps"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be >= 1")
    return args


def measure_stage(stage: str, backbone: str, batch: int, crop: int, steps: int, bf16: bool,
                  channels_last: bool = False, method: str = "icam",
                  output_stride: int | None = None) -> dict:
    """One row: a stage's training step on random data (the paper preset for the dense
    backbones, the cpu preset's otherwise), fp32 or bf16, on the training device."""
    from icam.precision import DENSE_BACKBONES
    from icam.stages import TRAINERS
    from icam.stages.trainer import measure_training

    pipeline = pipeline_config("paper" if backbone in DENSE_BACKBONES else "cpu", method)
    cfg = getattr(pipeline, stage)
    cfg = replace(cfg, backbone=backbone, crop=crop, batch_size=batch, bf16=bf16,
                  channels_last=channels_last,
                  weights=None if backbone == "tiny" else cfg.weights)  # tiny: no weights
    if output_stride:
        cfg = replace(cfg, output_stride=output_stride)
    trainer = TRAINERS[stage](replace(pipeline, **{stage: cfg}), max_iterations=steps + 1)
    result = measure_training(trainer, steps, batch)
    device = trainer.device
    del trainer
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    return {"stage": stage, "backbone": backbone, "batch": batch, "crop": crop, "bf16": bf16,
            "channels_last": channels_last, "device": name, **result}


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    rows = [measure_stage(args.stage, args.backbone, args.batch, args.crop, args.steps, bf16,
                          args.channels_last, args.method, args.output_stride)
            for bf16 in ((False, True) if args.compare else (args.bf16,))]
    if args.json:
        for row in rows:
            print(json.dumps(row))
        return 0
    print(f"{args.stage} stage, {args.backbone}, batch {args.batch}, crop {args.crop}, "
          f"{args.steps} steps on {rows[0]['device']}")
    print(f"{'precision':<10}{'images/s':>10}{'s/step':>9}{'peak MiB':>10}{'speed':>8}")
    for row in rows:
        ratio = row["images_per_s"] / rows[0]["images_per_s"]
        print(f"{'bf16' if row['bf16'] else 'fp32':<10}{row['images_per_s']:>10.2f}"
              f"{row['seconds_per_step']:>9.3f}{row['peak_bytes'] / 2**20:>10.0f}"
              f"{ratio:>7.2f}x")
    return 0
