import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from icam.inference import (
    cam_argmax_labels,
    crf_scores,
    infer_cam,
    load_cam,
    save_cam,
)

EPS = 1e-5
MEAN = np.array([0.485, 0.456, 0.406])
STD = np.array([0.229, 0.224, 0.225])


class FixedCam(nn.Module):
    """Returns the same logits and refined logits (1×K×h×w) for every input image."""

    def __init__(self, logits, rv=None):
        super().__init__()
        self.register_buffer("logits", torch.tensor(logits, dtype=torch.float32)[None])
        self.register_buffer("rv", self.logits if rv is None else
                             torch.tensor(rv, dtype=torch.float32)[None])
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        n = x.shape[0]
        return {"logits": self.logits.expand(n, -1, -1, -1), "rv": self.rv.expand(n, -1, -1, -1)}


class LinearCam(nn.Module):
    """logits = W · avgpool8(x), rv = W_rv · avgpool8(x): depends on the image content."""

    def __init__(self, w, w_rv):
        super().__init__()
        self.w = nn.Parameter(torch.tensor(w, dtype=torch.float32))
        self.w_rv = nn.Parameter(torch.tensor(w_rv, dtype=torch.float32))

    def forward(self, x):
        p = F.avg_pool2d(x, 8)
        return {"logits": torch.einsum("kc,nchw->nkhw", self.w, p),
                "rv": torch.einsum("kc,nchw->nkhw", self.w_rv, p)}


def tiny_image(h=1, w=2):
    return np.zeros((h, w, 3), np.uint8)


def test_label_conditioning_renormalises_over_present_classes_and_background():
    # One pixel row, two pixels, K = 3 (bg, c1, c2); logits are logs of the softmax weights.
    # left [1, 2, 4], right [1, 3, 1]. With c2 absent: left [1, 2]/3 -> c1 = 2/3,
    # right [1, 3]/4 -> c1 = 3/4; max-normalised: [2/3, 3/4] / (3/4 + eps).
    logits = np.log([[[1.0, 1.0]], [[2.0, 3.0]], [[4.0, 1.0]]])
    cam = infer_cam(FixedCam(logits), tiny_image(), np.array([1.0, 0.0]), scales=[1.0],
                    flip=False)
    assert cam.shape == (2, 1, 2) and cam.dtype == np.float32
    np.testing.assert_allclose(cam[0, 0], np.array([2 / 3, 3 / 4]) / (3 / 4 + EPS), rtol=1e-6)
    np.testing.assert_array_equal(cam[1], 0)


@pytest.mark.parametrize("formulation", ["icam", "seam"])
def test_an_image_without_classes_gets_an_empty_cam(formulation):
    logits = np.log([[[1.0, 1.0]], [[2.0, 3.0]], [[4.0, 1.0]]])
    cam = infer_cam(FixedCam(logits), tiny_image(), np.array([0.0, 0.0]), scales=[1.0],
                    formulation=formulation)
    assert cam.shape == (2, 1, 2) and cam.dtype == np.float32
    np.testing.assert_array_equal(cam, 0)


def test_only_the_argmax_class_survives_at_each_pixel():
    # Both classes present: left [1, 2, 4]/7 (c2 wins), right [1, 3, 1]/5 (c1 wins).
    logits = np.log([[[1.0, 1.0]], [[2.0, 3.0]], [[4.0, 1.0]]])
    cam = infer_cam(FixedCam(logits), tiny_image(), np.array([1.0, 1.0]), scales=[1.0],
                    flip=False)
    one = 1 / (1 + EPS / (3 / 5))
    np.testing.assert_allclose(cam[0, 0], [0.0, one], rtol=1e-6)
    np.testing.assert_allclose(cam[1, 0], [1 / (1 + EPS / (4 / 7)), 0.0], rtol=1e-6)


def test_cam_and_refined_cam_are_averaged():
    # One class; softmax weights (bg, c1): cam [1, 1] at both pixels, refined [1, 3] and
    # [1, 1]. c1 = 0.5·cam + 0.5·refined = [(1/2 + 3/4)/2, 1/2] = [5/8, 1/2].
    logits = np.log([[[1.0, 1.0]], [[1.0, 1.0]]])
    rv = np.log([[[1.0, 1.0]], [[3.0, 1.0]]])
    cam = infer_cam(FixedCam(logits, rv), tiny_image(), np.array([1.0]), scales=[1.0],
                    flip=False)
    np.testing.assert_allclose(cam[0, 0], np.array([5 / 8, 1 / 2]) / (5 / 8 + EPS), rtol=1e-6)


