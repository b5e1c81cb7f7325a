"""Synthetic benchmark: VOC layout, design properties, determinism, atomic writes, CLI."""

import numpy as np
import pytest
from PIL import Image

from icam.data import synthetic
from icam.data.voc import VOCLayout, load_image, load_mask

CLASS_IDS = {c.voc_id for c in synthetic.CLASSES}
PART_HUE = {c.voc_id: c.part_hue for c in synthetic.CLASSES}


def _files(root):
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("syn") / "data"
    return synthetic.generate(out, num_train=8, num_val=3, seed=11)


def test_voc_layout_readable(tiny):
    layout = VOCLayout(tiny)
    assert layout.ids("train") == [f"train_{i:05d}" for i in range(8)]
    assert len(layout.ids("val")) == 3 and layout.ids("train_aug") == layout.ids("train")
    h, w = synthetic.DEFAULT_SIZE
    for image_id in layout.ids("train") + layout.ids("val"):
        image = load_image(layout.image_path(image_id))
        mask = load_mask(layout.mask_path(image_id))
        assert image.shape[:2] == mask.shape and mask.shape in {(h, w), (w, h)}
        assert set(np.unique(mask).tolist()) <= CLASS_IDS | {0, 255}
        assert Image.open(layout.mask_path(image_id)).mode == "P"
    labels = layout.labels("train")
    assert all(1 <= v.sum() <= 3 for v in labels.values())


def test_void_band_separates_labels_and_is_thin(tiny):
    for path in sorted((tiny / "SegmentationClass").glob("*.png")):
        mask = load_mask(path).astype(int)
        h, w = mask.shape
        padded = np.pad(mask, 3, constant_values=255)
        labelled_near = np.zeros((h, w), bool)
        for dy in range(-3, 4):
            for dx in range(-3, 4):
                other = padded[3 + dy:3 + dy + h, 3 + dx:3 + dx + w]
                if max(abs(dy), abs(dx)) == 1:  # no 8-neighbours with different real labels
                    clash = (other != mask) & (other != 255) & (mask != 255)
                    assert not clash.any(), path
                labelled_near |= other != 255
        void = mask == 255
        # a thin band: present, within 3 px of labelled pixels, a small share of the image
        assert void.any() and labelled_near[void].all() and void.mean() < 0.12, path


def _hsv(image):
    hsv = np.asarray(Image.fromarray(image).convert("HSV")).astype(float)
    return hsv[..., 0] / 256 * 360, hsv[..., 1] / 255, hsv[..., 2] / 255


def test_each_object_has_a_small_discriminative_part(tiny):
    layout = VOCLayout(tiny)
    shares = []
    for image_id in layout.ids("train") + layout.ids("val"):
        mask = load_mask(layout.mask_path(image_id))
        hue, sat, val = _hsv(load_image(layout.image_path(image_id)))
        vivid = (sat > 0.7) & (val > 0.7)
        assert vivid[mask == 0].mean() < 1e-3  # parts' colours never appear in the background
        for c in set(np.unique(mask).tolist()) - {0, 255}:
            near_hue = np.abs((hue - PART_HUE[c] + 180) % 360 - 180) < 25
            shares.append((vivid & near_hue)[mask == c].mean())
            assert 0.01 <= shares[-1] <= 0.35, (image_id, c, shares[-1])  # even when occluded
            assert (vivid & ~near_hue)[mask == c].mean() < 0.01  # no other class's part
    assert 0.03 <= np.median(shares) <= 0.1  # a few % of the object


def test_colour_edges_coincide_with_mask_borders(tiny):
    layout = VOCLayout(tiny)
    for image_id in layout.ids("train"):
        image = load_image(layout.image_path(image_id)).astype(float)
        mask = load_mask(layout.mask_path(image_id))[:-1, :-1]
        grad = np.maximum(np.abs(np.diff(image, axis=0)).sum(-1)[:, :-1],
                          np.abs(np.diff(image, axis=1)).sum(-1)[:-1])
        assert grad[mask == 255].mean() > 2 * grad[mask == 0].mean(), image_id


def test_same_seed_same_bytes_other_seed_other_images(tmp_path):
    a = synthetic.generate(tmp_path / "a", num_train=4, num_val=2, seed=3)
    b = synthetic.generate(tmp_path / "b", num_train=4, num_val=2, seed=3)
    c = synthetic.generate(tmp_path / "c", num_train=4, num_val=2, seed=4)
    fa, fb, fc = _files(a), _files(b), _files(c)
    assert len(fa) == 4 + 2 + 4 + 2 + 2 + 1 and fa == fb
    jpgs = [k for k in fa if k.suffix == ".jpg"]
    assert all(fa[k] != fc[k] for k in jpgs)


