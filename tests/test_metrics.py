"""J, F and J&F on hand-made masks, and the fast path against the reference procedure."""

import numpy as np
import pytest

from icam import VOC_CLASSES
from icam.bench.contour import (
    random_scene,
    reference_image_counts,
    reference_result,
    reference_seg2bmap,
)
from icam.metrics import JFAccumulator, boundary_map, boundary_radius, contour_counts


def square(shape, top, left, size, value=1, dtype=np.uint8):
    m = np.zeros(shape, dtype=dtype)
    m[top:top + size, left:left + size] = value
    return m


def test_boundary_map_of_square():
    # 2x2 square at rows/cols 1-2: boundary is offset half a pixel towards the origin,
    # i.e. the outline of rows 0-2 x cols 0-2 (pixel (1,1) has E, S, SE all inside the square)
    expected = np.array([
        [1, 1, 1, 0, 0],
        [1, 0, 1, 0, 0],
        [1, 1, 1, 0, 0],
        [0, 0, 0, 0, 0],
        [0, 0, 0, 0, 0],
    ], dtype=bool)
    np.testing.assert_array_equal(boundary_map(square((5, 5), 1, 1, 2)), expected)


def test_boundary_map_edge_rules():
    # last column: only the south neighbour counts; last row: only the east one
    mask = np.array([[0, 0, 0], [0, 0, 1], [0, 1, 1]])
    expected = np.array([[0, 1, 1], [1, 1, 0], [1, 0, 0]], dtype=bool)
    np.testing.assert_array_equal(boundary_map(mask), expected)
    # a lone bottom-right pixel: its N, W and NW neighbours are boundary, itself never
    lone = np.zeros((3, 3), dtype=np.uint8)
    lone[2, 2] = 1
    expected = np.array([[0, 0, 0], [0, 1, 1], [0, 1, 0]], dtype=bool)
    np.testing.assert_array_equal(boundary_map(lone), expected)
    assert not boundary_map(np.ones((4, 6))).any()


def test_boundary_map_matches_davis_seg2bmap():
    rng = np.random.default_rng(0)
    for shape in [(1, 7), (7, 1), (2, 2), (9, 13), (30, 20)]:
        mask = rng.random(shape) < 0.4
        np.testing.assert_array_equal(boundary_map(mask), reference_seg2bmap(mask))


def test_boundary_radius():
    # ceil(0.008 * diagonal): 375x500 -> 0.008*625 = 5; 500x500 -> 5.66 -> 6;
    # 100x100 -> 1.13 -> 2; 20x20 -> 0.23 -> 1
    assert boundary_radius((375, 500)) == 5
    assert boundary_radius((500, 500)) == 6
    assert boundary_radius((100, 100)) == 2
    assert boundary_radius((20, 20)) == 1


def test_j_ignores_void():
    gt = np.array([[0, 0, 1], [1, 255, 2]])
    pred = np.array([[0, 1, 1], [1, 1, 0]])
    # valid pixels (gt, pred): (0,0) (0,1) (1,1) (1,1) (2,0); the void pixel predicts 1
    # class 0: inter 1, |gt| 2, |pred| 2 -> 1/3; class 1: inter 2, |gt| 2, |pred| 3 -> 2/3
    # (the void pixel would make it 2/4); class 2: inter 0, union 1 -> 0
    acc = JFAccumulator(num_classes=3)
    acc.add(pred, gt)
    res = acc.result()
    assert [row["J"] for row in res["per_class"]] == pytest.approx([100 / 3, 200 / 3, 0.0])
    assert res["J"] == pytest.approx(100 / 3)


def f_of(pred, gt, num_classes=2):
    acc = JFAccumulator(num_classes)
    for p, g in zip(pred, gt, strict=True):
        acc.add(p, g)
    return acc.result()


def test_f_shift_within_tolerance():
    # 20x20 image: r = 1. The square's boundary is a 6x6 outline; shifted one column, every
    # pixel of either outline has one of the other at distance <= 1, so P = R = 1
    gt = square((20, 20), 5, 5, 5)
    pred = square((20, 20), 5, 6, 5)
    assert f_of([pred], [gt])["F"] == pytest.approx(100.0)


