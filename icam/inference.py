"""CAM inference and the pseudo-labels made from CAMs.

A CAM here is the float32 array of the foreground classes only, C×H×W at image size
(C = 20 for VOC): channel c - 1 holds VOC class c, absent classes are all zero, values are in
[0, 1]. The background is never stored; each consumer builds it from the foreground:
`crf_scores` as (1 - max)^α (AffinityNet's CRF labels), `cam_argmax_labels` as 1 - sum (ICAM's
evaluated CAM labels) or SEAM's constant 0.26, the random walk as (1 - max)^α with α = 6. On
disk a CAM is stored at 12 bits (`save_cam`, `icam.codec`).

Each method keeps its own paper's conventions (reference-facts.md, "As run"): ICAM (and the
`seam+is`, `seam+fsl` variants, which are ICAM's losses with a part switched off) as the
authors' infer_cam.py; the `seam` baseline as SEAM's infer_SEAM.py.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from icam import codec
from icam.data import transforms as T
from icam.losses import cam_probabilities
from icam.precision import float32, run_network
from icam.storage import Storage

NORM_EPS = 1e-5
"""Added to each class map's maximum before dividing (the reference's epsilon)."""

CONVENTIONS = {  # per formulation: background of the evaluated CAM labels, CRF label alphas
    "icam": {"cam_background": None, "crf_alphas": (2, 4)},  # None: 1 - sum over classes
    "seam": {"cam_background": 0.26, "crf_alphas": (4, 24)},
}


def multiscale_views(image: np.ndarray, scales: Sequence[float],
                     flip: bool = True) -> list[torch.Tensor]:
    """Per scale, a normalised batch of the resized image (and its mirror when `flip`)."""
    h, w = image.shape[:2]
    views = []
    for s in scales:
        x = T.normalize(T.resize(image, (round(h * s), round(w * s))))
        views.append(torch.stack([x, x.flip(-1)]) if flip else x[None])
    return views


@float32
def _foreground_maps(out: dict, classes: torch.Tensor, formulation: str,
                     view_size: tuple[int, int], size: tuple[int, int]) -> torch.Tensor:
    """B×P×H×W maps of the image's P present `classes` (their channels in the network's
    output) from one view batch, at `size`; absent classes would be zero maps, so they are
    never made.

    icam: one bilinear upsampling to the image; seam: SEAM's two, to the view's input size
    (align_corners=True, inside its network) and then to the image."""
    cam, rv = cam_probabilities(out, formulation)
    if formulation == "seam":  # SEAM infers from the PCM output alone
        maps = F.interpolate(rv[:, classes], view_size, mode="bilinear", align_corners=True)
    else:
        probs = (0.5 * cam + 0.5 * rv)[:, torch.cat([classes.new_zeros(1), classes])]
        maps = (probs / probs.sum(dim=1, keepdim=True).clamp_min(1e-8))[:, 1:]  # renormalised
    return F.interpolate(maps, size, mode="bilinear", align_corners=False)


@float32
def seam_min_max(cam: torch.Tensor, eps: float = NORM_EPS) -> torch.Tensor:
    """SEAM's infer_SEAM.py on the C×H×W sum over views: negatives to 0, values below
    min + eps to 0, then (x - min - eps) / (max - min + eps) per class."""
    cam = cam.clamp_min(0)
    lo = cam.amin(dim=(1, 2), keepdim=True)
    hi = cam.amax(dim=(1, 2), keepdim=True)
    cam = torch.where(cam < lo + eps, torch.zeros_like(cam), cam)
    return (cam - lo - eps) / (hi - lo + eps)


@torch.no_grad()
def infer_cam(model: torch.nn.Module, image: np.ndarray, label: np.ndarray,
              scales: Sequence[float] = (0.5, 1.0, 1.5, 2.0), flip: bool = True,
              formulation: str = "icam", device: torch.device | str | None = None,
              views: Sequence[torch.Tensor] | None = None, bf16: bool = False) -> np.ndarray:
    """The C×H×W foreground CAM of one image (see the module docstring).

    Each scale (and its mirror) goes through the CamNet `model` (in eval mode); per view:
    icam: 0.5·softmax(cam) + 0.5·softmax(refined) (eq. 1), absent classes zeroed and the rest
    renormalised over the present classes and background, background dropped, upsampled to
    H×W and averaged over views; then only each pixel's largest class is kept and each map is
    divided by its maximum. seam: the PCM output of SEAM's normalised CAM, upsampled in two
    steps, summed over views and min-max normalised (`seam_min_max`). Absent classes are zero
    maps (never computed); so is every map of an image without classes.
    `views` may hold the per-scale batches of `InferenceDataset` instead of `scales`/`flip`.
    With `bf16` the network runs in bfloat16; the normalisation is float32.
    """
    if formulation not in ("icam", "seam"):
        raise ValueError(f"infer_cam: formulation must be 'icam' or 'seam', got {formulation!r}")
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"infer_cam: image must be uint8 H×W×3, got {image.dtype} {image.shape}")
    height, width = image.shape[:2]
    if device is None:
        device = next(model.parameters()).device
    label = np.asarray(label, dtype=np.float32)
    present = np.flatnonzero(label > 0)
    classes = torch.as_tensor(present + 1, device=device)  # channel 0 is the background
    cam = np.zeros((label.size, height, width), np.float32)
    if present.size == 0:
        return cam
    if views is None:
        views = multiscale_views(image, scales, flip)
    total, count = 0.0, 0
    for batch in views:
        out = run_network(model, batch.to(device), bf16)
        if out["logits"].shape[1] != label.size + 1:
            raise ValueError(f"infer_cam: model gives {out['logits'].shape[1]} channels, label "
                             f"has {label.size} classes (+1 background expected)")
        maps = _foreground_maps(out, classes, formulation, batch.shape[2:], (height, width))
        if maps.shape[0] == 2:
            maps[1] = maps[1].flip(-1)  # the second image of a pair is the mirror
        total = total + maps.sum(dim=0)
        count += maps.shape[0]
    if formulation == "seam":
        maps = seam_min_max(total)
    else:
        maps = total / count
        maps = torch.where(maps == maps.amax(dim=0, keepdim=True), maps, torch.zeros_like(maps))
        maps = maps / (maps.amax(dim=(1, 2), keepdim=True) + NORM_EPS)
    cam[present] = maps.cpu().numpy()
    return cam


def save_cam(path: str | os.PathLike | Storage, cam: np.ndarray, label: np.ndarray) -> None:
    """Write a CAM (C×H×W, values in [0, 1]) and its image label (C) as compressed .npz, all
    or nothing, to a local path or a storage location; only the maps of the present classes
    are stored, at 12 bits (`icam.codec`)."""
    cam = np.asarray(cam, dtype=np.float32)
    label = np.asarray(label, dtype=np.float32)
    if cam.ndim != 3 or label.shape != (cam.shape[0],):
        raise ValueError(f"{path}: cam must be C×H×W and label C, got {cam.shape}, {label.shape}")
    present = np.flatnonzero(label > 0)
    maps = cam[present]
    if maps.size and not (maps.min() >= 0 and maps.max() <= 1 + 1e-6):
        raise ValueError(f"{path}: CAM values must lie in [0, 1], got [{maps.min()}, "
                         f"{maps.max()}]")
    buffer = io.BytesIO()
    np.savez_compressed(buffer, classes=present, cams=codec.encode(maps), levels=codec.LEVELS,
                        label=label, size=np.array(cam.shape[1:]))
    Storage.open(path).write_bytes(buffer.getvalue())


def load_cam(path: str | os.PathLike | Storage) -> tuple[np.ndarray, np.ndarray]:
    """(cam C×H×W float32, label C float32) as written by `save_cam` (or by earlier versions,
    which stored uint8 or float32 maps)."""
    try:
        with np.load(io.BytesIO(Storage.open(path).read_bytes()), allow_pickle=False) as f:
            classes, maps, label = f["classes"], codec.read_maps(f, "cams"), f["label"]
            size = f["size"]
    except (OSError, KeyError, ValueError) as err:
        raise ValueError(f"{path}: not a CAM file written by save_cam ({err})") from err
    cam = np.zeros((label.shape[0], *size), np.float32)
    cam[classes] = maps
    return cam, label


def crf_scores(cam_fg: np.ndarray, image: np.ndarray, alpha: float,
               label: np.ndarray) -> np.ndarray:
    """(1 + P)×H×W dense-CRF probabilities of the background, scored (1 - max)^α, and the P
    present classes of `label` in class order (the authors' _crf_with_alpha)."""
    from icam.crf import dense_crf

    maps = cam_fg[np.flatnonzero(np.asarray(label) > 0)]
    background = (1 - maps.max(axis=0, keepdims=True, initial=0)) ** alpha
    return dense_crf(image, np.concatenate([background, maps]))


def cam_background(cam_fg: np.ndarray, background: float | None = None) -> np.ndarray:
    """1×H×W background score of the CAM stage's pseudo-labels: 1 - sum over classes (ICAM's
    eval_cam.py: a class needs more than 0.5), or the constant `background` (SEAM's
    infer_SEAM.py, 0.26)."""
    if background is None:
        return 1 - cam_fg.sum(axis=0, keepdims=True)
    return np.full((1, *cam_fg.shape[1:]), background, cam_fg.dtype)


def cam_argmax_labels(cam_fg: np.ndarray, background: float | None = None) -> np.ndarray:
    """The CAM stage's evaluated pseudo-labels (no CRF): argmax over `cam_background` and the
    classes, ties to the lower id."""
    bg = cam_background(cam_fg, background)
    return np.concatenate([bg, cam_fg]).argmax(axis=0).astype(np.uint8)
