"""PASCAL VOC 2012 (+ SBD) reader: layout, image-level labels, and the datasets of each stage.

A data root is a VOC2012 folder, or a VOCdevkit folder holding one, with `JPEGImages/`,
`SegmentationClass/` (and SBD's `SegmentationClassAug/`) and `ImageSets/Segmentation/<split>.txt`.
"""

import csv
import hashlib
import io
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from tqdm import tqdm

from icam import VOC_CLASSES, VOID
from icam.atomic import atomic_write
from icam.cache import cache_home
from icam.data import transforms as T
from icam.storage import Storage

FOREGROUND_CLASSES = VOC_CLASSES[1:]
NUM_FOREGROUND = len(FOREGROUND_CLASSES)  # label vectors: entry c - 1 is class id c


def _voc_palette() -> list[int]:
    """The VOC colour map: bits of the class id spread over the high bits of R, G and B."""
    palette = []
    for c in range(256):
        r = g = b = 0
        for shift in range(7, -1, -1):
            r |= ((c >> 0) & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        palette += [r, g, b]
    return palette


VOC_PALETTE = _voc_palette()


def load_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as an H x W x 3 uint8 RGB array."""
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
    except (OSError, SyntaxError, ValueError) as err:
        raise ValueError(f"{path}: cannot read image ({err})") from err


def load_mask(path: str | os.PathLike) -> np.ndarray:
    """Read a class-id PNG (palette or greyscale) as H x W uint8; ids 0-20, 255 = void."""
    try:
        with Image.open(path) as im:
            if im.mode not in ("P", "L"):
                raise ValueError(f"mode {im.mode}, expected a palette or greyscale PNG")
            mask = np.asarray(im, dtype=np.uint8).copy()
    except (OSError, SyntaxError, ValueError) as err:
        raise ValueError(f"{path}: cannot read mask ({err})") from err
    bad = np.unique(mask[(mask > NUM_FOREGROUND) & (mask != VOID)])
    if bad.size:
        raise ValueError(
            f"{path}: class ids {bad.tolist()} outside 0-{NUM_FOREGROUND} (255 = void allowed)"
        )
    return mask


def save_mask(path: str | os.PathLike | Storage, mask: np.ndarray) -> None:
    """Write an H x W uint8 class-id map as a VOC palette PNG, all or nothing, to a local path
    or a storage location."""
    im = Image.fromarray(np.asarray(mask, dtype=np.uint8), mode="P")
    im.putpalette(VOC_PALETTE)
    buffer = io.BytesIO()
    im.save(buffer, format="PNG")
    Storage.open(path).write_bytes(buffer.getvalue())


def labels_from_mask(mask: np.ndarray) -> np.ndarray:
    """20-dim float32 multi-hot of the foreground classes present (0 and 255 ignored)."""
    present = np.unique(mask)
    present = present[(present >= 1) & (present <= NUM_FOREGROUND)]
    label = np.zeros(NUM_FOREGROUND, np.float32)
    label[present - 1] = 1.0
    return label


class VOCLayout:
    """Where the files of a VOC 2012 root live, its id lists and its image-level labels."""

    def __init__(self, root: str | os.PathLike):
        given = Path(root).expanduser()
        for candidate in (given, given / "VOC2012"):
            if (candidate / "JPEGImages").is_dir() and (
                candidate / "ImageSets" / "Segmentation"
            ).is_dir():
                self.root = candidate
                break
        else:
            raise FileNotFoundError(
                f"{given}: not a VOC 2012 folder (JPEGImages/ and ImageSets/Segmentation/) "
                "nor a VOCdevkit folder holding VOC2012/"
            )
        self.has_sbd = (self.root / "SegmentationClassAug").is_dir()
        self._ids: dict[str, list[str]] = {}
        self._aug_names: set[str] | None = None

    def list_path(self, split: str) -> Path:
        """The id list of a split; `train_aug` means `train` when SBD is absent."""
        if split == "train_aug" and not self.has_sbd:
            split = "train"
        return self.root / "ImageSets" / "Segmentation" / f"{split}.txt"

    def image_path(self, image_id: str) -> Path:
        return self.root / "JPEGImages" / f"{image_id}.jpg"

    def mask_path(self, image_id: str) -> Path:
        """SBD's mask when present for this id, else VOC's."""
        if self.has_sbd:
            if self._aug_names is None:
                self._aug_names = set(os.listdir(self.root / "SegmentationClassAug"))
            if f"{image_id}.png" in self._aug_names:
                return self.root / "SegmentationClassAug" / f"{image_id}.png"
        return self.root / "SegmentationClass" / f"{image_id}.png"

    def ids(self, split: str) -> list[str]:
        """Ids of a split, each checked to have an image and a mask."""
        if split not in self._ids:
            self._ids[split] = self._read_list(self.list_path(split))
        return list(self._ids[split])

    def _read_list(self, list_file: Path) -> list[str]:
        if not list_file.is_file():
            raise FileNotFoundError(f"{list_file}: id list not found")
        images = set(os.listdir(self.root / "JPEGImages"))
        ids = []
        for lineno, line in enumerate(list_file.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            # plain ids, or DeepLab's "/JPEGImages/<id>.jpg /SegmentationClassAug/<id>.png"
            token = line.split()[0]
            image_id = Path(token).stem if token.endswith(".jpg") else token
            if f"{image_id}.jpg" not in images:
                raise FileNotFoundError(
                    f"{list_file}, line {lineno}: image {self.image_path(image_id)} not found"
                )
            if not self.mask_path(image_id).is_file():
                raise FileNotFoundError(
                    f"{list_file}, line {lineno}: mask {self.mask_path(image_id)} not found"
                )
            ids.append(image_id)
        if not ids:
            raise ValueError(f"{list_file}: empty id list")
        return ids

    def labels(self, split: str) -> dict[str, np.ndarray]:
        """Image-level labels of a split, from the masks, cached in a CSV with a fingerprint."""
        ids = self.ids(split)
        cache = self._label_cache(split)
        cached = _read_label_csv(cache) if cache.is_file() else {}
        rows, stale = {}, []
        for image_id in ids:
            mask = self.mask_path(image_id)
            st = mask.stat()
            key = (str(mask.relative_to(self.root)), st.st_size, st.st_mtime_ns)
            row = cached.get(image_id)
            if row is not None and row[0] == key:
                rows[image_id] = row
            else:
                stale.append((image_id, key))
        desc = f"labels {split}"
        for image_id, key in tqdm(stale, desc=desc, disable=len(stale) < 500):
            rows[image_id] = (key, labels_from_mask(load_mask(self.root / key[0])))
        if stale or set(cached) != set(rows):
            self._write_labels(split, rows)
        return {image_id: rows[image_id][1].copy() for image_id in ids}

    def _label_cache(self, split: str) -> Path:
        """Beside the data when writable, else under the cache home keyed by the root path."""
        beside = self.root / f"icam_labels_{split}.csv"
        if os.access(self.root, os.W_OK):
            return beside
        fallback = self._fallback_cache(split)
        return beside if beside.is_file() and not fallback.is_file() else fallback

    def _fallback_cache(self, split: str) -> Path:
        key = hashlib.sha1(str(self.root.resolve()).encode()).hexdigest()[:16]
        return cache_home() / "labels" / key / f"icam_labels_{split}.csv"

    def _write_labels(self, split: str, rows: dict) -> None:
        if os.access(self.root, os.W_OK):
            try:
                return _write_label_csv(self.root / f"icam_labels_{split}.csv", rows)
            except OSError:
                pass
        target = self._fallback_cache(split)
        target.parent.mkdir(parents=True, exist_ok=True)
        _write_label_csv(target, rows)


_CSV_HEADER = ["id", "mask", "size", "mtime_ns", *FOREGROUND_CLASSES]


def _read_label_csv(path: Path) -> dict:
    """Rows of a label cache; an unreadable cache counts as empty and gets rebuilt."""
    rows = {}
    try:
        with open(path, newline="") as f:
            reader = csv.reader(f)
            if next(reader, None) != _CSV_HEADER:
                return {}
            for rec in reader:
                key = (rec[1], int(rec[2]), int(rec[3]))
                rows[rec[0]] = (key, np.array(rec[4:], dtype=np.float32))
    except (ValueError, IndexError, OSError):
        return {}
    return rows


def _write_label_csv(path: Path, rows: dict) -> None:
    with atomic_write(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(_CSV_HEADER)
        for image_id, (key, label) in sorted(rows.items()):
            writer.writerow([image_id, *key, *label.astype(int).tolist()])


class _VOCDataset(Dataset):
    """Ids of one split with a seed; per-item randomness comes from (seed, epoch, index)."""

    def __init__(self, root: str | os.PathLike, split: str, seed: int = 0):
        self.layout = root if isinstance(root, VOCLayout) else VOCLayout(root)
        self.split = split
        self.ids = self.layout.ids(split)
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch's augmentations (call before creating the DataLoader iterator)."""
        self.epoch = epoch

    def rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch, index])

    def __len__(self) -> int:
        return len(self.ids)


