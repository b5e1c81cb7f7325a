"""VOC reader: both folder forms, SBD, labels and their cache, datasets, bad input."""

import os

import numpy as np
import pytest
import torch
from PIL import Image

from icam.data import voc
from icam.data.transforms import IMAGENET_MEAN, IMAGENET_STD, SegmentationTrain
from icam.data.voc import (
    ClassificationDataset,
    InferenceDataset,
    SegmentationDataset,
    VOCLayout,
    load_image,
    load_mask,
)


def _mask(h, w, boxes):
    """A class-id map: background 0, boxes (class, y0, y1, x0, x1) with a 1-px 255 rim."""
    m = np.zeros((h, w), np.uint8)
    for c, y0, y1, x0, x1 in boxes:
        m[y0:y1, x0:x1] = 255
        m[y0 + 1:y1 - 1, x0 + 1:x1 - 1] = c
    return m


def _save_png(path, mask, palette=True):
    im = Image.fromarray(mask, mode="P" if palette else "L")
    if palette:
        im.putpalette(voc.VOC_PALETTE)
    im.save(path)


# id -> boxes; hand-made labels below are worked out from these
MASKS = {
    "a": [(1, 2, 10, 2, 10), (15, 12, 20, 10, 22)],
    "b": [],
    "c": [(20, 0, 24, 0, 32)],
    "d": [(7, 4, 12, 4, 12), (7, 14, 20, 14, 20), (3, 1, 5, 20, 30)],
}
EXPECTED = {"a": {1, 15}, "b": set(), "c": {20}, "d": {3, 7}}


def make_voc(base, train=("a", "b", "c"), val=("d",), sbd=None, devkit=True):
    """Write a tiny VOC tree; return the folder to hand to the reader."""
    root = base / "VOCdevkit" / "VOC2012" if devkit else base / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in MASKS:
        Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(
            root / "JPEGImages" / f"{i}.jpg", quality=95)
        _save_png(root / "SegmentationClass" / f"{i}.png", _mask(24, 32, MASKS[i]))
    (root / "ImageSets/Segmentation/train.txt").write_text("".join(f"{i}\n" for i in train))
    (root / "ImageSets/Segmentation/val.txt").write_text("".join(f"{i}\n" for i in val))
    if sbd is not None:
        (root / "SegmentationClassAug").mkdir()
        for i, boxes in sbd.items():  # SBD masks are greyscale PNGs
            _save_png(root / "SegmentationClassAug" / f"{i}.png", _mask(24, 32, boxes), False)
        (root / "ImageSets/Segmentation/train_aug.txt").write_text(
            "".join(f"/JPEGImages/{i}.jpg /SegmentationClassAug/{i}.png\n" for i in sbd))
    return root.parent if devkit else root


def _as_sets(labels):
    return {i: {int(c) + 1 for c in np.flatnonzero(v)} for i, v in labels.items()}


@pytest.mark.parametrize("devkit", [True, False])
def test_both_folder_forms(tmp_path, devkit):
    given = make_voc(tmp_path, devkit=devkit)
    layout = VOCLayout(given)
    assert layout.root == (given / "VOC2012" if devkit else given)
    assert layout.ids("train") == ["a", "b", "c"]
    assert layout.ids("val") == ["d"]
    assert not layout.has_sbd
    assert layout.ids("train_aug") == ["a", "b", "c"]  # no SBD: train_aug is train
    assert layout.mask_path("a") == layout.root / "SegmentationClass" / "a.png"


def test_not_a_voc_root(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "nothing")):
        VOCLayout(tmp_path / "nothing")


def test_labels_from_masks(tmp_path):
    layout = VOCLayout(make_voc(tmp_path))
    train = layout.labels("train")
    assert set(train) == {"a", "b", "c"}
    assert all(v.dtype == np.float32 and v.shape == (20,) for v in train.values())
    assert _as_sets(train) == {i: EXPECTED[i] for i in "abc"}
    assert _as_sets(layout.labels("val")) == {"d": EXPECTED["d"]}
    assert (layout.root / "icam_labels_train.csv").is_file()


def test_sbd_train_aug(tmp_path):
    sbd = {"a": [(2, 0, 24, 0, 16)], "b": [(5, 3, 9, 3, 9)], "c": MASKS["c"], "d": MASKS["d"]}
    layout = VOCLayout(make_voc(tmp_path, sbd=sbd))
    assert layout.has_sbd
    assert layout.ids("train_aug") == ["a", "b", "c", "d"]
    assert layout.mask_path("b") == layout.root / "SegmentationClassAug" / "b.png"
    labels = _as_sets(layout.labels("train_aug"))
    assert labels == {"a": {2}, "b": {5}, "c": {20}, "d": {3, 7}}