def test_flip_view_is_mirrored_back_before_averaging():
    # A model blind to the image returns the same logits for the mirror; mirrored back, pixel
    # 0 averages the raw pixels 0 and 2. Raw c1 (c2 absent): [1/2, 2/3, 3/4] from softmax
    # weights bg 1 and c1 [1, 2, 3]; with flips: [(1/2+3/4)/2, 2/3, (3/4+1/2)/2] = [5/8, 2/3, 5/8].
    logits = np.log([[[1.0, 1.0, 1.0]], [[1.0, 2.0, 3.0]], [[9.0, 9.0, 9.0]]])
    cam = infer_cam(FixedCam(logits), tiny_image(1, 3), np.array([1.0, 0.0]), scales=[1.0],
                    flip=True)
    np.testing.assert_allclose(cam[0, 0], np.array([5 / 8, 2 / 3, 5 / 8]) / (2 / 3 + EPS),
                               rtol=1e-6)


def direct_cam(w, w_rv, views_np, flips, label, size):
    """Direct numpy implementation of the ICAM inference rule for LinearCam."""
    maps = []
    for x, flipped in zip(views_np, flips, strict=True):
        c, h, wd = x.shape
        p = x.reshape(c, h // 8, 8, wd // 8, 8).mean(axis=(2, 4))
        probs = []
        for weights in (w, w_rv):
            logit = np.einsum("kc,chw->khw", weights, p)
            e = np.exp(logit - logit.max(axis=0))
            probs.append(e / e.sum(axis=0))
        m = 0.5 * probs[0] + 0.5 * probs[1]
        m = m * np.concatenate([[1.0], label])[:, None, None]
        m = m / m.sum(axis=0)
        up = F.interpolate(torch.tensor(m[1:][None]), size, mode="bilinear",
                           align_corners=False)[0].numpy()
        maps.append(up[..., ::-1] if flipped else up)
    cam = np.mean(maps, axis=0)
    cam = np.where(cam == cam.max(axis=0), cam, 0)
    return cam / (cam.max(axis=(1, 2), keepdims=True) + EPS)


def test_multiscale_flip_inference_matches_a_direct_computation():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (16, 24, 3), dtype=np.uint8)
    w, w_rv = rng.normal(0, 2, (5, 3)), rng.normal(0, 2, (5, 3))
    label = np.array([1.0, 0.0, 1.0, 1.0])
    x1 = ((image / 255.0 - MEAN) / STD).transpose(2, 0, 1)
    x2 = x1.repeat(2, axis=1).repeat(2, axis=2)  # a "scale 2" view made by pixel repetition
    views_np = [x1, x1[..., ::-1], x2, x2[..., ::-1]]
    views = [torch.tensor(np.stack(views_np[:2]).copy(), dtype=torch.float32),
             torch.tensor(np.stack(views_np[2:]).copy(), dtype=torch.float32)]
    model = LinearCam(w, w_rv)
    cam = infer_cam(model, image, label, views=views)
    expected = direct_cam(w, w_rv, views_np, [False, True, False, True], label, (16, 24))
    np.testing.assert_allclose(cam, expected, atol=2e-5)
    np.testing.assert_array_equal(cam[1], 0)
    assert ((cam > 0).sum(axis=0) <= 1).all()
    # scales/flip build the same single-scale views from the image
    cam1 = infer_cam(model, image, label, scales=[1.0], flip=True)
    np.testing.assert_allclose(cam1, direct_cam(w, w_rv, views_np[:2], [False, True], label,
                                                (16, 24)), atol=2e-5)