class ClassificationDataset(_VOCDataset):
    """Items `(id, image 3xHxW normalised float tensor, label [20] float tensor)` for CAMs."""

    def __init__(self, root, split, transform=None, seed: int = 0):
        super().__init__(root, split, seed)
        self.transform = transform
        self.labels = self.layout.labels(split)

    def __getitem__(self, index: int):
        image_id = self.ids[index]
        image = load_image(self.layout.image_path(image_id))
        if self.transform is None:
            x = T.normalize(image)
        else:
            x = self.transform(image, self.rng(index))
        return image_id, x, torch.from_numpy(self.labels[image_id])


class InferenceDataset(_VOCDataset):
    """Multi-scale (+ flip) inputs for CAM inference.

    Items `(id, image HxWx3 uint8, views, label [20] float tensor)`, where `views[s]` is a
    `2 x 3 x h_s x w_s` batch: the image resized by `scales[s]` and its horizontal mirror
    (mirror the second output back before averaging); `1 x 3 x h_s x w_s` when `flip=False`.
    Use with `DataLoader(..., batch_size=None, collate_fn=keep_item)` or iterate directly.
    """

    def __init__(self, root, split, scales: Sequence[float] = (0.5, 1.0, 1.5, 2.0),
                 flip: bool = True):
        super().__init__(root, split)
        self.scales = tuple(scales)
        self.flip = flip
        self.labels = self.layout.labels(split)

    def __getitem__(self, index: int):
        image_id = self.ids[index]
        image = load_image(self.layout.image_path(image_id))
        h, w = image.shape[:2]
        views = []
        for s in self.scales:
            x = T.normalize(T.resize(image, (round(h * s), round(w * s))))
            views.append(torch.stack([x, x.flip(-1)]) if self.flip else x[None])
        return image_id, image, views, torch.from_numpy(self.labels[image_id])


