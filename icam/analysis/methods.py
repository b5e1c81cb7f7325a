"""Method names: canonical keys, display labels and the paper's row order."""

from __future__ import annotations

import math

# Canonical key -> label, in the order the paper lists them (Tables 3-5).
LABELS = {
    "seam": "SEAM",
    "seam+is": "SEAM + IS",
    "seam+fsl": "SEAM + FSL",
    "cda": "CDA",
    "pmm": "PMM",
    "mctformer": "MCTformer",
    "icam-early": "early ICAM",
    "icam": "ICAM",
}
_ALIASES = {
    "seam-is": "seam+is",
    "seam+importance-sampling": "seam+is",
    "seam-fsl": "seam+fsl",
    "early-icam": "icam-early",
    "icam-icassp": "icam-early",
}
BACKBONES = {"resnet38": "Res38", "res38": "Res38", "res2net101": "R2N", "r2n": "R2N",
             "deit-s": "DeiT-S", "lite0": "Lite0", "lite0-r2n": "Lite0 for R2N", "tiny": "tiny"}
STAND_INS = {"Lite0 for R2N": "R2N"}
"""Backbone labels of networks standing in for a published one (the cpu preset's Lite0
in the R2N row of Table 5): their rows meet that backbone's published row."""
STAGE_LABELS = {"cam": "CAMs", "affinity": "AffinityNet", "final": "Final"}


def is_missing(value) -> bool:
    """True for None, NaN and empty strings (the blanks of a CSV cell)."""
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and value.strip() == ""


def canonical_method(name) -> str | None:
    """`SEAM_IS`, `seam-is` and `seam+is` are one method: lower case, `_` and spaces as `-`."""
    if is_missing(name):
        return None
    key = "-".join(str(name).strip().lower().replace("_", " ").split())
    return _ALIASES.get(key, key)


def method_label(method, training=None) -> str:
    label = "–" if is_missing(method) else LABELS.get(method, str(method))
    return label if is_missing(training) else f"{label} ({training})"


def backbone_label(name) -> str | None:
    if is_missing(name):
        return None
    return BACKBONES.get(str(name).strip().lower(), str(name))


def published_backbone(label) -> str | None:
    """The published backbone whose row a backbone label meets: a stand-in's, else its own."""
    return None if is_missing(label) else STAND_INS.get(label, label)


def method_rank(method) -> tuple[int, str]:
    """Sort key: the paper's order, then other (external) methods alphabetically before ICAM."""
    order = list(LABELS)
    if method in order:
        rank = order.index(method)
        return (rank if rank < order.index("icam-early") else rank + 1, "")
    return (order.index("icam-early"), "" if is_missing(method) else str(method))
