"""`python -m icam.bench contour [--n 1449] [--workers 2]`: contour F, fast vs reference.

Writes `n` generated VOC-size prediction / ground-truth PNG pairs to a temporary folder, then
times, end to end (PNG reading included), the reference procedure (`reference_evaluate`:
DAVIS's per-class procedure over all 20 classes, single process) and
`icam.evaluate.accumulate_folders`, and checks that every count and value is identical.
"""

import argparse
import math
import os
import tempfile
import time

import numpy as np
from PIL import Image

from icam import NUM_CLASSES, VOC_CLASSES, VOID


def reference_seg2bmap(mask: np.ndarray) -> np.ndarray:
    """DAVIS `_seg2bmap` of a binary mask, written out as in the original."""
    seg = mask.astype(bool)
    e = np.zeros_like(seg)
    s = np.zeros_like(seg)
    se = np.zeros_like(seg)
    e[:, :-1] = seg[:, 1:]
    s[:-1, :] = seg[1:, :]
    se[:-1, :-1] = seg[1:, 1:]
    b = (seg ^ e) | (seg ^ s) | (seg ^ se)
    b[-1, :] = seg[-1, :] ^ e[-1, :]
    b[:, -1] = seg[:, -1] ^ s[:, -1]
    b[-1, -1] = False
    return b


def reference_dilate(bmap: np.ndarray, radius: int) -> np.ndarray:
    """Binary dilation by the disk x^2 + y^2 <= r^2: OR of the shifted copies."""
    h, w = bmap.shape
    r = radius
    out = np.zeros((h + 2 * r, w + 2 * r), dtype=bool)
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            if dx * dx + dy * dy <= r * r:
                out[r + dy:r + dy + h, r + dx:r + dx + w] |= bmap
    return out[r:r + h, r:r + w]


def reference_image_counts(pred: np.ndarray, gt: np.ndarray, num_classes: int = NUM_CLASSES):
    """Per-class sums of one image: (intersection, union, seen) for J, DAVIS counts for F."""
    valid = gt != VOID
    region = np.zeros((num_classes, 3), dtype=np.int64)
    for c in range(num_classes):
        p, g = pred == c, gt == c
        region[c] = [(p & g & valid).sum(), ((p | g) & valid).sum(), (p | g).sum()]
    gt_f = np.where(valid, gt, 0)
    radius = int(np.ceil(0.008 * np.linalg.norm(gt.shape)))
    contour = np.zeros((num_classes, 4), dtype=np.int64)
    for c in range(1, num_classes):
        pred_b = reference_seg2bmap(pred == c)
        gt_b = reference_seg2bmap(gt_f == c)
        pred_dil, gt_dil = reference_dilate(pred_b, radius), reference_dilate(gt_b, radius)
        contour[c] = [(pred_b & gt_dil).sum(), pred_b.sum(), (gt_b & pred_dil).sum(), gt_b.sum()]
    return region, contour


def reference_result(region: np.ndarray, contour: np.ndarray) -> dict:
    """The means of summed counts, as DAVIS and the authors' script finish them."""
    iou = [int(i) / int(u) if u else None for i, u, _ in region]
    fs: list = [None]
    for c in range(1, len(region)):
        fg_match, n_fg, gt_match, n_gt = (int(v) for v in contour[c])
        if n_fg == 0 and n_gt > 0:
            precision, recall = 1.0, 0.0
        elif n_fg > 0 and n_gt == 0:
            precision, recall = 0.0, 1.0
        elif n_fg == 0 and n_gt == 0:
            precision, recall = 1.0, 1.0
        else:
            precision, recall = fg_match / n_fg, gt_match / n_gt
        f = 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)
        fs.append(f if region[c, 2] else None)
    means = []
    for values in (iou, fs):
        kept = [v for v in values if v is not None]
        means.append(100 * sum(kept) / len(kept) if kept else None)
    j, f = means
    per_class = [
        {"class": VOC_CLASSES[c] if len(region) == NUM_CLASSES else str(c), "id": c,
         "J": None if iou[c] is None else 100 * iou[c],
         "F": None if fs[c] is None else 100 * fs[c]}
        for c in range(len(region))
    ]
    jf = None if j is None or f is None else (j + f) / 2
    return {"J": j, "F": f, "JF": jf, "per_class": per_class}


def reference_evaluate(pred_dir: str, gt_dir: str, ids: list[str]):
    """Reference procedure over a folder: returns (result, region sums, contour sums)."""
    region = np.zeros((NUM_CLASSES, 3), dtype=np.int64)
    contour = np.zeros((NUM_CLASSES, 4), dtype=np.int64)
    for image_id in ids:
        pred = np.array(Image.open(os.path.join(pred_dir, image_id + ".png")))
        gt = np.array(Image.open(os.path.join(gt_dir, image_id + ".png")))
        r, c = reference_image_counts(pred, gt)
        region += r
        contour += c
    return reference_result(region, contour), region, contour


