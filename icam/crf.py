"""Fully connected CRF (Krähenbühl and Koltun, 2011) on top of pydensecrf.

The parameters are those of the reference pipeline (reference-facts.md): a Gaussian kernel
(sxy 3, compat 3), a bilateral kernel (sxy 80, srgb 13, compat 10) and 10 mean-field steps.
"""

from __future__ import annotations

import numpy as np

PROB_CLIP = 1e-5
"""Scores are clipped to [PROB_CLIP, 1] before the unary -log(p) (as pydensecrf's helper)."""


def dense_crf(image: np.ndarray, probs: np.ndarray, iterations: int = 10, gauss_sxy: float = 3,
              gauss_compat: float = 3, bilateral_sxy: float = 80, bilateral_srgb: float = 13,
              bilateral_compat: float = 10) -> np.ndarray:
    """Refine K score maps `probs` (K×H×W, in [0, 1]) on the uint8 RGB `image` (H×W×3).

    Returns the CRF's marginals, float32 K×H×W (each pixel sums to 1).
    """
    import pydensecrf.densecrf as dcrf

    image = np.asarray(image)
    probs = np.asarray(probs)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"dense_crf: image must be uint8 H×W×3, got {image.dtype} "
                         f"{image.shape}")
    if probs.ndim != 3 or probs.shape[1:] != image.shape[:2]:
        raise ValueError(f"dense_crf: probs must be K×H×W with H×W = {image.shape[:2]}, got "
                         f"{probs.shape}")
    num_labels, height, width = probs.shape
    if num_labels < 1:
        raise ValueError("dense_crf: probs has no channels")
    unary = -np.log(np.clip(probs, PROB_CLIP, 1.0)).reshape(num_labels, -1)
    crf = dcrf.DenseCRF2D(width, height, num_labels)
    crf.setUnaryEnergy(np.ascontiguousarray(unary, dtype=np.float32))
    crf.addPairwiseGaussian(sxy=gauss_sxy, compat=gauss_compat)
    crf.addPairwiseBilateral(sxy=bilateral_sxy, srgb=bilateral_srgb,
                             rgbim=np.ascontiguousarray(image), compat=bilateral_compat)
    marginals = crf.inference(iterations)
    return np.asarray(marginals, dtype=np.float32).reshape(num_labels, height, width)
