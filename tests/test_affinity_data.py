import numpy as np
import pytest
import torch
from PIL import Image

from icam.data.affinity import (
    AffinityDataset,
    AffinityTrain,
    load_crf_scores,
    pooled_affinity_labels,
    save_crf_scores,
)
from icam.data.transforms import denormalize
from icam.data.voc import save_mask

# A stride-8 label map (255 = unsure) and, for radius 2 (offsets a = (0, 1), b = (1, -1),
# c = (1, 0), d = (1, 1)), the pair masks of its source pixels (0, 1), (0, 2), (1, 1), (1, 2)
# worked out by hand; each mask is P×h'×w' = 4×2×2, entry [p, y, x - 1].
#   (0,1)=0: a->(0,2)=1 neg, b->(1,0)=0 bg, c->(1,1)=0 bg, d->(1,2)=1 neg
#   (0,2)=1: a->(0,3)=1 fg, b->(1,1)=0 neg, c->(1,2)=1 fg, d->(1,3)=255 none
#   (1,1)=0: a->(1,2)=1 neg, b->(2,0)=2 neg, c->(2,1)=0 bg, d->(2,2)=1 neg
#   (1,2)=1: a->(1,3)=255 none, b->(2,1)=0 neg, c->(2,2)=1 fg, d->(2,3)=1 fg
SMALL = np.array([[0, 0, 1, 1], [0, 0, 1, 255], [2, 0, 1, 1]], np.uint8)
BG = np.array([[[0, 0], [0, 0]], [[1, 0], [0, 0]], [[1, 0], [1, 0]], [[0, 0], [0, 0]]])
FG = np.array([[[0, 1], [0, 0]], [[0, 0], [0, 0]], [[0, 1], [0, 1]], [[0, 0], [0, 1]]])
NEG = np.array([[[1, 0], [1, 0]], [[0, 1], [1, 1]], [[0, 0], [0, 0]], [[1, 0], [1, 0]]])


def one_hot_scores(labels: np.ndarray, channels: int) -> np.ndarray:
    """channels×H×W scores: 1 on each pixel's label channel (labels are channel indices)."""
    return (np.arange(channels)[:, None, None] == labels[None]).astype(np.float32)


def test_pooled_labels_average_each_block_then_combine_the_two_alphas():
    # 2 channels (bg, one class) per alpha on 8×8 at stride 4, four blocks:
    #   (0,0): low class on 10 of 16 pixels (mean .625 > .375) -> class; high class -> 1
    #   (0,1): low bg on 9 of 16 (.5625) -> bg -> unsure; high class on all -> unsure (255)
    #   (1,0): low class everywhere; high bg on 9 of 16 -> background wins: 0
    #   (1,1): padding, every score 0 -> 255
    low = np.zeros((8, 8), np.int64)
    high = np.ones((8, 8), np.int64)
    block = np.zeros((4, 4), np.int64)
    block.flat[:10] = 1
    low[:4, :4] = block
    block = np.ones((4, 4), np.int64)
    block.flat[:9] = 0
    low[:4, 4:] = block
    low[4:, :4] = 1
    high[4:, :4] = block
    scores = np.concatenate([one_hot_scores(low, 2), one_hot_scores(high, 2)])
    scores[:, 4:, 4:] = 0
    labels = pooled_affinity_labels(torch.from_numpy(scores), 4)
    np.testing.assert_array_equal(labels, [[1, 255], [0, 255]])


def test_crf_scores_round_trip_at_12_bit_precision(tmp_path):
    rng = np.random.default_rng(0)
    low, high = rng.random((3, 5, 7)), rng.random((3, 5, 7))
    save_crf_scores(tmp_path / "a.npz", low, high)
    loaded = load_crf_scores(tmp_path / "a.npz")
    assert loaded.shape == (6, 5, 7) and loaded.dtype == np.float32
    np.testing.assert_allclose(loaded, np.concatenate([low, high]), atol=0.5 / 4095 + 1e-7)
    with pytest.raises(ValueError, match="shape"):
        save_crf_scores(tmp_path / "b.npz", low, high[:2])
    (tmp_path / "c.npz").write_bytes(b"junk")
    with pytest.raises(ValueError, match="c.npz"):
        load_crf_scores(tmp_path / "c.npz")


