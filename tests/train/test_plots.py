"""jaxcnn.train.plots: the segmentation picture holds the masks it was given."""

import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")

from matplotlib import image as mpimg  # noqa: E402

from jaxcnn.train.plots import plot_segmentation_examples  # noqa: E402


def test_segmentation_examples_draw_truth_and_prediction(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(2, 16, 16, 1), dtype=np.uint8)
    truth = rng.integers(0, 11, size=(2, 16, 16))
    path = plot_segmentation_examples(images, truth, truth, tmp_path / "masks.png", num_classes=11)
    picture = mpimg.imread(path)
    assert picture.shape[0] > picture.shape[1] * 0.5  # two rows of three panels

    different = plot_segmentation_examples(images, truth, (truth + 1) % 11, tmp_path / "other.png", num_classes=11)
    assert not np.array_equal(mpimg.imread(different), picture)  # the prediction is drawn


def test_segmentation_examples_reject_masks_of_another_shape(tmp_path):
    with pytest.raises(ValueError, match=r"must agree, got shapes \(2, 8, 8\), \(2, 8, 8\), \(2, 8, 9\)"):
        plot_segmentation_examples(
            np.zeros((2, 8, 8)), np.zeros((2, 8, 8), int), np.zeros((2, 8, 9), int), tmp_path / "x.png", num_classes=3
        )
