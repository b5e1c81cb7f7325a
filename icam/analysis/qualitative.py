"""The qualitative figure (as the paper's Figs. 2 and 5): image, foreground CAM heat map,
CAM pseudo-label, AffinityNet label, final prediction and ground truth, one row per image id of
a stored trial."""

from __future__ import annotations

import io
import posixpath
import zipfile
from dataclasses import dataclass

import numpy as np
import pyarrow.fs as pafs
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

from icam import codec
from icam.analysis.trials import open_location, read_bytes

COLUMNS = ("image", "CAM (foreground)", "pseudo-label", "AffinityNet label", "final prediction",
           "ground truth")
VOID = 255


@dataclass(frozen=True)
class ArtefactPaths:
    """Where a trial's artefacts and the data root's files lie; `{id}` is the image id."""

    cam: str = "cam/cams/{id}.npz"  # see `foreground_heat` for the two layouts read
    pseudo_label: str = "cam/labels/{id}.png"
    affinity_label: str = "affinity/rw/{id}.png"  # the random walk's labels
    prediction: str = "final/pred/{id}.png"
    image: str = "JPEGImages/{id}.jpg"
    ground_truth: str = "SegmentationClass/{id}.png"


DEFAULT_PATHS = ArtefactPaths()


def voc_palette() -> np.ndarray:
    """The VOC colour map: the bits of a class id spread over the high bits of R, G and B."""
    palette = np.zeros((256, 3), np.uint8)
    for index in range(256):
        value, r, g, b = index, 0, 0, 0
        for shift in range(7, -1, -1):
            r |= (value & 1) << shift
            g |= ((value >> 1) & 1) << shift
            b |= ((value >> 2) & 1) << shift
            value >>= 3
        palette[index] = (r, g, b)
    return palette


def _read(fs: pafs.FileSystem, path: str) -> bytes | None:
    if fs.get_file_info(path).type != pafs.FileType.File:
        return None
    return read_bytes(fs, path)


def _data_folder(fs: pafs.FileSystem, root: str) -> str:
    """A VOC2012 folder, or the VOC2012 folder inside a VOCdevkit folder."""
    inner = posixpath.join(root, "VOC2012")
    if fs.get_file_info(inner).type == pafs.FileType.Directory:
        return inner
    return root


def foreground_heat(arrays) -> np.ndarray:
    """Max over a CAM file's foreground maps. Two layouts: "cams" (maps of present foreground
    classes only, as the CAM stage writes them: `icam.codec`) or "cam"
    (K x H x W) with "keys" (their class ids; 0 = background; without keys, channel 0 is
    background)."""
    if "cams" in arrays:
        maps = codec.read_maps(arrays, "cams")
        shape = tuple(int(v) for v in arrays["size"]) if "size" in arrays else maps.shape[1:]
    else:
        cam = np.asarray(arrays["cam"], np.float32)
        keys = arrays["keys"] if "keys" in arrays else np.arange(cam.shape[0])
        maps, shape = cam[np.asarray(keys).reshape(-1) != 0], cam.shape[1:]
    return maps.max(axis=0) if len(maps) else np.zeros(shape, np.float32)


def qualitative_figure(trial_dir: str, data_root: str, ids: list[str],
                       paths: ArtefactPaths = DEFAULT_PATHS) -> tuple[Figure | None, list[str]]:
    """(figure, messages). An id whose image is missing is left out; a missing artefact leaves
    its panel blank; both are named in the messages. No figure when no image is found."""
    trial_fs, trial = open_location(trial_dir)
    data_fs, root = open_location(data_root)
    root = _data_folder(data_fs, root)
    messages, rows = [], []
    for image_id in ids:
        image_path = posixpath.join(root, paths.image.format(id=image_id))
        image = _read(data_fs, image_path)
        if image is None:
            messages.append(f"{image_id}: skipped, image not found ({image_path})")
            continue
        try:
            panels = [np.asarray(Image.open(io.BytesIO(image)).convert("RGB"))]
        except OSError as error:
            messages.append(f"{image_id}: skipped, image unreadable ({image_path}: {error})")
            continue
        sources = ((trial_fs, trial, paths.cam, "CAM"),
                   (trial_fs, trial, paths.pseudo_label, "pseudo-label"),
                   (trial_fs, trial, paths.affinity_label, "AffinityNet label"),
                   (trial_fs, trial, paths.prediction, "final prediction"),
                   (data_fs, root, paths.ground_truth, "ground truth"))
        for fs, folder, template, what in sources:
            path = posixpath.join(folder, template.format(id=image_id))
            content, panel = _read(fs, path), None
            if content is None:
                messages.append(f"{image_id}: {what} not found ({path})")
            else:
                try:
                    panel = (_heat(content, panels[0].shape[:2]) if what == "CAM" else
                             _labels(content))
                except (OSError, ValueError, KeyError, zipfile.BadZipFile) as error:
                    messages.append(f"{image_id}: {what} unreadable ({path}: {error})")
            panels.append(panel)
        rows.append((image_id, panels))
    if not rows:
        return None, messages
    return _draw(rows), messages


def _heat(content: bytes, size: tuple[int, int]) -> np.ndarray:
    with np.load(io.BytesIO(content), allow_pickle=False) as arrays:
        heat = foreground_heat(arrays)
    if heat.shape != size:
        heat = np.asarray(Image.fromarray(heat).resize(size[::-1], Image.BILINEAR))
    return heat


def _labels(content: bytes) -> np.ndarray:
    labels = np.asarray(Image.open(io.BytesIO(content)))
    return voc_palette()[labels if labels.ndim == 2 else labels[..., 0]]


def _draw(rows: list[tuple[str, list]]) -> Figure:
    height, width = rows[0][1][0].shape[:2]  # panels take the first image's aspect
    aspect = min(2.0, max(0.5, width / height))
    figure = Figure(figsize=(1.9 * aspect * len(COLUMNS) + 0.3, 1.9 * len(rows) + 0.3),
                    layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(len(rows), len(COLUMNS), squeeze=False)
    for r, (image_id, panels) in enumerate(rows):
        for c, panel in enumerate(panels):
            ax = axes[r][c]
            ax.set_axis_off()
            if r == 0:
                ax.set_title(COLUMNS[c], fontsize=8)
            if panel is None:
                ax.text(0.5, 0.5, "not stored", ha="center", va="center", fontsize=7,
                        transform=ax.transAxes)
            elif c == 1:
                ax.imshow(panels[0])
                ax.imshow(panel, cmap="jet", alpha=0.5, vmin=0.0, vmax=1.0)
            else:
                ax.imshow(panel)
        axes[r][0].text(-0.05, 0.5, image_id, rotation=90, ha="right", va="center",
                        fontsize=7, transform=axes[r][0].transAxes)
    return figure