def test_parallel_rendering_gives_the_same_bytes(tmp_path):
    one = synthetic.generate(tmp_path / "one", num_train=5, num_val=2, seed=8)
    two = synthetic.generate(tmp_path / "two", num_train=5, num_val=2, seed=8, workers=2)
    assert _files(one) == _files(two)


def test_other_size(tmp_path):
    root = synthetic.generate(tmp_path / "s", num_train=4, num_val=1, seed=0, size=(64, 80))
    for path in (root / "JPEGImages").glob("*.jpg"):
        assert load_image(path).shape[:2] in {(64, 80), (80, 64)}


def test_existing_same_dataset_is_kept(tmp_path):
    out = synthetic.generate(tmp_path / "d", num_train=2, num_val=1, seed=0)
    stamp = (out / "JPEGImages" / "train_00000.jpg").stat().st_mtime_ns
    (out / "icam_labels_train.csv").write_text("kept\n")
    assert synthetic.generate(out, num_train=2, num_val=1, seed=0) == out
    assert (out / "JPEGImages" / "train_00000.jpg").stat().st_mtime_ns == stamp
    assert (out / "icam_labels_train.csv").read_text() == "kept\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]


def test_refuses_to_replace_a_different_dataset_unless_forced(tmp_path):
    out = synthetic.generate(tmp_path / "d", num_train=2, num_val=1, seed=0)
    with pytest.raises(FileExistsError, match=str(out)):
        synthetic.generate(out, num_train=3, num_val=1, seed=0)
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="--force"):
        synthetic.generate(other, num_train=2, num_val=1)
    assert (other / "notes.txt").read_text() == "mine"
    synthetic.generate(out, num_train=3, num_val=1, seed=0, force=True)
    assert len(VOCLayout(out).ids("train")) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d", "other"]


def test_empty_folder_is_filled(tmp_path):
    (tmp_path / "empty").mkdir()
    synthetic.generate(tmp_path / "empty", num_train=2, num_val=1)
    assert len(VOCLayout(tmp_path / "empty").ids("val")) == 1


def test_interrupted_generation_leaves_nothing(tmp_path, monkeypatch):
    real = synthetic._write_sample
    calls = []

    def failing(*args):
        calls.append(args)
        if len(calls) == 3:
            raise KeyboardInterrupt
        real(*args)

    monkeypatch.setattr(synthetic, "_write_sample", failing)
    with pytest.raises(KeyboardInterrupt):
        synthetic.generate(tmp_path / "d", num_train=5, num_val=2)
    assert list(tmp_path.iterdir()) == []


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="num_train"):
        synthetic.generate(tmp_path / "x", num_train=0)
    with pytest.raises(ValueError, match="size"):
        synthetic.generate(tmp_path / "x", size=(16, 16))


def test_cli(tmp_path, capsys):
    out = tmp_path / "cli"
    preview = tmp_path / "preview.png"
    argv = ["--out", str(out), "--num-train", "3", "--num-val", "1", "--seed", "2",
            "--size", "48", "64", "--preview", str(preview)]
    assert synthetic.main(argv) == 0
    assert capsys.readouterr().out.strip() == str(out)
    assert len(VOCLayout(out).ids("train")) == 3
    assert Image.open(preview).size[0] > 2 * 64
    assert synthetic.main(["--out", str(out), "--num-train", "4", "--num-val", "1"]) == 2
    assert "--force" in capsys.readouterr().err


def test_ensure_default_generates_once_under_icam_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ICAM_CACHE", str(tmp_path / "cache"))
    root = synthetic.ensure_default(num_train=2, num_val=1, seed=5, size=(48, 64))
    assert root == synthetic.default_root(num_train=2, num_val=1, seed=5, size=(48, 64))
    assert root.parent == tmp_path / "cache"
    stamp = (root / "synthetic.json").stat().st_mtime_ns
    assert synthetic.ensure_default(num_train=2, num_val=1, seed=5, size=(48, 64)) == root
    assert (root / "synthetic.json").stat().st_mtime_ns == stamp
    assert synthetic.default_root(seed=6) != synthetic.default_root(seed=5)
