"""`python -m icam.evaluate --pred DIR --gt DIR [--list FILE] [--json] [--workers N]`.

Scores a folder of PNG label maps `<id>.png` (class ids; palette or grey PNGs) against a
ground-truth folder of the same layout (255 = void) with J, F and J&F (`icam.metrics`).
"""

import argparse
import json
import math
import os
import sys
import threading

import numpy as np
from PIL import Image

from icam import NUM_CLASSES
from icam.metrics import JFAccumulator


class EvaluationError(ValueError):
    """Bad evaluation input; the message names the image id and file."""


def read_label_map(path: str) -> np.ndarray:
    """Class ids of a single-channel PNG (the palette indices for a palette PNG)."""
    try:
        with Image.open(path) as im:
            labels = np.asarray(im)
    except OSError as e:
        raise EvaluationError(f"cannot read {path}: {e}") from None
    if labels.ndim != 2:
        raise EvaluationError(f"{path} is not a single-channel label map (shape {labels.shape})")
    return labels


def read_ids(gt_dir: str, list_file: str | None = None) -> list[str]:
    """Ids named by `list_file`, else every PNG in gt_dir.

    A list line's first token is the id; a path such as `/JPEGImages/x.jpg` names id `x`.
    """
    if list_file is None:
        ids = sorted(n[:-4] for n in os.listdir(gt_dir) if n.endswith(".png"))
        if not ids:
            raise EvaluationError(f"no .png files in ground-truth folder {gt_dir}")
        return ids
    try:
        with open(list_file) as f:
            tokens = [line.split()[0] for line in f if line.strip()]
    except OSError as e:
        raise EvaluationError(f"cannot read list file {list_file}: {e.strerror}") from None
    if not tokens:
        raise EvaluationError(f"list file {list_file} names no images")
    return [os.path.splitext(os.path.basename(t))[0] for t in tokens]


def _accumulate_chunk(pred_dir: str, gt_dir: str, ids: list[str], num_classes: int):
    acc = JFAccumulator(num_classes)
    for image_id in ids:
        pred_path = os.path.join(pred_dir, image_id + ".png")
        gt_path = os.path.join(gt_dir, image_id + ".png")
        pred, gt = read_label_map(pred_path), read_label_map(gt_path)
        if pred.shape != gt.shape:
            raise EvaluationError(
                f"size mismatch for id '{image_id}': prediction {pred.shape} ({pred_path}),"
                f" ground truth {gt.shape} ({gt_path})"
            )
        try:
            acc.add(pred, gt)
        except ValueError as e:
            path = gt_path if str(e).startswith("ground truth") else pred_path
            raise EvaluationError(f"id '{image_id}': {e} in {path}") from None
    return acc


def _pool_context():
    import multiprocessing

    # fork is cheapest, but only safe while this process runs a single thread
    single = threading.active_count() == 1
    method = "fork" if single and "fork" in multiprocessing.get_all_start_methods() else "spawn"
    return multiprocessing.get_context(method)


def _progress_bar(total: int, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc="evaluate", unit="img", file=sys.stderr)


def default_workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def accumulate_folders(
    pred_dir: str, gt_dir: str, ids: list[str] | None = None, workers: int | None = None,
    progress: bool = False, num_classes: int = NUM_CLASSES,
) -> JFAccumulator:
    """Sums for J and F over `<id>.png` pairs, read and scored by `workers` processes."""
    for what, folder in (("prediction", pred_dir), ("ground-truth", gt_dir)):
        if not os.path.isdir(folder):
            raise EvaluationError(f"{what} folder not found: {folder}")
    ids = read_ids(gt_dir) if ids is None else list(ids)
    if not ids:
        raise EvaluationError("no image ids to evaluate")
    for image_id in ids:
        for what, folder in (("ground truth", gt_dir), ("prediction", pred_dir)):
            path = os.path.join(folder, image_id + ".png")
            if not os.path.isfile(path):
                raise EvaluationError(f"missing {what} for id '{image_id}': {path}")
    workers = max(1, min(workers or default_workers(), math.ceil(len(ids) / 16)))
    size = max(1, min(64, math.ceil(len(ids) / (4 * workers))))
    chunks = [ids[i:i + size] for i in range(0, len(ids), size)]
    total = JFAccumulator(num_classes)
    if workers == 1:
        bar = _progress_bar(len(ids), progress)
        for chunk in chunks:
            total.merge(_accumulate_chunk(pred_dir, gt_dir, chunk, num_classes))
            if bar:
                bar.update(len(chunk))
    else:
        from concurrent.futures import ProcessPoolExecutor, as_completed

        with ProcessPoolExecutor(workers, mp_context=_pool_context()) as pool:
            futures = {
                pool.submit(_accumulate_chunk, pred_dir, gt_dir, chunk, num_classes): len(chunk)
                for chunk in chunks
            }
            bar = _progress_bar(len(ids), progress)  # after the workers started: tqdm is a thread
            try:
                for future in as_completed(futures):
                    total.merge(future.result())
                    if bar:
                        bar.update(futures[future])
            except BaseException:
                pool.shutdown(cancel_futures=True)
                raise
    if bar:
        bar.close()
    return total


def evaluate_folders(
    pred_dir: str, gt_dir: str, ids: list[str] | None = None, workers: int | None = None,
    progress: bool = False,
) -> dict:
    """{"J", "F", "JF", "per_class"} in percent for the `<id>.png` pairs of two folders."""
    return accumulate_folders(pred_dir, gt_dir, ids, workers, progress).result()


def format_result(result: dict, num_images: int) -> str:
    def cell(v):
        return "n/a" if v is None else f"{v:.2f}"

    lines = [f"images {num_images}"]
    lines += [f"{key:<3s} {cell(result[key])}" for key in ("J", "F", "JF")]
    lines.append(f"{'class':<14s} {'J':>7s} {'F':>7s}")
    for row in result["per_class"]:
        f = "-" if row["id"] == 0 else cell(row["F"])
        lines.append(f"{row['class']:<14s} {cell(row['J']):>7s} {f:>7s}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m icam.evaluate", description=__doc__)
    parser.add_argument("--pred", required=True, help="folder of predicted <id>.png label maps")
    parser.add_argument("--gt", required=True, help="folder of ground-truth <id>.png (255 = void)")
    parser.add_argument("--list", help="file of ids, one per line (default: all PNGs in --gt)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    parser.add_argument("--progress", action="store_true", help="progress bar on stderr")
    args = parser.parse_args(argv)
    if args.workers is not None and args.workers < 1:
        parser.error(f"--workers must be >= 1, got {args.workers}")
    try:
        if not os.path.isdir(args.gt):
            raise EvaluationError(f"ground-truth folder not found: {args.gt}")
        ids = read_ids(args.gt, args.list)
        acc = accumulate_folders(args.pred, args.gt, ids, args.workers, args.progress)
    except EvaluationError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    result = acc.result()
    try:
        print(json.dumps(result) if args.json else format_result(result, acc.num_images))
        sys.stdout.flush()
    except BrokenPipeError:  # e.g. piped into `head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


if __name__ == "__main__":
    sys.exit(main())