def test_seam_formulation_min_max_normalises_the_refined_cam():
    # rv foreground maps c1 = [0.2, 0.6, 1.0], c2 = [0.5, 0.5, 0.9]; SEAM's infer_SEAM.py per
    # class: values below min + eps set to 0, then (x - min - eps) / (max - min + eps), so the
    # minimum pixels end at -(min + eps) / (max - min + eps); no argmax masking.
    rv = np.array([[[0.0, 0.0, 0.0]], [[0.2, 0.6, 1.0]], [[0.5, 0.5, 0.9]]])
    model = FixedCam(np.zeros_like(rv), rv)
    cam = infer_cam(model, tiny_image(1, 3), np.array([1.0, 1.0]), scales=[1.0], flip=False,
                    formulation="seam")
    expected_c1 = [-(0.2 + EPS) / (0.8 + EPS), (0.4 - EPS) / (0.8 + EPS),
                   (0.8 - EPS) / (0.8 + EPS)]
    np.testing.assert_allclose(cam[0, 0], expected_c1, rtol=1e-5)
    low = -(0.5 + EPS) / (0.4 + EPS)
    np.testing.assert_allclose(cam[1, 0], [low, low, (0.4 - EPS) / (0.4 + EPS)], rtol=1e-5)
    cam = infer_cam(model, tiny_image(1, 3), np.array([1.0, 0.0]), scales=[1.0], flip=False,
                    formulation="seam")
    np.testing.assert_array_equal(cam[1], 0)


def test_model_and_label_sizes_must_agree():
    model = FixedCam(np.zeros((3, 1, 2)))
    with pytest.raises(ValueError, match="channels"):
        infer_cam(model, tiny_image(), np.ones(3), scales=[1.0])
    with pytest.raises(ValueError, match="uint8"):
        infer_cam(model, np.zeros((1, 2, 3)), np.ones(2), scales=[1.0])


def test_save_and_load_cam_round_trip_at_12_bit_precision(tmp_path):
    rng = np.random.default_rng(1)
    cam = rng.random((20, 5, 7)).astype(np.float32)
    cam[3, 0, :4] = [0.0, 1.0, 0.51 / 4095, 0.49 / 4095]  # both ends, either side of a half step
    cam[14, 4] = np.linspace(0, 1, 7)  # a smooth row: the differences the codec stores
    label = np.zeros(20, np.float32)
    label[[3, 14]] = 1
    cam[label == 0] = 0
    path = tmp_path / "2007_000032.npz"
    save_cam(path, cam, label)
    assert os.listdir(tmp_path) == ["2007_000032.npz"]
    loaded, loaded_label = load_cam(path)
    assert loaded.dtype == np.float32 and loaded.shape == cam.shape
    assert np.abs(loaded - cam).max() <= 0.5 / 4095 + 1e-7  # the nearest of 4096 levels
    np.testing.assert_allclose(loaded[3, 0, :4], [0.0, 1.0, 1 / 4095, 0.0], rtol=1e-6)
    assert (loaded[label == 0] == 0).all()
    np.testing.assert_array_equal(loaded_label, label)
    with np.load(path, allow_pickle=False) as f:
        assert f["cams"].shape == (2, 5, 7)  # only the present classes are stored
        assert f["cams"].dtype == np.int16
        # the stored values are differences of the levels along rows, then columns
        level = np.round(cam[14, 4] * 4095) - np.round(cam[14, 3] * 4095)
        np.testing.assert_array_equal(f["cams"][1, 4, 1:],
                                      level[1:] - level[:-1])
    (tmp_path / "bad.npz").write_bytes(b"not an npz")
    with pytest.raises(ValueError, match="bad.npz"):
        load_cam(tmp_path / "bad.npz")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        save_cam(tmp_path / "over.npz", cam * 2, label)


def test_cam_files_of_uint8_levels_still_load(tmp_path):
    np.savez_compressed(tmp_path / "old.npz", classes=np.array([1]),
                        cams=np.array([[[0, 51, 255]]], np.uint8), scale=np.float32(1 / 255),
                        label=np.eye(3, dtype=np.float32)[1], size=np.array([1, 3]))
    cam, _ = load_cam(tmp_path / "old.npz")
    np.testing.assert_allclose(cam[1, 0], [0.0, 0.2, 1.0], rtol=1e-6)


def test_cam_files_of_float32_maps_still_load(tmp_path):
    maps = np.array([[[0.25, 0.123456]]], np.float32)
    np.savez_compressed(tmp_path / "old.npz", classes=np.array([2]), cams=maps,
                        label=np.eye(4, dtype=np.float32)[2], size=np.array([1, 2]))
    cam, label = load_cam(tmp_path / "old.npz")
    np.testing.assert_array_equal(cam[2], maps[0])
    assert (cam[[0, 1, 3]] == 0).all() and label.tolist() == [0, 0, 1, 0]


