"""J, F and J&F of label maps, accumulated per class over a whole evaluated set.

J (region similarity): IoU per class over all 21 classes, background included; true/false
positives and negatives are summed over the set; ground-truth 255 (void) pixels are ignored.

F (contour accuracy, DAVIS `f_measure` with dataset-level sums): for every foreground class c
and image, the binary masks pred == c and gt == c (void counts as background) get their
boundary maps (`boundary_map`, Martin 2003 / DAVIS `seg2bmap`). A boundary pixel is matched
when a boundary pixel of the other map lies within the disk x^2 + y^2 <= r^2,
r = ceil(0.008 * sqrt(h^2 + w^2)) of that image. Matched and total boundary pixels are summed
over the set per class; then P = matched pred / pred pixels, R = matched gt / gt pixels.

Empty-set conventions: they apply once per class, to its counts summed over the whole set,
never per image. An image where c has gt boundary but no predicted boundary only adds to the
recall denominator. Only when the set's total predicted boundary of c is zero is P = 1
(R = 0 if the gt has boundary, else R = 1), and a zero total gt boundary with some predicted
boundary gives (P, R) = (0, 1). F_c = 2PR / (P + R), 0 when P + R = 0.

Addition for sets where a class never occurs: a class with nothing to score is n/a (None)
and left out of the mean. For J that is a zero union over non-void pixels; for F a class
absent from every prediction and every ground truth. On VOC every class occurs, so the means
equal the reference's: J over 21 classes, F over 20. JF = (J + F) / 2; all in percent.

Fast path (exact): only classes present in an image are visited (an absent class adds zero
to every sum); boundaries of all classes come from one pass over the label map; matches are
counted by querying row-wise prefix sums of the other boundary over the disk's rows, inside
the bounding box of both boundaries.
"""

import math
from functools import lru_cache

import numpy as np

from icam import NUM_CLASSES, VOC_CLASSES, VOID

BOUNDARY_TOLERANCE = 0.008
"""Disk radius as a fraction of the image diagonal (DAVIS `bound_th`)."""


def boundary_radius(shape: tuple[int, int]) -> int:
    """Tolerance r = ceil(0.008 * diagonal) in pixels, as DAVIS computes it."""
    h, w = shape
    return math.ceil(BOUNDARY_TOLERANCE * math.sqrt(h * h + w * w))


def boundary_map(labels: np.ndarray) -> np.ndarray:
    """Pixels that differ from their east, south or south-east neighbour (DAVIS `seg2bmap`).

    On the last row only the east neighbour counts, on the last column only the south one; the
    bottom-right pixel is never boundary. For a binary mask this is exactly `seg2bmap`; for a
    label map it marks the pixels where some class has a boundary.
    """
    m = np.asarray(labels)
    b = np.zeros(m.shape, dtype=bool)
    core = m[:-1, :-1]
    b[:-1, :-1] = (core != m[:-1, 1:]) | (core != m[1:, :-1]) | (core != m[1:, 1:])
    b[-1, :-1] = m[-1, :-1] != m[-1, 1:]
    b[:-1, -1] = m[:-1, -1] != m[1:, -1]
    return b


class _BoundaryPoints:
    """Boundary pixels of every class of one label map, from a single `boundary_map` pass.

    Pixel p is on the boundary of class c iff its block {p, E, S, SE} (edge-clamped, which
    reproduces `seg2bmap`'s edge rules) is not constant and contains c.
    """

    def __init__(self, labels: np.ndarray):
        h, w = labels.shape
        flat = np.flatnonzero(boundary_map(labels))
        self.y, self.x = np.divmod(flat, w)
        east = flat + (self.x < w - 1)
        south = flat + w * (self.y < h - 1)
        south_east = south + (self.x < w - 1)
        lab = labels.ravel()
        self.block = (lab.take(flat), lab.take(east), lab.take(south), lab.take(south_east))

    def of_class(self, c: int) -> tuple[np.ndarray, np.ndarray]:
        p, e, s, se = self.block
        sel = (p == c) | (e == c) | (s == c) | (se == c)
        return self.y[sel], self.x[sel]


