"""`python -m icam.bench storage`: bytes a trial stores, naive float32 arrays against ours.

    python -m icam.bench storage [--images 8] [--size 375x500] [--trials 120]
    python -m icam.bench storage --cams STUDY/artefacts/TRIAL/cam/cams --data-root VOC

CAMs come from the CAM stage's own inference (`infer_cam`; the cpu preset's CamNet, whose
classifier is untrained) on synthetic images at VOC's typical size, or with `--cams DIR` from
a study's stored CAM files (a trained model's; best those written as float32, before CAMs
were quantised) and their images in `--data-root`. Each CAM, and the CRF scores AffinityNet
trains on (ICAM's α = 2 and 4), is written both ways in the same run: naive (float32 arrays,
compressed .npz, as CAMs were stored before) and ours (`save_cam`, `save_crf_scores`: 12-bit
levels, delta-coded, `icam.codec`). The CAM stage's argmax labels made from both CAMs are
compared pixel by pixel, and so are the CRF labels (argmax of the scores at either α). Label
PNGs are measured on the same images. The projection multiplies by the files one VOC 2012
trial stores, at VOC's typical 375 x 500 pixels (bytes scaled by the pixel count when the
images differ).
"""

from __future__ import annotations

import argparse
import io
import tempfile
from pathlib import Path

import numpy as np

from icam.data.affinity import save_crf_scores
from icam.data.voc import load_image, save_mask
from icam.inference import CONVENTIONS, cam_argmax_labels, crf_scores, load_cam, save_cam

VOC_PIXELS = 375 * 500
"""VOC 2012's typical image size (most images are 500 pixels on the long side)."""

VOC_IMAGES = {"train_aug": 10582, "train": 1464, "val": 1449}
"""VOC 2012 with SBD: train ⊂ train_aug, val disjoint from both."""

FILES = {
    "cam/cams (.npz)": VOC_IMAGES["train_aug"] + VOC_IMAGES["val"],
    "affinity/crf (.npz)": VOC_IMAGES["train_aug"],
    "label PNGs (cam/labels, affinity/rw, final/pred)": (
        VOC_IMAGES["train"] + VOC_IMAGES["val"]) * 2 + VOC_IMAGES["train_aug"]
    + VOC_IMAGES["val"],
}
"""The files one trial stores, by kind."""


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m icam.bench storage", description=__doc__)
    p.add_argument("--images", type=int, default=8, help="synthetic images (default 8)")
    p.add_argument("--size", default="375x500", help="HxW of the synthetic images")
    p.add_argument("--cams", help="measure a study's CAM files instead (a cam/cams folder)")
    p.add_argument("--data-root", help="with --cams: the study's data root (its images)")
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
    if args.cams and not args.data_root:
        p.error("--cams needs --data-root (the images of the CAMs)")
    return args


def npz_bytes(**arrays: np.ndarray) -> int:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getbuffer().nbytes


def inferred_cams(count: int, size: tuple[int, int], seed: int):
    """(cam, label, image) of `count` synthetic images through the CAM stage's inference
    with the cpu preset's CamNet (its bundled backbone weights)."""
    import torch

    from icam.config import pipeline_config
    from icam.data.synthetic import generate
    from icam.data.voc import VOCLayout, labels_from_mask, load_mask
    from icam.inference import infer_cam
    from icam.stages import CamTrainer

    torch.manual_seed(seed)
    config = pipeline_config("cpu", "icam", seed=seed)
    net = CamTrainer(config, max_iterations=1, device=torch.device("cpu")).model.net.eval()
    with tempfile.TemporaryDirectory() as folder:
        root = generate(Path(folder) / "voc", num_train=count, num_val=1, seed=seed, size=size)
        layout = VOCLayout(root)
        for image_id in layout.ids("train")[:count]:
            label = labels_from_mask(load_mask(layout.mask_path(image_id)))
            image = load_image(layout.image_path(image_id))
            yield infer_cam(net, image, label, scales=config.cam.infer_scales), label, image