def test_f_shift_beyond_tolerance():
    # r = 1; gt outline rows 4-9 x cols 4-9 (20 px), pred outline rows 4-9 x cols 7-12.
    # Pred matches: top row x=7..10 (4), bottom row x=7..10 (4), left column x=7 at y=5
    # and y=8 (next to the gt top/bottom rows) (2), right column x=12 none -> 10/20.
    # Mirror image for recall -> 10/20. F = 0.5.
    gt = square((20, 20), 5, 5, 5)
    pred = square((20, 20), 5, 8, 5)
    res = f_of([pred], [gt])
    assert res["F"] == pytest.approx(50.0)
    # J: overlap 5x2 = 10, union 40
    assert res["per_class"][1]["J"] == pytest.approx(25.0)


@pytest.mark.parametrize("shift, expected", [((2, 0), 100.0), ((2, 2), 25.0), ((3, 2), 0.0)])
def test_f_disk_is_closed(shift, expected):
    # 100x100: r = 2. A lone pixel at (50,50) has the boundary {49,50} x {49,50}.
    # Shift (2,0): every pixel has its partner at distance exactly 2 (x^2+y^2 = r^2) -> F = 1.
    # Shift (2,2): only (50,50)-(51,51) are close (d^2 = 2); other pairs have d^2 >= 5 -> 1/4.
    # Shift (3,2): the closest pair (50,50)-(52,51) has d^2 = 5 > 4 -> nothing matches, F = 0.
    pred = square((100, 100), 50, 50, 1)
    gt = square((100, 100), 50 + shift[0], 50 + shift[1], 1)
    assert f_of([pred], [gt])["F"] == pytest.approx(expected)


def test_f_empty_conventions():
    empty = np.zeros((20, 20), dtype=np.uint8)
    obj = square((20, 20), 5, 5, 5)
    # no predicted boundary, some gt -> (P, R) = (1, 0) -> F = 0
    assert f_of([empty], [obj])["F"] == 0.0
    # predicted boundary, no gt -> (0, 1) -> F = 0
    assert f_of([obj], [empty])["F"] == 0.0
    # the class fills the image in both: no boundary at all -> (1, 1) -> F = 1
    full = np.ones((20, 20), dtype=np.uint8)
    assert f_of([full], [full])["F"] == 100.0


def test_f_accumulates_over_the_set_not_per_image():
    # image A: gt square, nothing predicted; image B: perfect. Per image (DAVIS):
    # F_A = 0 (convention (1, 0)), F_B = 1 -> mean 0.5. Over the set: both outlines have 20 px,
    # P = 20/20 = 1, R = 20/40 = 0.5 -> F = 2 * 0.5 / 1.5 = 2/3.
    empty = np.zeros((20, 20), dtype=np.uint8)
    obj = square((20, 20), 5, 5, 5)
    assert f_of([empty, obj], [obj, obj])["F"] == pytest.approx(200 / 3)


def test_void_is_background_for_f():
    # the void band around the gt square must not create or hide any boundary of class 1
    pred = square((20, 20), 5, 5, 5)
    gt = square((20, 20), 4, 4, 7, value=255)
    gt[5:10, 5:10] = 1
    assert f_of([pred], [gt])["F"] == 100.0


def test_absent_class_is_na_and_left_out():
    # class 2 occurs nowhere: n/a in both metrics, means over the classes that occur
    obj = square((20, 20), 5, 5, 5)
    res = f_of([obj], [obj], num_classes=3)
    assert res["per_class"][2] == {"class": "2", "id": 2, "J": None, "F": None}
    assert res["per_class"][0]["F"] is None  # background has no F
    assert res["J"] == 100.0 and res["F"] == 100.0 and res["JF"] == 100.0
    voc = f_of([obj], [obj], num_classes=21)
    assert [row["class"] for row in voc["per_class"]] == list(VOC_CLASSES)
    assert sum(row["J"] is not None for row in voc["per_class"]) == 2
    assert voc["J"] == 100.0


