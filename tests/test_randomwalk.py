import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from icam.models.affinity import random_walk_transition
from icam.randomwalk import cams_with_background, propagate_labels, random_walk_labels, walk_radius

MEAN = np.array([0.485, 0.456, 0.406])
STD = np.array([0.229, 0.224, 0.225])


def test_background_is_one_minus_max_to_the_alpha():
    cam = np.array([[[0.5, 0.0]], [[0.25, 0.0]]], np.float32)
    out = cams_with_background(cam, alpha=6).numpy()
    np.testing.assert_allclose(out[0, 0], [0.5 ** 6, 1.0])
    np.testing.assert_array_equal(out[1:], cam)


def test_identity_walk_keeps_the_cam_edge_with_padding():
    # A 12×16 image (features 2×2, padded to 16×16), class 1 = 1 in columns 0-7.
    # Pooled: class [[1, 0], [0.5, 0]], bg [[0, 1], [0, 0.5]] (the padded rows count as 0).
    # Bilinear upsampling, row 11 (y weight 0.9375 on the second row), column 7 (x weight
    # 0.5625 on the first column): class 0.5625·0.53125 = 0.299 > bg 0.4375·0.53125 = 0.232;
    # column 8 the other way round. Row 0 likewise. So the edge stays between columns 7 and 8.
    cam = np.zeros((20, 12, 16), np.float32)
    cam[0, :, :8] = 1.0
    labels = propagate_labels(cam, torch.eye(4))
    expected = np.zeros((12, 16), np.uint8)
    expected[:, :8] = 1
    assert labels.dtype == np.uint8
    np.testing.assert_array_equal(labels, expected)


def test_padding_columns_dilute_the_background():
    # A 12×12 image: now the right feature column is half padding, bg [[0, 0.5], [0, 0.25]].
    # Row 0, column 8 (x weight 0.4375 on the left): class 0.4375 > bg 0.5625·0.5 = 0.281;
    # column 9 (0.3125 on the left): class 0.3125 < bg 0.6875·0.5 = 0.344. Row 11: column 8
    # class 0.4375·0.53125 = 0.232 > bg 0.5625·0.265625 = 0.149, column 9 0.166 < 0.183.
    cam = np.zeros((20, 12, 12), np.float32)
    cam[0, :, :8] = 1.0
    expected = np.zeros((12, 12), np.uint8)
    expected[:, :9] = 1
    np.testing.assert_array_equal(propagate_labels(cam, torch.eye(4)), expected)


def block_transition():
    """2×4 feature nodes; left two columns (block A) and right two (block B) are each fully
    connected with affinity 1 and disconnected from each other; columns normalised."""
    block = (torch.arange(8) % 4 < 2).view(-1)
    a = (block[:, None] == block[None, :]).float()
    return a / a.sum(dim=0, keepdim=True)


def test_walk_spreads_a_class_within_its_block_only():
    # Class 5 covers three of block A's four nodes (the 8×8 cells at feature (0,0), (0,1),
    # (1,0)). Within a block T averages uniformly: class 3/4, bg 1/4 at every node of A, so A's
    # fourth node turns to class 5; block B keeps class 0 and bg 1. Upsampled, column 14
    # (weight 0.6875 on A) has class 0.516 > bg 0.484 and column 15 (0.5625) class 0.42 <
    # bg 0.58: the label edge sits one pixel inside the block edge.
    cam = np.zeros((20, 16, 32), np.float32)
    cam[4, :8, :16] = 1.0
    cam[4, 8:, :8] = 1.0
    labels = propagate_labels(cam, block_transition(), logt=3)
    expected = np.zeros((16, 32), np.uint8)
    expected[:, :15] = 5
    np.testing.assert_array_equal(labels, expected)
    unwalked = propagate_labels(cam, torch.eye(8), logt=3)
    assert (unwalked[12, 8:16] == 0).all()  # without the walk the fourth node stays background


def test_a_cam_without_any_class_walks_to_background():
    labels = propagate_labels(np.zeros((20, 16, 32), np.float32), block_transition(), logt=3)
    assert labels.shape == (16, 32) and labels.dtype == np.uint8 and not labels.any()


def test_transition_size_must_match_the_cam():
    with pytest.raises(ValueError, match="transition"):
        propagate_labels(np.zeros((20, 16, 32), np.float32), torch.eye(4))


class PooledImage(nn.Module):
    """'AffinityNet' whose features are the 8×8 block means of the (normalised) input."""

    def __init__(self):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        return F.avg_pool2d(x, 8)


def test_random_walk_labels_match_a_direct_computation():
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (36, 60, 3), dtype=np.uint8)  # features 5×8, padded 40×64
    cam = np.zeros((20, 36, 60), np.float32)
    cam[[2, 7]] = rng.random((2, 36, 60)) ** 3
    labels = random_walk_labels(PooledImage(), image, cam, beta=8, logt=6, alpha=6, radius=2)

    x = np.zeros((3, 40, 64))
    x[:, :36, :60] = ((image / 255.0 - MEAN) / STD).transpose(2, 0, 1)
    features = torch.tensor(x.reshape(3, 5, 8, 8, 8).mean(axis=(2, 4)))[None]
    t = random_walk_transition(features, 2, 8)[0].to_dense()
    full = np.zeros((21, 40, 64))
    full[0, :36, :60] = (1 - cam.max(axis=0)) ** 6
    full[1:, :36, :60] = cam
    pooled = full.reshape(21, 5, 8, 8, 8).mean(axis=(2, 4)).reshape(21, 40)
    walked = torch.tensor(pooled) @ torch.linalg.matrix_power(t, 64)
    up = F.interpolate(walked.view(1, 21, 5, 8), (40, 64), mode="bilinear", align_corners=False)
    expected = up[0, :, :36, :60].argmax(dim=0).numpy()
    assert set(np.unique(expected)) <= {0, 3, 8} and len(np.unique(expected)) > 1
    np.testing.assert_array_equal(labels, expected)


def test_small_feature_maps_shrink_the_radius_or_skip_the_walk():
    assert walk_radius(56, 56) == 5 and walk_radius(7, 20) == 3 and walk_radius(2, 9) == 0
    image = np.zeros((16, 16, 3), np.uint8)
    cam = np.zeros((20, 16, 16), np.float32)
    cam[0, :, :8] = 1.0
    labels = random_walk_labels(PooledImage(), image, cam)  # 2×2 features: no pairs
    np.testing.assert_array_equal(labels[:, :8], 1)
    np.testing.assert_array_equal(labels[:, 8:], 0)
    with pytest.raises(ValueError, match="differs"):
        random_walk_labels(PooledImage(), image, cam[:, :8])


def test_the_random_walk_bench_compares_sparse_with_the_dense_reference(capsys):
    from icam.bench.randomwalk import main

    assert main(["--images", "1", "--size", "48x72", "--stride", "8"]) == 0
    out = capsys.readouterr().out
    assert "labels differ at 0 of 3456 pixels" in out and "speed-up" in out