def test_sbd_mask_missing_falls_back_to_voc(tmp_path):
    layout = VOCLayout(make_voc(tmp_path, sbd={"a": [(9, 0, 5, 0, 5)]}))
    assert layout.mask_path("c") == layout.root / "SegmentationClass" / "c.png"
    assert _as_sets(layout.labels("train")) == {"a": {9}, "b": set(), "c": {20}}


def test_label_cache_rebuilt_when_a_mask_changes(tmp_path):
    root = make_voc(tmp_path)
    assert _as_sets(VOCLayout(root).labels("train"))["b"] == set()
    path = root / "VOC2012" / "SegmentationClass" / "b.png"
    _save_png(path, _mask(24, 32, [(12, 5, 15, 5, 15)]))
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert _as_sets(VOCLayout(root).labels("train")) == {"a": {1, 15}, "b": {12}, "c": {20}}


def test_label_cache_is_used_while_masks_are_unchanged(tmp_path):
    root = make_voc(tmp_path)
    VOCLayout(root).labels("train")
    path = root / "VOC2012" / "SegmentationClass" / "c.png"
    st = path.stat()
    # same size and mtime: the fingerprint matches, so the cached label is kept
    _save_png(path, _mask(24, 32, [(19, 0, 24, 0, 32)]))
    assert path.stat().st_size == st.st_size
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert _as_sets(VOCLayout(root).labels("train"))["c"] == {20}


def test_read_only_root_caches_under_icam_cache(tmp_path, monkeypatch):
    root = make_voc(tmp_path / "data")
    voc_root = root / "VOC2012"
    monkeypatch.setenv("ICAM_CACHE", str(tmp_path / "cache"))
    real_access = os.access

    def access(path, mode):  # as if the data folder were read-only (tests may run as root)
        return False if str(path) == str(voc_root) else real_access(path, mode)

    monkeypatch.setattr(voc.os, "access", access)
    assert _as_sets(VOCLayout(root).labels("val")) == {"d": {3, 7}}
    assert not (voc_root / "icam_labels_val.csv").exists()
    cached = list((tmp_path / "cache").rglob("icam_labels_val.csv"))
    assert len(cached) == 1
    assert _as_sets(VOCLayout(root).labels("val")) == {"d": {3, 7}}


def test_missing_image_names_list_and_line(tmp_path):
    root = make_voc(tmp_path, train=("a", "b", "zz"))
    with pytest.raises(FileNotFoundError, match=r"train\.txt, line 3: image .*zz\.jpg"):
        VOCLayout(root).ids("train")


def test_missing_mask_names_list_and_line(tmp_path):
    root = make_voc(tmp_path, train=("a", "", "c"))
    (root / "VOC2012" / "SegmentationClass" / "c.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"train\.txt, line 3: mask .*c\.png"):
        ClassificationDataset(root, "train")


def test_empty_list(tmp_path):
    root = make_voc(tmp_path, val=())
    with pytest.raises(ValueError, match=r"val\.txt: empty id list"):
        SegmentationDataset(root, "val")


def test_missing_list(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"trainval\.txt"):
        VOCLayout(make_voc(tmp_path)).ids("trainval")


def test_corrupt_jpeg_fails_at_load_naming_the_file(tmp_path):
    root = make_voc(tmp_path)
    path = root / "VOC2012" / "JPEGImages" / "b.jpg"
    path.write_bytes(path.read_bytes()[:200])  # truncated
    ds = ClassificationDataset(root, "train")  # construction only checks existence
    ds[0]
    with pytest.raises(ValueError, match=r"b\.jpg"):
        ds[1]


def test_corrupt_png_names_the_file(tmp_path):
    root = make_voc(tmp_path)
    path = root / "VOC2012" / "SegmentationClass" / "d.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    ds = SegmentationDataset(root, "train")
    assert ds[0][0] == "a"
    with pytest.raises(ValueError, match=r"d\.png"):
        load_mask(path)
    with pytest.raises(ValueError, match=r"d\.png"):
        VOCLayout(root).labels("val")


def test_mask_class_out_of_range(tmp_path):
    root = make_voc(tmp_path)
    bad = _mask(24, 32, [(21, 2, 8, 2, 8), (254, 10, 14, 10, 14)])
    _save_png(root / "VOC2012" / "SegmentationClass" / "a.png", bad)
    with pytest.raises(ValueError, match=r"a\.png: class ids \[21, 254\]"):
        SegmentationDataset(root, "train")[0]
    with pytest.raises(ValueError, match=r"a\.png"):
        VOCLayout(root).labels("train")


def test_rgb_mask_rejected(tmp_path):
    path = tmp_path / "m.png"
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(path)
    with pytest.raises(ValueError, match=r"m\.png.*mode RGB"):
        load_mask(path)


def test_load_image_and_mask_values(tmp_path):
    path = tmp_path / "x.png"
    rgb = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3)
    Image.fromarray(rgb).save(path)
    assert np.array_equal(load_image(path), rgb)
    grey = tmp_path / "g.png"
    Image.fromarray(np.full((3, 3), 40, np.uint8)).save(grey)
    assert load_image(grey).shape == (3, 3, 3)
    m = _mask(6, 6, [(20, 0, 6, 0, 6)])
    _save_png(tmp_path / "m.png", m)
    assert np.array_equal(load_mask(tmp_path / "m.png"), m)


