import numpy as np
import pytest
import torch
from PIL import Image

from icam.data.affinity import AffinityDataset, AffinityTrain, reduce_labels
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


def test_reduce_labels_takes_the_majority_of_each_block():
    y = torch.zeros(16, 16, dtype=torch.long)
    y[:5, :8] = 1  # block (0,0): 40 of class 1, 24 of 0 -> 1
    y[:8, 8:] = 255  # block (0,1): all unsure -> 255
    y[8:, :8] = 2
    y[12:, :8] = 3  # block (1,0): 32 of 2, 32 of 3 -> tie to the lower id, 2
    y[8:, 8:] = 255
    y[8:, 8:10] = 0
    y[8:15, 10] = 0  # block (1,1): 23 of 0, 41 unsure -> 255
    np.testing.assert_array_equal(reduce_labels(y), [[1, 255], [2, 255]])


def test_reduce_labels_counts_padding_as_unsure():
    # 10×12: the second block column has 4 real columns (× 8 rows = 32 of class 4) and 32
    # padded ones: the tie goes to class 4; the second block row is 2 real rows of class 4 (16
    # pixels) against 48 padded: 255.
    y = torch.full((10, 12), 4, dtype=torch.long)
    np.testing.assert_array_equal(reduce_labels(y), [[4, 4], [255, 255]])
    with pytest.raises(ValueError, match="ids"):
        reduce_labels(torch.full((8, 8), 21, dtype=torch.long))


def test_affinity_train_keeps_image_and_mask_aligned():
    # The red channel encodes the class (red = 10·id): after flip and crop every labelled
    # pixel of the crop still shows its own class, and the padding is VOID with mean colour.
    rng = np.random.default_rng(0)
    mask = rng.integers(0, 21, (20, 40), dtype=np.uint8)
    image = np.zeros((20, 40, 3), np.uint8)
    image[..., 0] = mask * 10
    transform = AffinityTrain(crop=32, jitter=None)
    for seed in range(6):
        x, y = transform(image, mask, np.random.default_rng(seed))
        assert x.shape == (3, 32, 32) and y.shape == (32, 32) and y.dtype == torch.int64
        red = torch.round(denormalize(x)[0] * 255).long()
        real = y != 255
        assert real.sum() == 20 * 32  # the 20 rows fit, 32 of 40 columns are kept
        assert torch.equal(red[real], y[real] * 10)
        assert torch.allclose(x[:, ~real], torch.zeros(1), atol=1e-6)


def write_voc_root(root, image_id, size):
    (root / "JPEGImages").mkdir(parents=True)
    (root / "SegmentationClass").mkdir()
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    image = Image.fromarray(np.full((*size, 3), 128, np.uint8))
    image.save(root / "JPEGImages" / f"{image_id}.jpg")
    save_mask(root / "SegmentationClass" / f"{image_id}.png", np.zeros(size, np.uint8))
    (root / "ImageSets" / "Segmentation" / "train.txt").write_text(f"{image_id}\n")


def test_dataset_pair_masks_match_the_hand_worked_map(tmp_path):
    labels = tmp_path / "labels"
    labels.mkdir()
    write_voc_root(tmp_path / "voc", "img0", (24, 32))
    full = SMALL.repeat(8, axis=0).repeat(8, axis=1)  # the 3×4 map at full resolution
    save_mask(labels / "img0.png", full)
    dataset = AffinityDataset(tmp_path / "voc", "train", labels, transform=None, radius=2)
    image_id, x, (bg, fg, neg) = dataset[0]
    assert image_id == "img0" and x.shape == (3, 24, 32)
    np.testing.assert_array_equal(bg.numpy(), BG)
    np.testing.assert_array_equal(fg.numpy(), FG)
    np.testing.assert_array_equal(neg.numpy(), NEG)


def test_dataset_with_the_training_transform(tmp_path):
    labels = tmp_path / "labels"
    labels.mkdir()
    write_voc_root(tmp_path / "voc", "img0", (90, 100))
    mask = np.zeros((90, 100), np.uint8)
    mask[20:70, 30:80] = 7
    save_mask(labels / "img0.png", mask)
    dataset = AffinityDataset(tmp_path / "voc", "train", labels, AffinityTrain(crop=80), seed=3)
    _, x, (bg, fg, neg) = dataset[0]
    assert x.shape == (3, 80, 80)
    assert bg.shape == fg.shape == neg.shape == (34, 10 - 5 + 1, 10 - 8)
    assert fg.sum() > 0 and neg.sum() > 0
    assert ((bg + fg + neg) <= 1).all()
    with pytest.raises(ValueError, match="multiple of 8"):
        AffinityTrain(crop=60)
