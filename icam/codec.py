"""Maps in [0, 1] (CAMs, CRF scores) as the stages store them: 12-bit levels, delta-coded.

round(4095 · x) is differenced along each row and then along each column. Inference and the
CRF give smooth maps, so the differences are mostly small integers, which deflate
(`np.savez_compressed`) packs tightly: CAM files 4.3 times smaller than compressed float32 on
the synthetic benchmark, with a step of 1/4095 (`python -m icam.bench compaction` runs a trial
both ways; `python -m icam.bench storage` projects the sizes to VOC).
"""

from __future__ import annotations

import numpy as np

LEVELS = 4095
"""Quantisation levels of a stored map: 12 bits; its differences fit int16."""


def encode(maps: np.ndarray) -> np.ndarray:
    """int16 ...×H×W: round(LEVELS · clip(maps, 0, 1)), differenced along W, then along H."""
    levels = np.round(np.clip(np.asarray(maps, np.float32), 0, 1) * LEVELS).astype(np.int16)
    zero = np.int16(0)
    return np.diff(np.diff(levels, axis=-1, prepend=zero), axis=-2, prepend=zero)


def decode(deltas: np.ndarray, levels: int = LEVELS) -> np.ndarray:
    """float32 maps from `encode`'s differences (summed along H, then along W)."""
    summed = np.cumsum(np.cumsum(np.asarray(deltas, np.int32), axis=-2), axis=-1)
    return summed.astype(np.float32) / levels


def read_maps(arrays, key: str) -> np.ndarray:
    """float32 maps stored under `key` in an opened .npz by any version of the stages:
    delta-coded (with "levels"), uint8 levels (times "scale", or / 255 without it), or
    float32 as they are."""
    stored = arrays[key]
    if "levels" in arrays:
        return decode(stored, int(arrays["levels"]))
    if stored.dtype == np.uint8:
        scale = float(arrays["scale"]) if "scale" in arrays else 1 / 255
        return stored.astype(np.float32) * np.float32(scale)
    return stored.astype(np.float32)