def test_seam_upsamples_to_the_view_with_corners_aligned_then_to_the_image():
    # A 2×2 refined map on a view of half the image (4×6 of 8×12): SEAM's network upsamples
    # it to the view (align_corners=True), infer_SEAM.py then to the image (False). Row
    # [0, 1] on 6 columns with corners aligned is [0, .2, .4, .6, .8, 1] in every row.
    rv = np.zeros((2, 2, 2))
    rv[1] = [[0.0, 1.0], [0.0, 1.0]]
    model = FixedCam(np.zeros_like(rv), rv)
    cam = infer_cam(model, tiny_image(8, 12), np.array([1.0]), scales=[0.5], flip=False,
                    formulation="seam")
    view = np.tile(np.linspace(0, 1, 6), (4, 1))  # the first upsampling, by hand
    # the second, 4×6 -> 8×12 without corners: output x samples input (x + 0.5) / 2 - 0.5
    src = np.clip((np.arange(12) + 0.5) / 2 - 0.5, 0, 5)
    row = np.interp(src, np.arange(6), view[0])
    expected = np.tile(row, (8, 1))
    lo, hi = expected.min(), expected.max()
    expected = np.where(expected < lo + EPS, 0, expected)
    np.testing.assert_allclose(cam[0], (expected - lo - EPS) / (hi - lo + EPS), atol=1e-5)


def test_crf_scores_put_the_background_first_scored_by_alpha():
    # One present class (channel 2 of 3) at 0.35 on a uniform image: with alpha 2 the
    # background (1 - 0.35)^2 = 0.42 beats it everywhere, with alpha 4 (0.18) it loses.
    image = np.full((12, 12, 3), 120, np.uint8)
    cam = np.zeros((3, 12, 12), np.float32)
    cam[2] = 0.35
    label = np.array([0.0, 0.0, 1.0])
    low, high = (crf_scores(cam, image, alpha, label) for alpha in (2, 4))
    assert low.shape == high.shape == (2, 12, 12)
    np.testing.assert_allclose(low.sum(axis=0), 1, atol=1e-5)
    assert (low.argmax(axis=0) == 0).all() and (high.argmax(axis=0) == 1).all()
    none = crf_scores(cam, image, 2, np.zeros(3))
    np.testing.assert_allclose(none, 1)


def test_crf_scores_follow_the_image():
    # A CAM of class 2 that spills 3 columns (weakly) past the object's colour edge at column 8
    # gets cut back to the edge by the CRF.
    image = np.zeros((8, 16, 3), np.uint8)
    image[:, :8] = (220, 40, 40)
    image[:, 8:] = (40, 40, 220)
    cam = np.zeros((2, 8, 16), np.float32)
    cam[1, :, :8] = 0.9
    cam[1, :, 8:11] = 0.6
    refined = crf_scores(cam, image, 2, np.array([0.0, 1.0])).argmax(axis=0)
    expected = np.zeros((8, 16), np.int64)
    expected[:, :8] = 1
    np.testing.assert_array_equal(refined, expected)


def test_cam_argmax_labels_take_background_as_one_minus_sum():
    cam = np.zeros((2, 1, 3), np.float32)
    cam[0, 0] = [0.6, 0.5, 0.3]
    cam[1, 0] = [0.0, 0.0, 0.4]
    # bg = [0.4, 0.5, 0.3]: pixel 1 is a tie (bg wins), pixel 2: c2 0.4 > c1 0.3 = bg 0.3
    np.testing.assert_array_equal(cam_argmax_labels(cam)[0], [1, 0, 2])


def test_cam_argmax_labels_with_seams_constant_background():
    cam = np.zeros((2, 1, 4), np.float32)
    cam[0, 0] = [0.3, 0.2, 0.26, -0.1]
    cam[1, 0] = [0.5, 0.0, 0.1, 0.0]
    # bg 0.26: pixel 0 -> class 2 (0.5), 1 -> bg, 2 -> tie with class 1 (bg wins), 3 -> bg
    np.testing.assert_array_equal(cam_argmax_labels(cam, 0.26)[0], [2, 0, 0, 0])