def test_save_mask_writes_a_voc_palette_png(tmp_path):
    m = _mask(8, 8, [(15, 1, 7, 1, 7)])
    voc.save_mask(tmp_path / "p.png", m)
    im = Image.open(tmp_path / "p.png")
    assert im.mode == "P"
    assert np.array_equal(np.asarray(im), m)
    palette = im.getpalette()
    # VOC colours worked out from the bit-spreading rule: 1 -> (128,0,0), 15 -> (192,128,128)
    assert palette[3:6] == [128, 0, 0] and palette[45:48] == [192, 128, 128]
    assert list(tmp_path.iterdir()) == [tmp_path / "p.png"]


def test_classification_dataset_items(tmp_path):
    root = make_voc(tmp_path)
    ds = ClassificationDataset(root, "train")
    image_id, x, label = ds[0]
    assert image_id == "a" and x.shape == (3, 24, 32) and x.dtype == torch.float32
    raw = np.asarray(Image.open(root / "VOC2012" / "JPEGImages" / "a.jpg").convert("RGB"))
    expected = (raw[5, 7] / 255.0 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    assert np.allclose(x[:, 5, 7].numpy(), expected, atol=1e-5)
    assert label.dtype == torch.float32
    assert {int(c) + 1 for c in torch.nonzero(label).flatten()} == {1, 15}


def test_per_item_randomness_from_seed_epoch_index(tmp_path):
    root = make_voc(tmp_path)

    def noisy(image, rng):
        return torch.from_numpy(rng.random(4))

    ds = ClassificationDataset(root, "train", transform=noisy, seed=3)
    first = ds[1][1]
    assert torch.equal(first, ClassificationDataset(root, "train", transform=noisy, seed=3)[1][1])
    assert torch.equal(first, torch.from_numpy(np.random.default_rng([3, 0, 1]).random(4)))
    assert not torch.equal(first, ds[2][1])
    ds.set_epoch(1)
    assert not torch.equal(first, ds[1][1])
    ds.set_epoch(0)
    assert torch.equal(first, ds[1][1])


def test_inference_dataset_scales_and_flip(tmp_path):
    root = make_voc(tmp_path)
    ds = InferenceDataset(root, "val", scales=(0.5, 1.0, 1.5))
    image_id, image, views, label = ds[0]
    assert image_id == "d" and image.dtype == np.uint8 and image.shape == (24, 32, 3)
    assert [tuple(v.shape) for v in views] == [(2, 3, 12, 16), (2, 3, 24, 32), (2, 3, 36, 48)]
    assert torch.equal(views[1][1], views[1][0].flip(-1))
    expected = (image[0, 0] / 255.0 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    assert np.allclose(views[1][0, :, 0, 0].numpy(), expected, atol=1e-5)
    assert {int(c) + 1 for c in torch.nonzero(label).flatten()} == {3, 7}
    no_flip = InferenceDataset(root, "val", scales=(1.0,), flip=False)[0][2]
    assert len(no_flip) == 1 and no_flip[0].shape == (1, 3, 24, 32)


def test_segmentation_dataset_voc_masks_and_pseudo_labels(tmp_path):
    root = make_voc(tmp_path)
    ds = SegmentationDataset(root, "val")
    image_id, x, y = ds[0]
    assert image_id == "d" and x.shape == (3, 24, 32) and y.dtype == torch.int64
    assert torch.equal(y, torch.from_numpy(_mask(24, 32, MASKS["d"]).astype(np.int64)))

    labels = tmp_path / "pseudo"
    labels.mkdir()
    pseudo = np.zeros((24, 32), np.uint8)
    pseudo[:, 16:] = 11
    voc.save_mask(labels / "d.png", pseudo)
    _, _, y = SegmentationDataset(root, "val", label_dir=labels)[0]
    assert torch.equal(y, torch.from_numpy(pseudo.astype(np.int64)))

    ds = SegmentationDataset(root, "val", label_dir=labels,
                             transform=SegmentationTrain(crop=40, scale=None, hsv_jitter=None))
    _, x, y = ds[0]
    assert x.shape == (3, 40, 40) and y.shape == (40, 40)
    assert set(torch.unique(y).tolist()) == {0, 11, 255}


def test_segmentation_dataset_missing_pseudo_label(tmp_path):
    root = make_voc(tmp_path)
    (tmp_path / "pseudo").mkdir()
    with pytest.raises(FileNotFoundError, match=r"pseudo/d\.png"):
        SegmentationDataset(root, "val", label_dir=tmp_path / "pseudo")