def test_affinity_train_keeps_image_and_scores_aligned():
    # The red channel encodes the class (red = 10·id): after flip and crop every scored
    # pixel of the crop still shows its own class, and the padding has no score and is black,
    # as the reference's crop of the raw image before normalising (ImageNet's -mean/std).
    rng = np.random.default_rng(0)
    mask = rng.integers(0, 21, (20, 40))
    image = np.zeros((20, 40, 3), np.uint8)
    image[..., 0] = mask * 10
    transform = AffinityTrain(crop=32, jitter=None)
    for seed in range(6):
        x, s = transform(image, one_hot_scores(mask, 21), np.random.default_rng(seed))
        assert x.shape == (3, 32, 32) and s.shape == (21, 32, 32)
        red = torch.round(denormalize(x)[0] * 255).long()
        real = s.amax(dim=0) > 0
        assert real.sum() == 20 * 32  # the 20 rows fit, 32 of 40 columns are kept
        assert torch.equal(red[real], s.argmax(dim=0)[real] * 10)
        black = -torch.tensor([0.485 / 0.229, 0.456 / 0.224, 0.406 / 0.225])[:, None]
        assert torch.allclose(x[:, ~real], black.expand(3, int((~real).sum())), atol=1e-5)


def write_voc_root(root, image_id, size):
    (root / "JPEGImages").mkdir(parents=True)
    (root / "SegmentationClass").mkdir()
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    image = Image.fromarray(np.full((*size, 3), 128, np.uint8))
    image.save(root / "JPEGImages" / f"{image_id}.jpg")
    save_mask(root / "SegmentationClass" / f"{image_id}.png", np.zeros(size, np.uint8))
    (root / "ImageSets" / "Segmentation" / "train.txt").write_text(f"{image_id}\n")


def write_scores(folder, image_id, labels, channels=4):
    """CRF scores whose low and high alphas both say `labels` (channel indices)."""
    folder.mkdir(exist_ok=True)
    scores = one_hot_scores(labels, channels)
    save_crf_scores(folder / f"{image_id}.npz", scores, scores)


def test_dataset_pair_masks_match_the_hand_worked_map(tmp_path):
    # SMALL plus a fourth row of unsure pixels (the low alpha says background, the high one
    # class 1), at stride 8 on a 32×32 image that the 32 crop keeps whole. The new source row
    # y = 2 ([2, 0, 1, 1]) adds, for offset a = (0, 1): (2,1)=0 -> (2,2)=1 neg and
    # (2,2)=1 -> (2,3)=1 fg; its other offsets reach the unsure row.
    write_voc_root(tmp_path / "voc", "img0", (32, 32))
    full = np.concatenate([SMALL, np.full((1, 4), 255)]).repeat(8, axis=0).repeat(8, axis=1)
    low = one_hot_scores(np.where(full == 255, 0, full), 4)
    high = one_hot_scores(np.where(full == 255, 1, full), 4)
    (tmp_path / "crf").mkdir()
    save_crf_scores(tmp_path / "crf" / "img0.npz", low, high)
    transform = AffinityTrain(crop=32, flip=False, jitter=None)
    dataset = AffinityDataset(tmp_path / "voc", "train", tmp_path / "crf", transform,
                              stride=8, radius=2)
    image_id, x, (bg, fg, neg) = dataset[0]
    assert image_id == "img0" and x.shape == (3, 32, 32)
    zeros = np.zeros((4, 1, 2))
    expected_bg = np.concatenate([BG, zeros], axis=1)
    expected_fg, expected_neg = (np.concatenate([m, zeros], axis=1) for m in (FG, NEG))
    expected_fg[0, 2, 1] = expected_neg[0, 2, 0] = 1
    np.testing.assert_array_equal(bg.numpy(), expected_bg)
    np.testing.assert_array_equal(fg.numpy(), expected_fg)
    np.testing.assert_array_equal(neg.numpy(), expected_neg)


def test_dataset_with_the_training_transform(tmp_path):
    write_voc_root(tmp_path / "voc", "img0", (90, 100))
    labels = np.zeros((90, 100), np.int64)
    labels[20:70, 30:80] = 1
    write_scores(tmp_path / "crf", "img0", labels, channels=2)
    dataset = AffinityDataset(tmp_path / "voc", "train", tmp_path / "crf", AffinityTrain(80),
                              stride=4, seed=3)
    _, x, (bg, fg, neg) = dataset[0]
    assert x.shape == (3, 80, 80)
    assert bg.shape == fg.shape == neg.shape == (34, 20 - 5 + 1, 20 - 8)
    assert fg.sum() > 0 and neg.sum() > 0
    assert ((bg + fg + neg) <= 1).all()
    with pytest.raises(ValueError, match="multiple of the output stride 8"):
        AffinityDataset(tmp_path / "voc", "train", tmp_path / "crf", AffinityTrain(60))
    with pytest.raises(FileNotFoundError, match="img0.npz"):
        AffinityDataset(tmp_path / "voc", "train", tmp_path / "nothing", AffinityTrain(80))