def stored_cams(folder: str, data_root: str):
    from icam.data.voc import VOCLayout

    layout = VOCLayout(data_root)
    for path in sorted(Path(folder).glob("*.npz")):
        cam, label = load_cam(path)
        yield cam, label, load_image(layout.image_path(path.stem))


def measure(cams) -> dict:
    """Mean bytes per image of each file kind, naive and ours, and the changed labels."""
    sizes = {k: [] for k in ("cam naive", "cam ours", "crf naive", "crf ours", "png")}
    changed, pixels = np.zeros(3), 0
    alphas = CONVENTIONS["icam"]["crf_alphas"]
    with tempfile.TemporaryDirectory() as folder:
        for k, (cam, label, image) in enumerate(cams):
            present = np.flatnonzero(label > 0)
            sizes["cam naive"].append(npz_bytes(classes=present, cams=cam[present],
                                                label=label, size=np.array(cam.shape[1:])))
            path = Path(folder) / f"{k}.npz"
            save_cam(path, cam, label)
            sizes["cam ours"].append(path.stat().st_size)
            stored, _ = load_cam(path)
            scores = [[crf_scores(c, image, alpha, label) for alpha in alphas]
                      for c in (cam, stored)]
            sizes["crf naive"].append(npz_bytes(low=scores[0][0].astype(np.float32),
                                                high=scores[0][1].astype(np.float32)))
            save_crf_scores(Path(folder) / f"{k}.crf.npz", *scores[0])
            sizes["crf ours"].append((Path(folder) / f"{k}.crf.npz").stat().st_size)
            labels = [(cam_argmax_labels(c), *(s.argmax(axis=0) for s in crf))
                      for c, crf in zip((cam, stored), scores, strict=True)]
            changed += [int((a != b).sum()) for a, b in zip(*labels, strict=True)]
            pixels += labels[0][0].size
            save_mask(Path(folder) / f"{k}.png", labels[0][0])
            sizes["png"].append((Path(folder) / f"{k}.png").stat().st_size)
    if not sizes["png"]:
        raise ValueError("no CAMs to measure")
    count = len(sizes["png"])
    return {"images": count, "pixels": pixels / count, "changed": changed / pixels,
            **{k: float(np.mean(v)) for k, v in sizes.items()}}


def trial_bytes(m: dict, which: str) -> float:
    """Bytes of one VOC trial at VOC size from the measured means (`which`: naive | ours)."""
    per_file = (m[f"cam {which}"], m[f"crf {which}"], m["png"])
    scale = VOC_PIXELS / m["pixels"]
    return scale * sum(n * b for n, b in zip(FILES.values(), per_file, strict=True))


def report(m: dict, trials: list[int]) -> str:
    gb, scale = 1e9, VOC_PIXELS / m["pixels"]
    lines = [f"{m['images']} images ({m['pixels']:,.0f} pixels each): bytes per image"]
    for kind in ("cam", "crf"):
        naive, ours = m[f"{kind} naive"], m[f"{kind} ours"]
        lines.append(f"  {kind.upper()} file   naive float32 {naive:12,.0f}   ours 12-bit "
                     f"{ours:10,.0f}   {naive / ours:.1f}x smaller")
    lines += [
        f"  label PNG  {m['png']:,.0f}",
        "pixels whose label changes with the stored arrays: CAM argmax "
        f"{100 * m['changed'][0]:.4f}%, CRF labels at α = 2 {100 * m['changed'][1]:.4f}%, "
        f"α = 4 {100 * m['changed'][2]:.4f}%",
        "",
        "one VOC 2012 trial: " + ", ".join(f"{n:,} {k}" for k, n in FILES.items())
        + f"; at {VOC_PIXELS:,} pixels per image (bytes x {scale:.2f})",
        f"{'trials':>8}{'naive GB':>12}{'ours GB':>12}",
    ]
    naive, ours = trial_bytes(m, "naive"), trial_bytes(m, "ours")
    for n in sorted({1, *trials}):
        lines.append(f"{n:>8}{n * naive / gb:>12.1f}{n * ours / gb:>12.1f}")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    cams = (stored_cams(args.cams, args.data_root) if args.cams else
            inferred_cams(args.images, args.size, args.seed))
    print(report(measure(cams), args.trials))
    return 0
