"""PMM's extended training of the final stage (the paper's "et" rows): pretended under-fitting
and one cyclic pseudo-mask round (Li et al., ICCV 2021; code: Eli-YiLi/WSSS_MMSeg).

Round 1 trains on the AffinityNet's labels with the pretended under-fitting (PUF) loss. Its
last model predicts train_aug (scales + flips, softmax averaged, PMM's dense CRF, argmax):
the cyclic pseudo-masks. Round 2 trains a fresh model, from the backbone's pre-trained
weights, on those masks with plain cross-entropy. The stage's val predictions use the same
test-time procedure as the masks (PMM's `aug_test`). `icam.stages.final` runs the rounds.

As PMM's code (mmseg/models/losses/cross_entropy_loss.py and segmentors/encoder_decoder.py):
the per-pixel loss map counts ignored pixels as 0 and is reduced by a plain mean over every
pixel (mmsegmentation 0.8's `weight_reduce_loss`), in both rounds.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from icam import VOID
from icam.precision import float32

PUF_BETA = 0.5
"""β: the PUF clamps the loss map once its mean falls below β (PMM's VOC setting)."""

PUF_K = 0.5
"""k: the value each pixel's loss is clamped to (pixels above it stop giving gradient)."""

CYCLIC_CRF = {"iterations": 10, "gauss_sxy": 1, "gauss_compat": 3, "bilateral_sxy": 67,
              "bilateral_srgb": 3, "bilateral_compat": 4}
"""PMM's test-time dense CRF (encoder_decoder.py DenseCRF: pos w 3 xy 1, bi w 4 xy 67 rgb 3,
10 iterations), for the cyclic pseudo-masks and the extended stage's predictions."""


@float32
def pixel_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """N x H x W: -log softmax(logits)[target] per pixel, 0 where the target is void."""
    return F.cross_entropy(logits, targets, ignore_index=VOID, reduction="none")


def pretended_underfitting_loss(logits: torch.Tensor, targets: torch.Tensor,
                                beta: float = PUF_BETA, k: float = PUF_K) -> torch.Tensor:
    # PMM's PUF: ℓ = per-pixel CE; if mean(ℓ) < β then ℓ ← min(ℓ, k); loss = mean(ℓ)
    loss = pixel_cross_entropy(logits, targets)
    if loss.mean() < beta:
        loss = loss.clamp(max=k)
    return loss.mean()


def cyclic_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    # round 2: plain CE on the cyclic pseudo-masks, mean over every pixel as PMM's code
    return pixel_cross_entropy(logits, targets).mean()
