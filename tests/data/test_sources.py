"""In-memory sources: layout, validation, subsets."""

import numpy as np
import pytest

from jaxcnn.data import ArraySource, Subset


def test_array_source_layout():
    images = np.arange(5 * 3 * 3, dtype=np.uint8).reshape(5, 3, 3)
    source = ArraySource(images, np.array([4, 3, 2, 1, 0], np.int64), num_classes=5, name="toy")
    assert len(source) == 5 and source.info.image_shape == (3, 3, 1)
    example = source[-1]
    np.testing.assert_array_equal(example["image"][..., 0], images[4])
    assert example["label"] == 0 and example["label"].dtype == np.int32
    batch = source.get_batch([3, 0])
    assert batch["image"].shape == (2, 3, 3, 1) and batch["label"].tolist() == [1, 4]
    assert source.info.element_spec == {"image": ((3, 3, 1), "uint8"), "label": ((), "int32")}


def test_subsets():
    source = ArraySource(np.zeros((10, 2, 2, 3), np.uint8), np.arange(10))
    sub = Subset(source, [9, 2, 5], split="mine")
    assert len(sub) == 3 and sub[1]["label"] == 2 and sub.info.split == "mine"
    assert sub.get_batch([2, 0])["label"].tolist() == [5, 9]
    assert source.select(slice(2, 4)).labels.tolist() == [2, 3]


@pytest.mark.parametrize(
    "images, labels, kwargs, error, match",
    [
        (np.zeros((4, 3)), np.zeros(4), {}, ValueError, r"images must have shape \(N, H, W\) or \(N, H, W, C\), got shape \(4, 3\)"),
        (np.zeros((4, 3, 3)), np.zeros(3), {}, ValueError, r"labels must have one entry per image"),
        (np.zeros((4, 3, 3)), np.array([0, 1, 2, 9]), {"num_classes": 5}, ValueError, r"labels must lie in \[0, num_classes=5\)"),
        (np.zeros((4, 3, 3)), np.array(["a"] * 4), {}, TypeError, "labels must be integer or float"),
        (np.zeros((4, 3, 3)), np.zeros(4, int), {"num_classes": 0}, ValueError, "num_classes must be a positive int"),
        (np.zeros((4, 3, 3)), np.zeros(4, int), {"num_classes": 2, "class_names": ["a"]}, ValueError, "class_names has 1"),
    ],
)
def test_array_source_errors(images, labels, kwargs, error, match):
    with pytest.raises(error, match=match):
        ArraySource(images, labels, **kwargs)


def test_index_errors():
    source = ArraySource(np.zeros((3, 2, 2), np.uint8), np.zeros(3, int))
    with pytest.raises(IndexError, match="index 3 is out of range for 3 examples"):
        source[3]
    with pytest.raises(TypeError, match="index must be an int, got 1.0"):
        source[1.0]
    with pytest.raises(IndexError, match=r"indices must lie in \[0, 3\)"):
        source.get_batch([0, 5])


def test_load_derived_dataset_by_name(data_dir):
    from jaxcnn.data import RotatedDigits, SegmentationCanvases, load

    seg = load("mnist_segmentation", "test[:20]", data_dir=data_dir)
    assert isinstance(seg, SegmentationCanvases) and len(seg) == 20
    assert seg[3]["image"].shape == (64, 64, 1) and seg[3]["label"].shape == (64, 64)
    assert seg.info.num_classes == 11
    rot = load("mnist_rotation", "train[:5]", data_dir=data_dir)
    assert isinstance(rot, RotatedDigits)
    assert all(-45.0 <= float(rot[i]["label"]) <= 45.0 for i in range(5))
    assert len(load("mnist_rotation", "train[:5]", data_dir=data_dir, num_examples=20)) == 20
    assert len(load("mnist_segmentation", "test[:5]", data_dir=data_dir, num_examples=8)) == 8
    with pytest.raises(ValueError, match="num_examples applies to derived datasets.*name='mnist'"):
        load("mnist", "train[:5]", data_dir=data_dir, num_examples=20)
    with pytest.raises(ValueError, match="load: num_examples must be a positive int, got 0"):
        load("mnist_rotation", "train[:5]", data_dir=data_dir, num_examples=0)
