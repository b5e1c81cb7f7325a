"""How much of the image each stage calls foreground, beside the ground truth.

    python analysis/coverage.py --artefacts RESULTS/<study>/artefacts --data-root VOC2012 \
        [--split val] [--out coverage.csv]

A diagnostic for over- and under-segmentation, read from a study's stored artefacts (local
folders): per trial (its `config.json` gives method and seed) and over the images of `split`,
the fraction of non-void pixels labelled foreground by the CAM pseudo-labels, the random walk
and the final model, the ground truth's own fraction, and the mean foreground CAM (the max
over a CAM file's class maps) on ground-truth background and foreground pixels.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from icam.analysis.qualitative import foreground_heat

VOID = 255
LABEL_FOLDERS = {"cam": "cam/labels", "affinity": "affinity/rw", "final": "final/pred"}
"""The pseudo-labels or predictions of each stage inside a trial's artefact folder."""


def _png(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im)


def trial_coverage(trial_dir: Path, data_root: Path, ids: list[str]) -> dict:
    """Foreground fractions (percent of non-void pixels) and mean CAM values of one trial.

    A stage whose folder lacks an image of `ids` is left out (NaN)."""
    gt = {i: _png(data_root / "SegmentationClass" / f"{i}.png") for i in ids}
    valid = sum(int((m != VOID).sum()) for m in gt.values())
    row = {"gt_fg": 100 * sum(int(((m > 0) & (m != VOID)).sum()) for m in gt.values()) / valid}
    for stage, folder in LABEL_FOLDERS.items():
        paths = [trial_dir / folder / f"{i}.png" for i in ids]
        if not all(p.is_file() for p in paths):
            row[f"{stage}_fg"] = float("nan")
            continue
        fg = sum(int(((_png(p) > 0) & (gt[i] != VOID)).sum()) for p, i in zip(paths, ids,
                                                                                strict=True))
        row[f"{stage}_fg"] = 100 * fg / valid
    sums = {"bg": [0.0, 0], "fg": [0.0, 0]}
    for i in ids:
        path = trial_dir / "cam" / "cams" / f"{i}.npz"
        if not path.is_file():
            sums = None
            break
        with np.load(path, allow_pickle=False) as arrays:
            heat = foreground_heat(arrays)
        for name, where in (("bg", gt[i] == 0), ("fg", (gt[i] > 0) & (gt[i] != VOID))):
            sums[name][0] += float(heat[where].sum())
            sums[name][1] += int(where.sum())
    for name in ("bg", "fg"):
        row[f"cam_on_{name}"] = (sums[name][0] / max(sums[name][1], 1)
                                 if sums is not None else float("nan"))
    return row


def study_coverage(artefacts: Path, data_root: Path, split: str = "val") -> pd.DataFrame:
    """One row per trial folder of `artefacts` (those with a config.json), sorted by name."""
    ids = (data_root / "ImageSets" / "Segmentation" / f"{split}.txt").read_text().split()
    rows = []
    for trial in sorted(p for p in artefacts.iterdir() if (p / "config.json").is_file()):
        config = json.loads((trial / "config.json").read_text())
        rows.append({"trial": trial.name, "method": config["method"]["name"],
                     "seed": config["seed"], **trial_coverage(trial, data_root, ids)})
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--artefacts", type=Path, required=True,
                        help="a study's artefact folder: one folder per trial")
    parser.add_argument("--data-root", type=Path, required=True, help="the VOC2012 folder")
    parser.add_argument("--split", default="val")
    parser.add_argument("--out", type=Path, help="also write the per-trial table as CSV")
    args = parser.parse_args(argv)
    table = study_coverage(args.artefacts, args.data_root, args.split)
    if table.empty:
        print(f"{args.artefacts}: no trial folders with a config.json", file=sys.stderr)
        return 1
    pd.set_option("display.precision", 2)
    print(table.drop(columns="trial").to_string(index=False))
    print()
    print(table.drop(columns=["trial", "seed"]).groupby("method").mean().to_string())
    if args.out:
        table.to_csv(args.out, index=False, float_format="%.4f")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
