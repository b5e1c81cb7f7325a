"""`python -m icam.bench storage`: bytes a trial stores, naive float32 CAMs against ours.

    python -m icam.bench storage [--images 8] [--size 375x500] [--cams DIR] [--trials 120]

CAMs come from the CAM stage's own inference (`infer_cam`; the cpu preset's CamNet, whose
classifier is untrained) on synthetic images at VOC's typical size, or with `--cams DIR` from
a study's stored CAM files (a trained model's; best those written as float32, before CAMs
were quantised). Each CAM is written both ways in the same run: naive (the float32 maps of the
present classes, compressed .npz, as every CAM was stored before) and ours (`save_cam`: uint8
levels). The pseudo-labels made from both are compared pixel by pixel (the CAM stage's argmax
labels, and the background-power labels the CRF starts from at α = 2 and 4). Label PNGs are
measured on the same images. The projection multiplies by the files one VOC 2012 trial stores,
at VOC's typical 375 x 500 pixels (bytes scaled by the pixel count when the images differ).
"""

from __future__ import annotations

import argparse
import io
import tempfile
from pathlib import Path

import numpy as np

from icam.data.voc import save_mask
from icam.inference import cam_argmax_labels, cam_labels, load_cam, save_cam

VOC_PIXELS = 375 * 500
"""VOC 2012's typical image size (most images are 500 pixels on the long side)."""

VOC_IMAGES = {"train_aug": 10582, "train": 1464, "val": 1449}
"""VOC 2012 with SBD: train ⊂ train_aug, val disjoint from both."""

CAM_FILES = VOC_IMAGES["train_aug"] + VOC_IMAGES["val"]
"""cam/cams/: train_aug and val."""

PNG_FILES = {
    "cam/labels": VOC_IMAGES["train"] + VOC_IMAGES["val"],
    "affinity/crf_2, crf_4, aff": 3 * VOC_IMAGES["train_aug"],
    "affinity/rw": VOC_IMAGES["train_aug"] + VOC_IMAGES["val"],
    "final/pred": VOC_IMAGES["train"] + VOC_IMAGES["val"],
}
"""Label PNGs of one trial, per folder."""


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m icam.bench storage", description=__doc__)
    p.add_argument("--images", type=int, default=8, help="synthetic images (default 8)")
    p.add_argument("--size", default="375x500", help="HxW of the synthetic images")
    p.add_argument("--cams", help="measure a study's CAM files instead (a cam/cams folder)")
    p.add_argument("--trials", type=int, nargs="+", default=[120],
                   help="study sizes to project (default: 120, the λ study)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    try:
        args.size = tuple(int(v) for v in args.size.lower().split("x"))
    except ValueError:
        p.error(f"--size {args.size!r}: expected HxW")
    if len(args.size) != 2 or min(args.size) < 8 or args.images < 1 or min(args.trials) < 1:
        p.error("--size needs HxW >= 8, --images and --trials >= 1")
    return args


def naive_cam_bytes(cam: np.ndarray, label: np.ndarray) -> int:
    """Bytes of the float32 format: the present classes' maps, compressed .npz."""
    present = np.flatnonzero(label > 0)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, classes=present, cams=cam[present].astype(np.float32),
                        label=label.astype(np.float32), size=np.array(cam.shape[1:]))
    return buffer.getbuffer().nbytes


def inferred_cams(count: int, size: tuple[int, int], seed: int):
    """(cam, label, labels mask) of `count` synthetic images through the CAM stage's
    inference with the cpu preset's CamNet (its bundled backbone weights)."""
    import torch

    from icam.config import pipeline_config
    from icam.data.synthetic import generate
    from icam.data.voc import VOCLayout, labels_from_mask, load_image, load_mask
    from icam.inference import infer_cam
    from icam.stages import CamTrainer

    torch.manual_seed(seed)
    config = pipeline_config("cpu", "icam", seed=seed)
    net = CamTrainer(config, max_iterations=1, device=torch.device("cpu")).model.net.eval()
    with tempfile.TemporaryDirectory() as folder:
        root = generate(Path(folder) / "voc", num_train=count, num_val=1, seed=seed, size=size)
        layout = VOCLayout(root)
        for image_id in layout.ids("train")[:count]:
            mask = load_mask(layout.mask_path(image_id))
            label = labels_from_mask(mask)
            image = load_image(layout.image_path(image_id))
            cam = infer_cam(net, image, label, scales=config.cam.infer_scales)
            yield cam, label, image


def stored_cams(folder: str):
    for path in sorted(Path(folder).glob("*.npz")):
        cam, label = load_cam(path)
        yield cam, label, None


def measure(cams) -> dict:
    naive, ours, png, changed, pixels = [], [], [], np.zeros(3), 0
    with tempfile.TemporaryDirectory() as folder:
        for k, (cam, label, image) in enumerate(cams):
            naive.append(naive_cam_bytes(cam, label))
            path = Path(folder) / f"{k}.npz"
            save_cam(path, cam, label)
            ours.append(path.stat().st_size)
            stored, _ = load_cam(path)
            labels = [(cam_argmax_labels(c),
                       *(cam_labels(c, image, alpha, crf=False, label=label) for alpha in (2, 4)))
                      for c in (cam, stored)]
            changed += [int((a != b).sum()) for a, b in zip(*labels, strict=True)]
            pixels += labels[0][0].size
            save_mask(Path(folder) / f"{k}.png", labels[0][0])
            png.append((Path(folder) / f"{k}.png").stat().st_size)
    if not naive:
        raise ValueError("no CAMs to measure")
    return {"images": len(naive), "pixels": pixels / len(naive), "naive": float(np.mean(naive)),
            "ours": float(np.mean(ours)), "png": float(np.mean(png)),
            "changed": changed / pixels}


def trial_bytes(cam_bytes: float, png_bytes: float) -> float:
    return CAM_FILES * cam_bytes + sum(PNG_FILES.values()) * png_bytes


def report(m: dict, trials: list[int]) -> str:
    gb, scale = 1e9, VOC_PIXELS / m["pixels"]
    lines = [
        f"CAM files of {m['images']} images ({m['pixels']:,.0f} pixels each): bytes per image",
        f"  naive float32 (.npz)   {m['naive']:12,.0f}",
        f"  ours (uint8 .npz)      {m['ours']:12,.0f}   {m['naive'] / m['ours']:.1f}x smaller",
        "pixels whose pseudo-label changes with the stored CAM: "
        f"argmax {100 * m['changed'][0]:.4f}%, bg^2 {100 * m['changed'][1]:.4f}%, "
        f"bg^4 {100 * m['changed'][2]:.4f}%",
        f"label PNG: {m['png']:,.0f} bytes per image",
        "",
        f"one VOC 2012 trial: {CAM_FILES:,} CAM files + {sum(PNG_FILES.values()):,} label PNGs "
        f"({', '.join(f'{k} {v:,}' for k, v in PNG_FILES.items())}), at {VOC_PIXELS:,} "
        f"pixels per image (bytes x {scale:.2f})",
    ]
    naive = scale * trial_bytes(m["naive"], m["png"])
    ours = scale * trial_bytes(m["ours"], m["png"])
    lines.append(f"{'trials':>8}{'naive GB':>12}{'ours GB':>12}")
    for n in [1, *trials]:
        lines.append(f"{n:>8}{n * naive / gb:>12.1f}{n * ours / gb:>12.1f}")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    cams = (stored_cams(args.cams) if args.cams else
            inferred_cams(args.images, args.size, args.seed))
    print(report(measure(cams), args.trials))
    return 0
