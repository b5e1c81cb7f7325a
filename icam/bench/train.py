"""`python -m icam.bench train`: training throughput and peak memory of one stage.

    python -m icam.bench train --stage cam --backbone resnet38 --batch 8 --crop 448 --compare

Runs `--steps` SGD iterations of the stage's model and loss on random data (after one
warm-up iteration) and reports images/s and peak memory: CUDA max_memory_allocated on a GPU,
the process's peak RSS on CPU (a lifetime peak, so later rows never report less). bf16
autocast applies on CUDA only. `--compare` runs fp32 and then bf16 in the same process.
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
    p.add_argument("--bf16", action="store_true", help="bfloat16 autocast (CUDA)")
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


def measure(args: argparse.Namespace, bf16: bool) -> dict:
    from icam.stages import TRAINERS
    from icam.stages.trainer import measure_training

    preset = "paper" if args.backbone in ("resnet38", "res2net101") else "cpu"
    pipeline = pipeline_config(preset, args.method)
    cfg = replace(getattr(pipeline, args.stage), backbone=args.backbone, crop=args.crop,
                  batch_size=args.batch, bf16=bf16, channels_last=args.channels_last)
    if args.output_stride:
        cfg = replace(cfg, output_stride=args.output_stride)
    pipeline = replace(pipeline, **{args.stage: cfg})
    trainer = TRAINERS[args.stage](pipeline, max_iterations=args.steps + 1)
    result = measure_training(trainer, args.steps, args.batch)
    device = trainer.device
    del trainer
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    return {"stage": args.stage, "backbone": args.backbone, "batch": args.batch,
            "crop": args.crop, "bf16": bf16 and device.type == "cuda",
            "channels_last": args.channels_last, "device": name, **result}


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if not torch.cuda.is_available() and (args.bf16 or args.compare):
        print("note: no CUDA device, bf16 autocast is off (fp32 only)")
    rows = [measure(args, bf16) for bf16 in ((False, True) if args.compare else (args.bf16,))]
    if args.json:
        for row in rows:
            print(json.dumps(row))
        return 0
    print(f"{args.stage} stage, {args.backbone}, batch {args.batch}, crop {args.crop}, "
          f"{args.steps} steps on {rows[0]['device']}")
    print(f"{'precision':<10}{'images/s':>10}{'s/step':>9}{'peak MiB':>10}")
    for row in rows:
        print(f"{'bf16' if row['bf16'] else 'fp32':<10}{row['images_per_s']:>10.2f}"
              f"{row['seconds_per_step']:>9.3f}{row['peak_bytes'] / 2**20:>10.0f}")
    return 0
