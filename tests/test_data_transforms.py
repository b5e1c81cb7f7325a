"""Transforms: normalisation, alignment of image and mask, ranges of the random changes."""

import numpy as np
import pytest
import torch

from icam.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ClassificationTrain,
    SegmentationTrain,
    denormalize,
    hsv_jitter,
    normalize,
)

# four well separated colours; class k + 1 is painted with COLOURS[k]
COLOURS = np.array([[230, 20, 20], [20, 220, 30], [30, 40, 230], [240, 240, 240]], np.uint8)


def blocks(h=30, w=40, cy=9, cx=13):
    """An image of four unequal colour blocks and the matching class-id mask."""
    mask = np.empty((h, w), np.uint8)
    mask[:cy, :cx], mask[:cy, cx:], mask[cy:, :cx], mask[cy:, cx:] = 1, 2, 3, 4
    return COLOURS[mask - 1], mask


def _rgb255(x):
    return np.rint(denormalize(x).permute(1, 2, 0).numpy() * 255)


def test_normalize_by_hand():
    image = np.array([[[0, 128, 255]]], np.uint8)
    x = normalize(image)
    assert x.shape == (3, 1, 1) and x.dtype == torch.float32
    by_hand = [(0 - 0.485) / 0.229, (128 / 255 - 0.456) / 0.224, (1 - 0.406) / 0.225]
    assert np.allclose(x.flatten().numpy(), by_hand, atol=1e-6)
    assert IMAGENET_MEAN == (0.485, 0.456, 0.406) and IMAGENET_STD == (0.229, 0.224, 0.225)


def test_denormalize_inverts_and_clamps():
    image = np.random.default_rng(0).integers(0, 256, (5, 6, 3), dtype=np.uint8)
    back = denormalize(normalize(image))
    assert torch.allclose(back, torch.from_numpy(image / 255.0).permute(2, 0, 1).float(),
                          atol=1e-6)
    batch = torch.stack([normalize(image), torch.full((3, 5, 6), 50.0)])
    out = denormalize(batch)
    assert out.shape == (2, 3, 5, 6) and torch.all(out[1] == 1.0)


@pytest.mark.parametrize("seed", range(12))
def test_segmentation_train_keeps_image_and_mask_aligned(seed):
    image, mask = blocks()
    x, y = SegmentationTrain(crop=48, scale=(0.5, 1.5))(image, mask, np.random.default_rng(seed))
    assert x.shape == (3, 48, 48) and y.shape == (48, 48) and y.dtype == torch.int64
    assert set(torch.unique(y).tolist()) <= {1, 2, 3, 4, 255}
    pad = y == 255
    assert torch.all(x[:, pad] == 0.0)  # padding is the mean colour
    rgb = denormalize(x).permute(1, 2, 0).numpy() * 255
    nearest = np.argmin(np.linalg.norm(rgb[..., None, :] - COLOURS[None, None], axis=-1), -1) + 1
    # away from block borders (bicubic overshoot), each pixel shows its class's colour
    yy = y.numpy()
    interior = np.ones_like(yy, bool)
    for dy in range(-2, 3):
        for dx in range(-2, 3):
            interior &= np.roll(yy, (dy, dx), axis=(0, 1)) == yy
    interior[:2], interior[-2:], interior[:, :2], interior[:, -2:] = False, False, False, False
    interior &= yy != 255
    assert interior.sum() > 40
    assert np.array_equal(nearest[interior], yy[interior])


def test_segmentation_train_flips_and_scales():
    image, mask = blocks()
    seen_corner, sizes = set(), set()
    for seed in range(30):
        _, y = SegmentationTrain(crop=64, scale=(0.5, 1.5), hsv_jitter=None)(
            image, mask, np.random.default_rng(seed))
        rows, cols = torch.nonzero(y != 255, as_tuple=True)
        sizes.add((rows.max() - rows.min() + 1).item())
        seen_corner.add(y[rows.min(), cols.min()].item())
        # the kept area is one solid rectangle: scaled image, no holes
        assert (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1) == len(rows)
    assert seen_corner == {1, 2}  # top-left block, or top-right after a flip
    assert min(sizes) >= 15 and max(sizes) <= 45 and len(sizes) > 5


def test_segmentation_train_rejects_size_mismatch():
    with pytest.raises(ValueError, match="sizes differ"):
        SegmentationTrain()(np.zeros((4, 5, 3), np.uint8), np.zeros((5, 4), np.uint8),
                            np.random.default_rng(0))


