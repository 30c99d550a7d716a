"""Fixtures for the data tests: the real MNIST files (loaded once) and small in-memory sources."""

import numpy as np
import pytest

from jaxcnn.data import ArraySource, load


@pytest.fixture(scope="session")
def mnist_train(data_dir):
    return load("mnist", "train", data_dir=data_dir, source="idx")


@pytest.fixture(scope="session")
def mnist_test(data_dir):
    return load("mnist", "test", data_dir=data_dir, source="idx")


def _index_source(n: int, image_size: int = 2) -> ArraySource:
    images = (np.arange(n) % 256).astype(np.uint8).reshape(n, 1, 1).repeat(image_size, 1).repeat(image_size, 2)
    return ArraySource(images, np.arange(n), name="indices")


@pytest.fixture
def index_source():
    """``index_source(n)``: ``n`` examples whose label is their own index."""
    return _index_source


@pytest.fixture
def small_digits():
    """40 synthetic 'digits': a bright square of side 6..15, class = index % 10 (no files needed)."""
    images = np.zeros((40, 28, 28), np.uint8)
    for i in range(40):
        side = 6 + i % 10
        images[i, 4 : 4 + side, 6 : 6 + side] = 200 + i
    return ArraySource(images, np.arange(40) % 10, name="squares", split="train", num_classes=10)