def voc_palette() -> list[int]:
    """The PASCAL VOC colour map (bit-interleaved class ids), 256 RGB triples."""
    palette = []
    for k in range(256):
        r = g = b = 0
        bits = k
        for i in range(8):
            r |= (bits & 1) << (7 - i)
            g |= ((bits >> 1) & 1) << (7 - i)
            b |= ((bits >> 2) & 1) << (7 - i)
            bits >>= 3
        palette += [r, g, b]
    return palette


def random_scene(rng: np.random.Generator, h: int, w: int, objects: int) -> np.ndarray:
    """Background with `objects` wobbly, rotated ellipses of random foreground classes."""
    labels = np.zeros((h, w), dtype=np.uint8)
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    for _ in range(objects):
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        ay, ax = rng.uniform(15, h / 2.5), rng.uniform(15, w / 2.5)
        t = rng.uniform(0, np.pi)
        u = (yy - cy) * np.cos(t) + (xx - cx) * np.sin(t)
        v = (xx - cx) * np.cos(t) - (yy - cy) * np.sin(t)
        wobble = 1 + 0.2 * np.sin(rng.integers(3, 9) * np.arctan2(u, v) + rng.uniform(0, 6))
        labels[(u / ay) ** 2 + (v / ax) ** 2 <= wobble] = rng.integers(1, NUM_CLASSES)
    return labels


def make_pair(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(prediction, ground truth) of about VOC's size: gt with a void band, pred perturbed."""
    short = int(rng.integers(280, 501))
    h, w = (500, short) if rng.random() < 0.25 else (short, 500)
    scene = random_scene(rng, h, w, int(rng.integers(1, 5)))
    near_edge = np.zeros((h, w), dtype=bool)
    for shift in (-2, -1, 1, 2):
        near_edge |= (scene != np.roll(scene, shift, 0)) | (scene != np.roll(scene, shift, 1))
    gt = np.where(near_edge, VOID, scene).astype(np.uint8)
    pred = np.roll(scene, tuple(rng.integers(-6, 7, size=2)), axis=(0, 1))
    if rng.random() < 0.3:
        present = np.unique(pred[pred > 0])
        if len(present):
            pred[pred == rng.choice(present)] = rng.integers(1, NUM_CLASSES)
    if rng.random() < 0.5:
        spurious = random_scene(rng, h, w, 1)
        pred = np.where(spurious > 0, spurious, pred)
    return pred.astype(np.uint8), gt


def write_pairs(folder: str, n: int, seed: int = 0) -> list[str]:
    """Generate `n` pairs into folder/pred and folder/gt as palette PNGs; returns the ids."""
    rng = np.random.default_rng(seed)
    palette = voc_palette()
    ids = [f"{i:06d}" for i in range(n)]
    for sub in ("pred", "gt"):
        os.makedirs(os.path.join(folder, sub), exist_ok=True)
    for image_id in ids:
        for sub, labels in zip(("pred", "gt"), make_pair(rng), strict=True):
            im = Image.fromarray(labels, mode="L")
            im.putpalette(palette)
            im.save(os.path.join(folder, sub, image_id + ".png"))
    return ids


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m icam.bench contour", description=__doc__)
    parser.add_argument("--n", type=int, default=1449, help="image pairs (VOC val: 1449)")
    parser.add_argument("--workers", type=int, default=2, help="processes of the fast path")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.n < 1 or args.workers < 1:
        parser.error("--n and --workers must be >= 1")

    from icam.evaluate import accumulate_folders

    with tempfile.TemporaryDirectory(prefix="icam-bench-contour-") as tmp:
        t0 = time.perf_counter()
        ids = write_pairs(tmp, args.n, args.seed)
        print(f"generated {args.n} pairs in {time.perf_counter() - t0:.1f} s")
        pred_dir, gt_dir = os.path.join(tmp, "pred"), os.path.join(tmp, "gt")

        t0 = time.perf_counter()
        ref, region, contour = reference_evaluate(pred_dir, gt_dir, ids)
        t_ref = time.perf_counter() - t0
        t0 = time.perf_counter()
        acc = accumulate_folders(pred_dir, gt_dir, ids, workers=args.workers)
        fast = acc.result()
        t_fast = time.perf_counter() - t0

    inter = np.diag(acc.confusion)
    union = acc.confusion.sum(0) + acc.confusion.sum(1) - inter
    same = (
        fast == ref
        and np.array_equal(inter, region[:, 0])
        and np.array_equal(union, region[:, 1])
        and np.array_equal(acc.contour[1:], contour[1:])
    )
    ratio = t_ref / t_fast
    print(f"reference (DAVIS procedure, 20 classes, 1 process): {t_ref:8.2f} s"
          f"  ({1e3 * t_ref / args.n:.1f} ms/image)")
    print(f"fast evaluate_folders ({args.workers} workers):{'':15s}{t_fast:8.2f} s"
          f"  ({1e3 * t_fast / args.n:.2f} ms/image)")
    print(f"speedup {ratio:.1f}x (target >= 6x: {'met' if ratio >= 6 else 'NOT met'})")
    print(f"J {fast['J']:.4f}  F {fast['F']:.4f}  JF {fast['JF']:.4f}")
    print(f"identical counts and values: {'yes' if same else 'NO'}")
    return 0 if same and not math.isnan(ratio) else 1