def keep_item(item):
    """A DataLoader collate_fn that hands over the dataset's item unchanged."""
    return item


class SegmentationDataset(_VOCDataset):
    """Items `(id, image 3xHxW tensor, target HxW long tensor, 255 = ignore)`.

    Targets are `<label_dir>/<id>.png` (pseudo-labels) or, with `label_dir=None`, the VOC
    masks. `transform` is a `transforms.SegmentationTrain`; None gives the full image.
    """

    def __init__(self, root, split, label_dir: str | os.PathLike | None = None,
                 transform=None, seed: int = 0):
        super().__init__(root, split, seed)
        self.label_dir = None if label_dir is None else Path(label_dir)
        self.transform = transform
        if self.label_dir is not None:
            present = set(os.listdir(self.label_dir)) if self.label_dir.is_dir() else set()
            for image_id in self.ids:
                if f"{image_id}.png" not in present:
                    raise FileNotFoundError(
                        f"{self.label_dir / (image_id + '.png')}: label not found for id "
                        f"{image_id} of {self.layout.list_path(split)}"
                    )

    def target_path(self, image_id: str) -> Path:
        if self.label_dir is None:
            return self.layout.mask_path(image_id)
        return self.label_dir / f"{image_id}.png"

    def __getitem__(self, index: int):
        image_id = self.ids[index]
        image = load_image(self.layout.image_path(image_id))
        target = load_mask(self.target_path(image_id))
        if image.shape[:2] != target.shape:
            raise ValueError(
                f"{self.target_path(image_id)}: size {target.shape} differs from image "
                f"{image.shape[:2]}"
            )
        if self.transform is None:
            x, y = T.normalize(image), torch.from_numpy(target.astype(np.int64))
        else:
            x, y = self.transform(image, target, self.rng(index))
        return image_id, x, y
