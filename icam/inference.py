"""CAM inference and the pseudo-labels made from CAMs.

A CAM here is the float32 array of the foreground classes only, C×H×W at image size
(C = 20 for VOC): channel c - 1 holds VOC class c, absent classes are all zero, values are in
[0, 1]. The background is never stored; each consumer builds it from the foreground:
`cam_labels` as (1 - max)^α (CRF labels), `cam_argmax_labels` as 1 - sum (the CAM stage's
evaluated labels), the random walk as (1 - max)^α with α = 6. On disk a CAM is quantised to
uint8 (`save_cam`).
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from icam.data import transforms as T
from icam.losses import cam_probabilities, max_norm
from icam.storage import Storage

NORM_EPS = 1e-5
"""Added to each class map's maximum before dividing (the reference's epsilon)."""


def multiscale_views(image: np.ndarray, scales: Sequence[float],
                     flip: bool = True) -> list[torch.Tensor]:
    """Per scale, a normalised batch of the resized image (and its mirror when `flip`)."""
    h, w = image.shape[:2]
    views = []
    for s in scales:
        x = T.normalize(T.resize(image, (round(h * s), round(w * s))))
        views.append(torch.stack([x, x.flip(-1)]) if flip else x[None])
    return views


def _foreground_maps(out: dict, label: torch.Tensor, formulation: str) -> torch.Tensor:
    """B×C×h×w foreground maps of one view batch, conditioned on the image label."""
    cam, rv = cam_probabilities(out, formulation)
    present = torch.cat([label.new_ones(1), label]).view(1, -1, 1, 1)
    if formulation == "seam":
        return rv[:, 1:] * present[:, 1:]  # SEAM infers from the PCM output alone
    probs = (0.5 * cam + 0.5 * rv) * present
    probs = probs / probs.sum(dim=1, keepdim=True).clamp_min(1e-8)  # renormalise incl. bg
    return probs[:, 1:]


@torch.no_grad()
def infer_cam(model: torch.nn.Module, image: np.ndarray, label: np.ndarray,
              scales: Sequence[float] = (0.5, 1.0, 1.5, 2.0), flip: bool = True,
              formulation: str = "icam", device: torch.device | str | None = None,
              views: Sequence[torch.Tensor] | None = None) -> np.ndarray:
    """The C×H×W foreground CAM of one image (see the module docstring).

    Each scale (and its mirror) goes through the CamNet `model` (in eval mode); per view:
    icam: 0.5·softmax(cam) + 0.5·softmax(refined) (eq. 1), absent classes zeroed and the rest
    renormalised over the present classes and background, background dropped; seam: the PCM
    output of SEAM's normalised CAM times the label. Maps are upsampled (bilinear) to H×W and
    averaged over views. icam then keeps only each pixel's largest class and divides each map
    by its maximum; seam min-max normalises each map (SEAM's infer_SEAM.py).
    `views` may hold the per-scale batches of `InferenceDataset` instead of `scales`/`flip`.
    """
    if formulation not in ("icam", "seam"):
        raise ValueError(f"infer_cam: formulation must be 'icam' or 'seam', got {formulation!r}")
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"infer_cam: image must be uint8 H×W×3, got {image.dtype} {image.shape}")
    height, width = image.shape[:2]
    if device is None:
        device = next(model.parameters()).device
    label = torch.as_tensor(np.asarray(label, dtype=np.float32), device=device)
    if views is None:
        views = multiscale_views(image, scales, flip)
    total, count = 0.0, 0
    for batch in views:
        out = model(batch.to(device))
        if out["logits"].shape[1] != label.numel() + 1:
            raise ValueError(f"infer_cam: model gives {out['logits'].shape[1]} channels, label "
                             f"has {label.numel()} classes (+1 background expected)")
        maps = _foreground_maps({k: v.float() for k, v in out.items()}, label, formulation)
        maps = F.interpolate(maps, (height, width), mode="bilinear", align_corners=False)
        if maps.shape[0] == 2:
            maps[1] = maps[1].flip(-1)  # the second image of a pair is the mirror
        total = total + maps.sum(dim=0)
        count += maps.shape[0]
    cam = total / count
    if formulation == "seam":
        cam = max_norm(cam[None])[0]
    else:
        cam = torch.where(cam == cam.amax(dim=0, keepdim=True), cam, torch.zeros_like(cam))
        cam = cam / (cam.amax(dim=(1, 2), keepdim=True) + NORM_EPS)
    return cam.cpu().numpy().astype(np.float32)


CAM_LEVELS = 255
"""Stored CAMs are uint8: round(255 · value), a step of 1/255 (`python -m icam.bench storage`
measures the size and how many labels change)."""


def save_cam(path: str | os.PathLike | Storage, cam: np.ndarray, label: np.ndarray) -> None:
    """Write a CAM (C×H×W, values in [0, 1]) and its image label (C) as compressed .npz, all
    or nothing, to a local path or a storage location; only the maps of the present classes
    are stored, quantised to `CAM_LEVELS` levels."""
    cam = np.asarray(cam, dtype=np.float32)
    label = np.asarray(label, dtype=np.float32)
    if cam.ndim != 3 or label.shape != (cam.shape[0],):
        raise ValueError(f"{path}: cam must be C×H×W and label C, got {cam.shape}, {label.shape}")
    present = np.flatnonzero(label > 0)
    maps = cam[present]
    if maps.size and not (maps.min() >= 0 and maps.max() <= 1 + 1e-6):
        raise ValueError(f"{path}: CAM values must lie in [0, 1], got [{maps.min()}, "
                         f"{maps.max()}]")
    levels = np.round(np.clip(maps, 0, 1) * CAM_LEVELS).astype(np.uint8)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, classes=present, cams=levels, scale=np.float32(1 / CAM_LEVELS),
                        label=label, size=np.array(cam.shape[1:]))
    Storage.open(path).write_bytes(buffer.getvalue())


def load_cam(path: str | os.PathLike | Storage) -> tuple[np.ndarray, np.ndarray]:
    """(cam C×H×W float32, label C float32) as written by `save_cam` (also the float32 maps
    of files written before CAMs were quantised)."""
    try:
        with np.load(io.BytesIO(Storage.open(path).read_bytes()), allow_pickle=False) as f:
            classes, cams, label, size = f["classes"], f["cams"], f["label"], f["size"]
            scale = f["scale"] if "scale" in f.files else np.float32(1)
    except (OSError, KeyError, ValueError) as err:
        raise ValueError(f"{path}: not a CAM file written by save_cam ({err})") from err
    cam = np.zeros((label.shape[0], *size), np.float32)
    cam[classes] = cams.astype(np.float32) * scale
    return cam, label


def _present(cam_fg: np.ndarray, label: np.ndarray | None) -> np.ndarray:
    if label is None:
        return np.flatnonzero(cam_fg.reshape(cam_fg.shape[0], -1).max(axis=1) > 0)
    return np.flatnonzero(np.asarray(label) > 0)


def cam_labels(cam_fg: np.ndarray, image: np.ndarray, alpha: float, crf: bool = True,
               label: np.ndarray | None = None) -> np.ndarray:
    """uint8 H×W class ids (0 = background) from a CAM: background (1 - max)^α, then the dense
    CRF on `image` (when `crf`), then the argmax over background and the present classes
    (those of `label`, or the non-zero maps)."""
    present = _present(cam_fg, label)
    if present.size == 0:
        return np.zeros(cam_fg.shape[1:], np.uint8)
    maps = cam_fg[present]
    scores = np.concatenate([(1 - maps.max(axis=0, keepdims=True)) ** alpha, maps])
    if crf:
        from icam.crf import dense_crf

        scores = dense_crf(image, scores)
    ids = np.concatenate([[0], present + 1]).astype(np.uint8)
    return ids[scores.argmax(axis=0)]


def cam_argmax_labels(cam_fg: np.ndarray) -> np.ndarray:
    """The CAM stage's evaluated pseudo-labels (no CRF, the authors' eval_cam.py): background
    1 - sum over classes, argmax with ties to the lower id (so a class needs more than 0.5)."""
    scores = np.concatenate([1 - cam_fg.sum(axis=0, keepdims=True), cam_fg])
    return scores.argmax(axis=0).astype(np.uint8)


def affinity_labels(label_low: np.ndarray, label_high: np.ndarray, ignore: int = 255) -> np.ndarray:
    """AffinityNet's training labels from the CRF labels of α = 2 (`label_low`, more background)
    and α = 4 (`label_high`, less): foreground where α = 2 still says foreground, background
    where α = 4 still says background, `ignore` elsewhere (the reference's AffDataset)."""
    if label_low.shape != label_high.shape:
        raise ValueError(f"affinity_labels: shapes differ, {label_low.shape} vs "
                         f"{label_high.shape}")
    out = np.where(label_low == 0, ignore, label_low).astype(np.uint8)
    out[label_high == 0] = 0
    return out
