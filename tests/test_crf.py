import numpy as np
import pytest

from icam.crf import dense_crf

RED, BLUE = (200, 30, 30), (30, 30, 200)


def two_colour_image(height=16, width=32, edge=16):
    """Left of column `edge` red, right of it blue."""
    image = np.empty((height, width, 3), np.uint8)
    image[:, :edge] = RED
    image[:, edge:] = BLUE
    return image


@pytest.mark.parametrize("edge", [11, 16, 20])
def test_uncertain_band_snaps_to_the_colour_edge(edge):
    # Confident labels far from the edge (0 in columns < 8, 1 in columns >= 24) and a flat
    # 0.5/0.5 band between: the unary alone cannot decide the band. The bilateral kernel ties
    # each band pixel to the confident pixels of its own colour (srgb 13 makes red-blue weights
    # ~exp(-170²/338) = 0), so the band must split exactly at the colour edge.
    image = two_colour_image(edge=edge)
    probs = np.full((2, 16, 32), 0.5, np.float32)
    probs[:, :, :8] = np.array([0.9, 0.1])[:, None, None]
    probs[:, :, 24:] = np.array([0.1, 0.9])[:, None, None]
    q = dense_crf(image, probs)
    expected = np.zeros((16, 32), np.int64)
    expected[:, edge:] = 1
    np.testing.assert_array_equal(q.argmax(0), expected)


def test_shifted_unary_edge_moves_to_the_image_edge():
    # A weak unary whose edge is 3 columns left of the colour edge: the 3 red columns that the
    # unary calls "1" (0.45 vs 0.55) are pulled back to 0 by the red region.
    image = two_colour_image()
    probs = np.empty((2, 16, 32), np.float32)
    probs[0] = 0.55
    probs[0, :, 13:] = 0.45
    probs[1] = 1 - probs[0]
    q = dense_crf(image, probs)
    assert (probs.argmax(0)[:, 13:16] == 1).all()
    expected = np.zeros((16, 32), np.int64)
    expected[:, 16:] = 1
    np.testing.assert_array_equal(q.argmax(0), expected)


def test_confident_unary_is_kept_and_marginals_are_normalised():
    image = two_colour_image()
    labels = np.zeros((16, 32), np.int64)
    labels[:, 16:] = 2
    probs = np.full((3, 16, 32), 0.01, np.float32)
    np.put_along_axis(probs, labels[None], 0.98, axis=0)
    q = dense_crf(image, probs)
    assert q.dtype == np.float32 and q.shape == (3, 16, 32)
    np.testing.assert_allclose(q.sum(0), 1.0, atol=1e-4)
    np.testing.assert_array_equal(q.argmax(0), labels)
    assert q.max(0).min() > 0.9


def test_bad_inputs_are_named():
    image = two_colour_image()
    with pytest.raises(ValueError, match="uint8"):
        dense_crf(image.astype(np.float32), np.ones((2, 16, 32)))
    with pytest.raises(ValueError, match="K×H×W"):
        dense_crf(image, np.ones((2, 16, 31)))
