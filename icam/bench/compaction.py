"""`python -m icam.bench compaction`: J and F of every stage, products stored naively or compactly.

    python -m icam.bench compaction [--method icam] [--seed 0] [--data-root DIR]
                                    [--set STAGE.FIELD=VALUE ...]

One trial of the cpu preset (CAM, AffinityNet, final stage) runs twice in this process, from
the same seed: once with its products stored naively (CAMs and CRF scores as float32 arrays in
compressed .npz, as they were stored before), once as the stages store them (12-bit levels,
`icam.codec`). The label PNGs the later stages train on are integers either way. It prints,
per stage and split, J and F of both runs and their difference, how many pixels of each
stage's label maps differ between the runs, and the bytes of the stored CAM and CRF score
folders. Everything else about the two runs is identical.
"""

from __future__ import annotations

import argparse
import io
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from icam.storage import Storage

STAGE_NAMES = ("cam", "affinity", "final")


def save_cam_float32(path, cam: np.ndarray, label: np.ndarray) -> None:
    """The naive CAM file: the present classes' float32 maps (`load_cam` reads both kinds)."""
    present = np.flatnonzero(np.asarray(label) > 0)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, classes=present, cams=np.asarray(cam, np.float32)[present],
                        label=np.asarray(label, np.float32), size=np.array(cam.shape[1:]))
    Storage.open(path).write_bytes(buffer.getvalue())


def save_crf_scores_float32(path, low: np.ndarray, high: np.ndarray) -> None:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, low=low.astype(np.float32), high=high.astype(np.float32))
    Storage.open(path).write_bytes(buffer.getvalue())


def load_crf_scores_float32(path) -> np.ndarray:
    with np.load(path, allow_pickle=False) as f:
        return np.concatenate([f["low"], f["high"]]).astype(np.float32)


def naive_storage() -> list[tuple]:
    """Make the stages store float32 products; returns (module, name, original) to restore."""
    import icam.data.affinity
    import icam.stages.affinity
    import icam.stages.cam

    originals = []
    for module, name, value in ((icam.stages.cam, "save_cam", save_cam_float32),
                                (icam.stages.affinity, "save_crf_scores", save_crf_scores_float32),
                                (icam.data.affinity, "load_crf_scores", load_crf_scores_float32)):
        originals.append((module, name, getattr(module, name)))
        setattr(module, name, value)
    return originals


def run_trial(config, data_root: str, trial_dir: Path) -> dict[str, float]:
    """The three stages' trainables in this process, without Ray: {`<stage>/<split>/<J|F>`}."""
    from ray.tune.trainable import trainable

    from icam.harness import stage_classes

    trainable.DEFAULT_STORAGE_PATH = str(trial_dir / "tune")  # their log folders
    metrics = {}
    for name in STAGE_NAMES:
        stage = stage_classes()[name](config={
            "pipeline": config.to_dict(), "data_root": data_root, "trial_dir": str(trial_dir),
            "cpus": os.cpu_count() or 1})
        result = {"done": False}
        while not result["done"]:
            result = stage.train()
        metrics.update({k: v for k, v in result.items()
                        if k.count("/") == 2 and k.rsplit("/", 1)[1] in ("J", "F")})
        stage.stop()
    return metrics


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*.npz"))


LABEL_FOLDERS = {"cam": "cam/labels", "affinity": "affinity/rw", "final": "final/pred"}
"""Each stage's label maps (PNG), of the train and val images."""


def differing_pixels(a: Path, b: Path) -> tuple[int, int]:
    """(pixels that differ, pixels) over the label PNGs of folder `a` and their namesakes in `b`."""
    from icam.data.voc import load_mask

    differ = total = 0
    for path in sorted(a.glob("*.png")):
        first, second = load_mask(path), load_mask(b / path.name)
        differ += int((first != second).sum())
        total += first.size
    return differ, total


def main(argv: list[str]) -> int:
    from dataclasses import replace

    from icam.config import pipeline_config, train_config
    from icam.harness import resolve_data_root
    from icam.study import parse_settings

    parser = argparse.ArgumentParser(prog="python -m icam.bench compaction",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--method", default="icam")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-root", default=None, help="default: the synthetic benchmark")
    parser.add_argument("--set", action="append", default=[], metavar="STAGE.FIELD=VALUE")
    args = parser.parse_args(argv)
    config = pipeline_config("cpu", args.method, args.seed)
    config = replace(config, **{stage: train_config("cpu", stage, **values)
                                for stage, values in parse_settings(args.set).items()})
    data_root = resolve_data_root(args.data_root)

    runs, sizes = {}, {}
    with tempfile.TemporaryDirectory(prefix="icam-compaction-") as tmp:
        for kind in ("naive float32", "ours 12-bit"):
            originals = naive_storage() if kind.startswith("naive") else []
            trial_dir = Path(tmp) / kind.split()[0]
            start = time.perf_counter()
            try:
                runs[kind] = run_trial(config, data_root, trial_dir)
            finally:
                for module, name, value in originals:
                    setattr(module, name, value)
            sizes[kind] = {folder: folder_bytes(trial_dir / folder)
                           for folder in ("cam/cams", "affinity/crf")}
            print(f"{kind}: {time.perf_counter() - start:.0f} s", flush=True)
        changed = {stage: differing_pixels(Path(tmp, "naive", folder), Path(tmp, "ours", folder))
                   for stage, folder in LABEL_FOLDERS.items()}

    naive, ours = runs["naive float32"], runs["ours 12-bit"]
    print(f"\n{config.method.name}, seed {config.seed}, cpu preset; data {data_root}")
    print(f"{'metric':24s} {'naive float32':>14s} {'ours 12-bit':>11s} {'difference':>11s}")
    for key in sorted(naive, key=lambda k: (STAGE_NAMES.index(k.split('/')[0]), k)):
        print(f"{key:24s} {naive[key]:14.4f} {ours[key]:11.4f} {ours[key] - naive[key]:+11.4f}")
    worst = max(abs(ours[k] - naive[k]) for k in naive)
    print(f"largest difference {worst:.4f} (J and F in %)")
    for stage, (differ, total) in changed.items():
        print(f"{LABEL_FOLDERS[stage]:14s} {differ:,d} of {total:,d} label pixels differ "
              f"({100 * differ / max(total, 1):.4f} %)")
    for folder in ("cam/cams", "affinity/crf"):
        n, o = sizes["naive float32"][folder], sizes["ours 12-bit"][folder]
        print(f"{folder:14s} naive {n:12,d} B   ours {o:12,d} B   {n / max(o, 1):.1f}x smaller")
    return 0
