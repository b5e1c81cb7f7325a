"""AffinityNet's random walk: CAMs propagated by the learned affinities into label maps.

The reference's infer_aff.py: the image is padded to a multiple of the output stride s (8
for ResNet-38); the background is (1 - max over classes)^α with α = 6; the CAMs (padded with
zeros) are average-pooled by s to the feature size, multiplied by T^(2^logt) with T the
column-normalised affinity^β (β = 8, logt = 6), upsampled (bilinear) and cut back to the
image, and the argmax is the label.

The transition is a sparse hw×hw matrix: about 70 pairs per feature pixel (radius 5), so a
step of the walk costs O(hw) rather than the dense matrix's O((hw)²) (`python -m icam.bench
randomwalk`).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from icam.data import transforms as T
from icam.models.affinity import random_walk, random_walk_transition
from icam.precision import float32, run_network


def walk_radius(height: int, width: int, radius: int = 5) -> int:
    """The pair radius used on an h×w feature map: the reference shrinks it on small maps."""
    edge = min(height, width)
    return radius if edge >= 2 * radius + 1 else (edge - 1) // 2


@float32
def cams_with_background(cam_fg: np.ndarray | torch.Tensor, alpha: float = 6,
                         floor: np.ndarray | None = None) -> torch.Tensor:
    """(K = C + 1)×H×W: background (1 - max over classes)^α, raised to `floor` (an H×W or
    1×H×W background) where that is higher, then the C foreground maps."""
    cam = torch.as_tensor(np.asarray(cam_fg, dtype=np.float32))
    bg = (1 - cam.amax(dim=0, keepdim=True)).pow(alpha)
    if floor is not None:
        bg = torch.maximum(bg, torch.as_tensor(np.asarray(floor, np.float32)).view_as(bg))
    return torch.cat([bg, cam])


@float32
def propagate_labels(cam_fg: np.ndarray, transition: torch.Tensor, alpha: float = 6,
                     logt: int = 6, stride: int = 8, floor: np.ndarray | None = None,
                     keep: float | None = None) -> np.ndarray:
    """uint8 H×W class ids from a C×H×W foreground CAM and an hw×hw `transition` of the
    image's feature map (h = ceil(H/stride), w = ceil(W/stride)). With `floor`, the CAM
    labels' own background (`icam.inference.cam_background`), no pixel those labels call
    background starts the walk as foreground: the walk starts from at most their foreground.
    With `keep` as well, the floor guards only: the walk runs alone, and again from the floor
    where it kept less than `keep` of the pixels the CAM labels call background."""
    if floor is not None and keep is not None:
        alone = propagate_labels(cam_fg, transition, alpha, logt, stride)
        floor = np.asarray(floor).reshape(alone.shape)
        called = floor >= np.asarray(cam_fg).max(axis=0)  # argmax: ties go to the background
        if (alone[called] == 0).sum() >= keep * called.sum():
            return alone
        return propagate_labels(cam_fg, transition, alpha, logt, stride, floor)
    height, width = cam_fg.shape[1:]
    h, w = math.ceil(height / stride), math.ceil(width / stride)
    if transition.dim() == 2:
        transition = transition.unsqueeze(0)
    if transition.shape != (1, h * w, h * w):
        raise ValueError(f"propagate_labels: a {height}×{width} CAM needs a {h * w}×{h * w} "
                         f"transition (features {h}×{w}), got {tuple(transition.shape)}")
    # absent classes are zero maps, which the walk keeps at zero: walk the present ones only
    present = np.flatnonzero(np.asarray(cam_fg).reshape(len(cam_fg), -1).max(axis=1) > 0)
    if present.size == 0:  # the background alone
        return np.zeros((height, width), np.uint8)
    cam = cams_with_background(cam_fg[present], alpha, floor)
    cam = cam.to(transition.device, transition.dtype)
    cam = F.pad(cam, (0, w * stride - width, 0, h * stride - height))
    cam = F.avg_pool2d(cam[None], stride)
    cam = random_walk(cam, transition, logt)
    cam = F.interpolate(cam, (h * stride, w * stride), mode="bilinear", align_corners=False)
    best = cam[0, :, :height, :width].argmax(dim=0).cpu().numpy()
    return np.concatenate([[0], present + 1]).astype(np.uint8)[best]


@torch.no_grad()
def random_walk_labels(model: torch.nn.Module, image: np.ndarray, cam_fg: np.ndarray,
                       beta: float = 8, logt: int = 6, alpha: float = 6, radius: int = 5,
                       stride: int = 8, device: torch.device | str | None = None,
                       floor: np.ndarray | None = None, keep: float | None = None,
                       bf16: bool = False) -> np.ndarray:
    """The AffinityNet stage's label map of one image: features of the AffinityNet `model`
    (eval mode, output stride `stride`; in bfloat16 with `bf16`) on the zero-padded
    normalised image, their transition, `propagate_labels` (float32, with the background
    `floor` and `keep` when given)."""
    height, width = image.shape[:2]
    if cam_fg.shape[1:] != (height, width):
        raise ValueError(f"random_walk_labels: CAM size {cam_fg.shape[1:]} differs from the "
                         f"image {(height, width)}")
    if device is None:
        device = next(model.parameters()).device
    h, w = math.ceil(height / stride), math.ceil(width / stride)
    x = F.pad(T.normalize(image), (0, w * stride - width, 0, h * stride - height))
    features = run_network(model, x[None].to(device), bf16)
    if features.shape[-2:] != (h, w):
        raise ValueError(f"random_walk_labels: features {tuple(features.shape[-2:])} for a "
                         f"{height}×{width} image, expected stride {stride} ({h}×{w})")
    r = walk_radius(h, w, radius)
    if r >= 2:
        transition = random_walk_transition(features, r, beta)
    else:  # too small for any pair: the walk leaves the CAM as it is
        transition = torch.eye(h * w, device=features.device)
    return propagate_labels(cam_fg, transition, alpha, logt, stride, floor, keep)