def test_class_predicted_only_on_void():
    # class 2 is predicted only where gt is void: nothing to score in J (n/a), but F sees a
    # predicted boundary with no gt boundary -> (0, 1) -> F_2 = 0; F = (1 + 0) / 2
    gt = square((20, 20), 5, 5, 5)
    gt[15:18, 15:18] = 255
    pred = square((20, 20), 5, 5, 5)
    pred[15:18, 15:18] = 2
    res = f_of([pred], [gt], num_classes=3)
    assert res["per_class"][2]["J"] is None
    assert res["per_class"][2]["F"] == 0.0
    assert res["F"] == pytest.approx(50.0)


def test_nothing_to_score():
    res = JFAccumulator(3).result()
    assert res["J"] is None and res["F"] is None and res["JF"] is None


def test_bad_inputs_rejected():
    acc = JFAccumulator(num_classes=21)
    ok = np.zeros((4, 4), dtype=np.uint8)
    with pytest.raises(ValueError, match="prediction has class id 21"):
        acc.add(ok + 21, ok)
    with pytest.raises(ValueError, match="prediction has class id 255"):
        acc.add(ok + 255, ok)
    with pytest.raises(ValueError, match="ground truth has class id 30"):
        acc.add(ok, square((4, 4), 1, 1, 1, value=30))
    with pytest.raises(ValueError, match="ground truth has class id -1"):
        acc.add(ok, -np.ones((4, 4), dtype=np.int64))
    with pytest.raises(ValueError, match=r"shapes differ: prediction \(4, 4\).*\(4, 5\)"):
        acc.add(ok, np.zeros((4, 5), dtype=np.uint8))
    with pytest.raises(ValueError, match="integer class ids"):
        acc.add(ok.astype(np.float32), ok)
    assert acc.num_images == 0 and not acc.confusion.any()


def random_labels(rng, shape, num_classes):
    """Either a scene of blobs or per-pixel noise, with a few void pixels added to gt."""
    if rng.random() < 0.5 and min(shape) >= 40:
        pred = random_scene(rng, *shape, objects=4) % num_classes
        gt = random_scene(rng, *shape, objects=4) % num_classes
    else:
        pred = rng.integers(0, num_classes, size=shape).astype(np.uint8)
        gt = np.where(rng.random(shape) < 0.7, pred, rng.integers(0, num_classes, size=shape))
    gt = np.where(rng.random(shape) < 0.05, 255, gt).astype(np.uint8)
    return pred.astype(np.uint8), gt


def test_fast_path_equals_reference():
    rng = np.random.default_rng(1)
    shapes = [(1, 9), (9, 1), (2, 3), (17, 23), (60, 45), (100, 140), (150, 200), (375, 500)]
    for num_classes in (3, 21):
        acc = JFAccumulator(num_classes)
        region = np.zeros((num_classes, 3), dtype=np.int64)
        contour = np.zeros((num_classes, 4), dtype=np.int64)
        for shape in shapes:
            pred, gt = random_labels(rng, shape, num_classes)
            acc.add(pred, gt)
            r, c = reference_image_counts(pred, gt, num_classes)
            region += r
            contour += c
            classes = list(range(1, num_classes))
            np.testing.assert_array_equal(contour_counts(pred, gt, classes), c[1:])
        np.testing.assert_array_equal(acc.contour[1:], contour[1:])
        assert acc.result() == reference_result(region, contour)


def test_merge_equals_single_accumulator():
    rng = np.random.default_rng(2)
    pairs = [random_labels(rng, (30, 40), 5) for _ in range(4)]
    whole, left, right = JFAccumulator(5), JFAccumulator(5), JFAccumulator(5)
    for i, (p, g) in enumerate(pairs):
        whole.add(p, g)
        (left if i < 2 else right).add(p, g)
    assert left.merge(right).result() == whole.result()
    assert left.num_images == 4
    with pytest.raises(ValueError, match="cannot merge"):
        whole.merge(JFAccumulator(4))