@lru_cache(maxsize=64)
def _disk_rows(radius: int) -> tuple[np.ndarray, np.ndarray]:
    """Row offsets dy of the disk x^2 + y^2 <= r^2 and the half-width of each row."""
    dy = np.arange(-radius, radius + 1)
    half = np.array([math.isqrt(radius * radius - int(d) * int(d)) for d in dy])
    return dy, half


def _count_near(qy, qx, ty, tx, origin, size, radius) -> int:
    """Number of query points with a target point inside their disk of `radius`."""
    dy, half = _disk_rows(radius)
    height, width = size
    # prefix[y, j] = targets in row y left of column j; crop coordinates, padded by radius
    grid = np.zeros((height, width + 1), dtype=np.int32)
    grid[ty - origin[0], tx - origin[1] + 1] = 1
    prefix = np.cumsum(grid, axis=1, dtype=np.int32).ravel()
    base = (qy - origin[0])[:, None] + dy
    base = base * (width + 1) + (qx - origin[1])[:, None]
    hit = prefix.take(base + half + 1) > prefix.take(base - half)
    return int(np.count_nonzero(hit.any(axis=1)))


def contour_counts(pred: np.ndarray, gt: np.ndarray, classes) -> np.ndarray:
    """Boundary counts of one image for the given foreground classes.

    `gt` may hold 255: void is a label of its own here, which gives the same boundaries of
    every foreground class as mapping it to background. Returns an int64 array of shape
    (len(classes), 4): matched pred, pred boundary, matched gt, gt boundary pixels.
    """
    radius = boundary_radius(pred.shape)
    pred_points, gt_points = _BoundaryPoints(pred), _BoundaryPoints(gt)
    out = np.zeros((len(classes), 4), dtype=np.int64)
    for i, c in enumerate(classes):
        py, px = pred_points.of_class(c)
        gy, gx = gt_points.of_class(c)
        out[i, 1], out[i, 3] = len(py), len(gy)
        if len(py) == 0 or len(gy) == 0:
            continue
        y0 = min(py.min(), gy.min()) - radius
        x0 = min(px.min(), gx.min()) - radius
        y1 = max(py.max(), gy.max()) + radius
        x1 = max(px.max(), gx.max()) + radius
        size = (y1 - y0 + 1, x1 - x0 + 1)
        out[i, 0] = _count_near(py, px, gy, gx, (y0, x0), size, radius)
        out[i, 2] = _count_near(gy, gx, py, px, (y0, x0), size, radius)
    return out


def _as_labels(a: np.ndarray, what: str, num_classes: int, void_ok: bool) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim != 2:
        raise ValueError(f"{what} must be a 2-D label map, got shape {a.shape}")
    if a.dtype == np.uint8:
        return a
    if a.dtype != bool and not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"{what} must hold integer class ids, got dtype {a.dtype}")
    lo, hi = int(a.min()), int(a.max())
    if lo < 0 or hi > VOID:
        bad = lo if lo < 0 else hi
        allowed = f"0..{num_classes - 1}" + (f" and {VOID}" if void_ok else "")
        raise ValueError(f"{what} has class id {bad} (allowed {allowed})")
    return a.astype(np.uint8)


