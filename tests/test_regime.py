"""The embedded benchmark is a scale model of VOC: its regime, computed from the generator, is
within a factor of 2 of VOC's except where the cpu preset declares otherwise."""

import math

import numpy as np
import pytest
import torch

from icam.regime import (
    DECLARED_OUTSIDE,
    FACTOR,
    mask_statistics,
    regime,
    synthetic_regime,
    voc_regime,
)


def test_vocs_regime_worked_by_hand():
    voc = voc_regime()
    assert voc.cam_side == 56  # crop 448 at stride 8
    assert voc.f_tolerance_in_cam_pixels == 5 / 8  # ceil(0.008 * 625) = 5 px
    # mean object: 0.3 * 500 * 375 / 2.4 = 23437.5 px², 153.1 px wide; at the mean training
    # scale 608 / 500 it is 186.2 px, 23.27 CAM pixels; sigma 5 is 0.215 of it
    width = math.sqrt(23437.5) * 608 / 500 / 8
    assert voc.sigma_in_object_widths == pytest.approx(5 / width)
    assert voc.sigma_in_object_widths == pytest.approx(0.215, abs=5e-4)
    assert (voc.objects_per_image, voc.foreground_share) == (2.4, 0.3)


def test_regime_of_a_hand_made_setting():
    # 100×100 images, crop 40 at stride 4 after resizing the long side to [50, 150] (scale 1):
    # objects of 0.25 · 10000 / 1 = 2500 px², 50 px wide, 12.5 CAM pixels; sigma 5 is 0.4 of it;
    # tolerance ceil(0.008 · 141.4) = 2 px, half a CAM pixel
    r = regime((100, 100), 40, (50, 150), 4, 5.0, 0.25, 1.0)
    assert (r.cam_side, r.f_tolerance_in_cam_pixels) == (10, 0.5)
    assert r.sigma_in_object_widths == pytest.approx(0.4)


def test_mask_statistics_on_hand_made_masks():
    a = np.zeros((4, 4), np.uint8)
    a[0, :2] = 3  # 2 pixels of class 3
    a[3, 3] = 7  # 1 of class 7
    a[2, :] = 255  # void: not counted
    b = np.zeros((2, 2), np.uint8)  # no object
    share, objects = mask_statistics([a, b])
    assert share == pytest.approx(3 / (12 + 4))
    assert objects == 1.0  # (2 + 0) / 2


def test_the_embedded_benchmark_is_within_a_factor_2_of_voc_where_not_declared():
    """Every quantity is inside the factor, or outside and declared (and a declared one
    that comes back inside must lose its declaration)."""
    ratios = synthetic_regime(num_images=150).ratios(voc_regime())
    assert set(ratios) == {"cam_side", "sigma_in_object_widths", "f_tolerance_in_cam_pixels",
                           "objects_per_image", "foreground_share"}
    for name, ratio in ratios.items():
        inside = 1 / FACTOR <= ratio <= FACTOR
        assert inside != (name in DECLARED_OUTSIDE), (name, ratio)
    # stride 8 on 128-pixel crops: 16 CAM pixels across (VOC 56)
    assert ratios["cam_side"] == pytest.approx(16 / 56)


def test_probe_separates_informative_features_and_not_noise():
    from icam.analysis.probe import auc, probe_aucs

    assert auc(torch.tensor([0.9, 0.8, 0.1, 0.8]), torch.tensor([True, True, False, False])) \
        == pytest.approx((1 + 0.5 + 1 + 1) / 4)
    g = torch.Generator().manual_seed(0)
    y = (torch.rand(200, 3, generator=g) < 0.4).float()
    informative = torch.cat([y * 2 + 0.3 * torch.randn(200, 3, generator=g),
                             torch.randn(200, 5, generator=g)], 1)
    noise = torch.randn(200, 8, generator=g)
    good = probe_aucs((informative[:100], y[:100]), (informative[100:], y[100:]))
    bad = probe_aucs((noise[:100], y[:100]), (noise[100:], y[100:]))
    assert min(good.values()) > 0.95
    # AUC of uninformative scores on ~40 positives and ~60 negatives: std about 0.06
    assert all(abs(v - 0.5) < 0.25 for v in bad.values())