def test_classification_train_shape_and_determinism():
    image = np.random.default_rng(1).integers(0, 256, (40, 60, 3), dtype=np.uint8)
    t = ClassificationTrain(crop=32, resize_long=(48, 80))
    a = t(image, np.random.default_rng(5))
    assert a.shape == (3, 32, 32) and a.dtype == torch.float32
    assert torch.equal(a, t(image, np.random.default_rng(5)))
    assert not torch.equal(a, t(image, np.random.default_rng(6)))


def test_random_resize_long_keeps_aspect():
    image = np.zeros((30, 40, 3), np.uint8)
    t = ClassificationTrain(crop=None, resize_long=(50, 60), flip=False, jitter=None)
    longs = set()
    for seed in range(20):
        x = t(image, np.random.default_rng(seed))
        long = x.shape[2]
        assert 50 <= long <= 60 and x.shape[1] == round(30 * long / 40)
        longs.add(long)
    assert len(longs) > 3
    portrait = t(np.zeros((40, 30, 3), np.uint8), np.random.default_rng(0))
    assert 50 <= portrait.shape[1] <= 60 and portrait.shape[2] < portrait.shape[1]


def test_flip_is_a_mirror_half_of_the_time():
    image = np.random.default_rng(2).integers(0, 256, (6, 9, 3), dtype=np.uint8)
    t = ClassificationTrain(crop=None, resize_long=None, flip=True, jitter=None)
    plain, mirrored = normalize(image), normalize(image[:, ::-1])
    flips = []
    for seed in range(40):
        x = t(image, np.random.default_rng(seed))
        assert torch.equal(x, plain) or torch.equal(x, mirrored)
        flips.append(torch.equal(x, mirrored))
    assert 8 <= sum(flips) <= 32


def test_crop_pads_small_images_with_the_mean():
    image = np.random.default_rng(3).integers(1, 255, (10, 12, 3), dtype=np.uint8)
    t = ClassificationTrain(crop=20, resize_long=None, flip=False, jitter=None)
    offsets = set()
    for seed in range(10):
        x = t(image, np.random.default_rng(seed))
        kept = torch.nonzero((x != 0).any(0))
        top, left = kept.min(0).values.tolist()
        offsets.add((top, left))
        assert torch.equal(x[:, top:top + 10, left:left + 12], normalize(image))
        assert (x != 0).any(0).sum() == 10 * 12
    assert len(offsets) > 3


def test_crop_of_a_large_image_is_a_window():
    image = np.random.default_rng(4).integers(0, 256, (30, 25, 3), dtype=np.uint8)
    x = ClassificationTrain(crop=16, resize_long=None, flip=False, jitter=None)(
        image, np.random.default_rng(0))
    full = normalize(image)
    windows = [(i, j) for i in range(30 - 15) for j in range(25 - 15)
               if torch.equal(full[:, i:i + 16, j:j + 16], x)]
    assert len(windows) == 1


def test_brightness_jitter_range():
    grey = np.full((4, 4, 3), 100, np.uint8)
    t = ClassificationTrain(crop=None, resize_long=None, flip=False, jitter=(0.3, 0, 0, 0))
    values = [round(float(denormalize(t(grey, np.random.default_rng(s)))[0, 0, 0]) * 255)
              for s in range(60)]
    assert min(values) >= 69 and max(values) <= 131
    assert min(values) < 85 and max(values) > 115


def test_hue_jitter_keeps_value_and_leaves_grey_alone():
    rng = np.random.default_rng(7)
    image = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    t = ClassificationTrain(crop=None, resize_long=None, flip=False, jitter=(0, 0, 0, 0.1))
    grey = np.full((3, 3, 3), 77, np.uint8)
    changed = 0
    for s in range(10):
        out = _rgb255(t(image, np.random.default_rng(s)))
        assert np.abs(out.max(-1) - image.max(-1)).max() <= 2  # V = max(R, G, B) is kept
        changed += not np.array_equal(out, image)
        g = _rgb255(t(grey, np.random.default_rng(s)))
        assert np.all(g == 77)
    assert changed >= 8


def test_hsv_jitter_bounds():
    grey = np.full((2, 2, 3), 100, np.uint8)
    values = {int(hsv_jitter(grey, 10, 0, 10, np.random.default_rng(s)).max()) for s in range(50)}
    assert min(values) >= 90 and max(values) <= 110 and len(values) > 8
