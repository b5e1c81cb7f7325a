"""`python -m icam.evaluate` on tiny PNG folders: values worked out by hand, and every error."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from icam.bench.contour import reference_image_counts, reference_result, voc_palette
from icam.evaluate import evaluate_folders

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def save(path, labels, palette=True):
    im = Image.fromarray(np.asarray(labels, dtype=np.uint8), mode="L")
    if palette:
        im.putpalette(voc_palette())
    im.save(path)


def square(top, left, value, shape=(20, 20)):
    m = np.zeros(shape, dtype=np.uint8)
    m[top:top + 5, left:left + 5] = value
    return m


@pytest.fixture
def folders(tmp_path):
    pred, gt = tmp_path / "pred", tmp_path / "gt"
    pred.mkdir()
    gt.mkdir()
    # a: perfect aeroplane (1) square, one void pixel at (0, 0) in gt (palette PNGs)
    gt_a = square(5, 5, 1)
    gt_a[0, 0] = 255
    save(gt / "a.png", gt_a)
    save(pred / "a.png", square(5, 5, 1))
    # b: bicycle (2) square predicted 3 columns to the right (grey PNGs)
    save(gt / "b.png", square(5, 5, 2), palette=False)
    save(pred / "b.png", square(5, 8, 2), palette=False)
    return str(pred), str(gt)


def run(*args):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = [sys.executable, "-m", "icam.evaluate", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)


# Worked out by hand. Background: a has 374 non-void gt and pred pixels, all agreeing;
# b has 375 each, agreeing on 400 - 40 = 360 -> 734 / (749 + 749 - 734) = 734/764.
# Aeroplane: perfect, J = F = 1. Bicycle: overlap 5x2 = 10 of union 40 -> J = 1/4;
# outlines 3 columns apart at r = 1 -> P = R = 10/20 -> F = 1/2 (see test_metrics).
J_BG, J_BIKE = 734 / 764, 0.25
J_ALL = 100 * (J_BG + 1 + J_BIKE) / 3
F_ALL = 100 * (1 + 0.5) / 2


def test_json_output(folders):
    pred, gt = folders
    out = run("--pred", pred, "--gt", gt, "--json")
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout)
    assert set(res) == {"J", "F", "JF", "per_class"}
    assert res["J"] == pytest.approx(J_ALL)
    assert res["F"] == pytest.approx(F_ALL)
    assert res["JF"] == pytest.approx((J_ALL + F_ALL) / 2)
    rows = res["per_class"]
    assert len(rows) == 21 and rows[2] == {
        "class": "bicycle", "id": 2, "J": pytest.approx(25.0), "F": pytest.approx(50.0)}
    assert rows[3]["J"] is None and rows[3]["F"] is None  # bird occurs nowhere


def test_text_output(folders):
    pred, gt = folders
    out = run("--pred", pred, "--gt", gt, "--workers", "2")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "images 2"
    assert lines[1].split() == ["J", f"{J_ALL:.2f}"]
    assert lines[2].split() == ["F", f"{F_ALL:.2f}"]
    assert lines[3].split() == ["JF", f"{(J_ALL + F_ALL) / 2:.2f}"]
    table = {line.split()[0]: line.split()[1:] for line in lines[5:]}
    assert table["background"] == [f"{100 * J_BG:.2f}", "-"]
    assert table["bicycle"] == ["25.00", "50.00"]
    assert table["bird"] == ["n/a", "n/a"]


def test_list_file(folders, tmp_path):
    pred, gt = folders
    listing = tmp_path / "ids.txt"
    # only image a: background 374/374, aeroplane perfect
    for text in ("a\n\n", "/JPEGImages/a.jpg /SegmentationClassAug/a.png\n"):
        listing.write_text(text)
        out = run("--pred", pred, "--gt", gt, "--list", listing, "--json", "--progress")
        res = json.loads(out.stdout)
        assert res["J"] == 100.0 and res["F"] == 100.0


def test_process_pool_equals_reference(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "p").mkdir()
    (tmp_path / "g").mkdir()
    region, contour = np.zeros((21, 3), np.int64), np.zeros((21, 4), np.int64)
    for i in range(40):
        pred = rng.integers(0, 21, size=(12, 16)).astype(np.uint8)
        gt = np.where(rng.random((12, 16)) < 0.1, 255, rng.integers(0, 21, size=(12, 16)))
        save(tmp_path / "p" / f"{i}.png", pred)
        save(tmp_path / "g" / f"{i}.png", gt)
        r, c = reference_image_counts(pred, gt.astype(np.uint8))
        region += r
        contour += c
    expected = reference_result(region, contour)
    for workers in (1, 2):
        assert evaluate_folders(tmp_path / "p", tmp_path / "g", workers=workers) == expected


def assert_error(out, *fragments):
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ")
    for fragment in fragments:
        assert fragment in last, last


def test_missing_prediction(folders):
    pred, gt = folders
    os.remove(os.path.join(pred, "b.png"))
    assert_error(run("--pred", pred, "--gt", gt), "'b'", os.path.join(pred, "b.png"))


def test_size_mismatch(folders):
    pred, gt = folders
    save(os.path.join(pred, "b.png"), np.zeros((20, 21)))
    assert_error(run("--pred", pred, "--gt", gt), "'b'", "(20, 21)", "(20, 20)")


@pytest.mark.parametrize("where, value", [("pred", 21), ("pred", 255), ("gt", 30)])
def test_class_id_out_of_range(folders, where, value):
    pred, gt = folders
    folder = pred if where == "pred" else gt
    save(os.path.join(folder, "a.png"), square(5, 5, value))
    assert_error(run("--pred", pred, "--gt", gt), "'a'", f"class id {value}",
                 os.path.join(folder, "a.png"))


def test_missing_folders(folders, tmp_path):
    pred, gt = folders
    nowhere = str(tmp_path / "nowhere")
    assert_error(run("--pred", nowhere, "--gt", gt), "prediction folder not found", nowhere)
    assert_error(run("--pred", pred, "--gt", nowhere), "ground-truth folder not found", nowhere)


def test_list_naming_nothing(folders, tmp_path):
    pred, gt = folders
    listing = tmp_path / "empty.txt"
    listing.write_text("\n  \n")
    assert_error(run("--pred", pred, "--gt", gt, "--list", listing), "names no images")
    assert_error(run("--pred", pred, "--gt", gt, "--list", tmp_path / "none.txt"),
                 "cannot read list file")


def test_not_a_label_map(folders):
    pred, gt = folders
    Image.new("RGB", (20, 20)).save(os.path.join(pred, "a.png"))
    assert_error(run("--pred", pred, "--gt", gt), "not a single-channel", "a.png")