class JFAccumulator:
    """Per-class sums for J and F over a set of (prediction, ground truth) label maps."""

    def __init__(self, num_classes: int = NUM_CLASSES):
        if not 2 <= num_classes <= VOID:
            raise ValueError(f"num_classes must be in 2..{VOID}, got {num_classes}")
        self.num_classes = num_classes
        k = num_classes
        self.num_images = 0
        self.confusion = np.zeros((k, k), dtype=np.int64)  # [gt, pred] over non-void pixels
        self.pred_pixels = np.zeros(k, dtype=np.int64)  # all pixels, void included
        self.contour = np.zeros((k, 4), dtype=np.int64)  # as `contour_counts`, row 0 unused

    def add(self, pred: np.ndarray, gt: np.ndarray) -> None:
        """Add one image: `pred` holds ids 0..K-1, `gt` ids 0..K-1 or 255 (void)."""
        k = self.num_classes
        pred = _as_labels(pred, "prediction", k, void_ok=False)
        gt = _as_labels(gt, "ground truth", k, void_ok=True)
        if pred.shape != gt.shape:
            raise ValueError(f"shapes differ: prediction {pred.shape}, ground truth {gt.shape}")
        top = int(pred.max())
        if top >= k:
            raise ValueError(f"prediction has class id {top} (allowed 0..{k - 1})")
        # joint histogram of (gt, pred); gt values K..254 land in rows that must stay empty
        joint = np.bincount((gt.astype(np.int32) * k + pred).ravel(), minlength=(VOID + 1) * k)
        joint = joint.reshape(VOID + 1, k)
        bad = np.flatnonzero(joint[k:VOID].any(axis=1))
        if len(bad):
            raise ValueError(
                f"ground truth has class id {int(bad[0]) + k} (allowed 0..{k - 1} and {VOID})"
            )
        self.confusion += joint[:k]
        pred_hist = joint[:k].sum(axis=0) + joint[VOID]
        self.pred_pixels += pred_hist
        present = (pred_hist + joint[:k].sum(axis=1)) > 0
        classes = [c for c in range(1, k) if present[c]]
        if classes:
            self.contour[classes] += contour_counts(pred, gt, classes)
        self.num_images += 1

    def merge(self, other: "JFAccumulator") -> "JFAccumulator":
        """Add another accumulator's sums into this one (e.g. from a worker process)."""
        if other.num_classes != self.num_classes:
            raise ValueError(f"cannot merge {other.num_classes} classes into {self.num_classes}")
        self.num_images += other.num_images
        self.confusion += other.confusion
        self.pred_pixels += other.pred_pixels
        self.contour += other.contour
        return self

    def class_iou(self) -> list[float | None]:
        """IoU per class (fraction); None where the union over non-void pixels is empty."""
        inter = np.diag(self.confusion)
        union = self.confusion.sum(axis=0) + self.confusion.sum(axis=1) - inter
        return [int(i) / int(u) if u else None for i, u in zip(inter, union, strict=True)]

    def class_f(self) -> list[float | None]:
        """Contour F per class (fraction); None for background and classes never seen."""
        seen = self.pred_pixels + self.confusion.sum(axis=1)
        out: list[float | None] = [None]
        for c in range(1, self.num_classes):
            matched_pred, n_pred, matched_gt, n_gt = (int(v) for v in self.contour[c])
            out.append(f_score(matched_pred, n_pred, matched_gt, n_gt) if seen[c] else None)
        return out

    def result(self, names=None) -> dict:
        """{"J", "F", "JF", "per_class"} in percent; a mean over no class is None."""
        if names is None:
            names = VOC_CLASSES if self.num_classes == NUM_CLASSES else range(self.num_classes)
        iou, f = self.class_iou(), self.class_f()
        j_mean, f_mean = _mean_percent(iou), _mean_percent(f)
        jf = None if j_mean is None or f_mean is None else (j_mean + f_mean) / 2
        per_class = [
            {"class": str(name), "id": c, "J": _percent(iou[c]), "F": _percent(f[c])}
            for c, name in enumerate(names)
        ]
        return {"J": j_mean, "F": f_mean, "JF": jf, "per_class": per_class}


def f_score(matched_pred: int, n_pred: int, matched_gt: int, n_gt: int) -> float:
    """Boundary F of summed counts, with DAVIS's conventions for empty boundaries."""
    if n_pred == 0 and n_gt > 0:
        precision, recall = 1.0, 0.0
    elif n_pred > 0 and n_gt == 0:
        precision, recall = 0.0, 1.0
    elif n_pred == 0 and n_gt == 0:
        precision, recall = 1.0, 1.0
    else:
        precision, recall = matched_pred / n_pred, matched_gt / n_gt
    if precision + recall == 0:
        return 0.0
    return 2 * precision * recall / (precision + recall)


def _percent(v: float | None) -> float | None:
    return None if v is None else 100 * v


def _mean_percent(values: list[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return 100 * sum(kept) / len(kept) if kept else None
