"""Derived datasets: digit canvases (segmentation, detection) and rotation regression."""

import numpy as np
import pytest

from jaxcnn.data import BatchLoader, DetectionCanvases, RotatedDigits, SegmentationCanvases, rotate_image


def test_canvases_are_deterministic(small_digits):
    a = SegmentationCanvases(small_digits, 20, seed=3)
    b = SegmentationCanvases(small_digits, 20, seed=3)
    c = SegmentationCanvases(small_digits, 20, seed=4)
    for i in (0, 7, 19):
        np.testing.assert_array_equal(a[i]["image"], b[i]["image"])
        np.testing.assert_array_equal(a[i]["label"], b[i]["label"])
    assert any(not np.array_equal(a[i]["image"], c[i]["image"]) for i in range(5))
    assert a[0]["image"].shape == (64, 64, 1) and a[0]["image"].dtype == np.uint8
    assert a[0]["label"].shape == (64, 64) and a[0]["label"].dtype == np.int32


def test_labels_agree_with_pixels(small_digits):
    """label > 0 exactly where a digit pixel is above threshold; each label is a pasted digit's
    class + 1, inside that digit's box; the image is the maximum of the pasted digits."""
    seg = SegmentationCanvases(small_digits, 30, num_digits=4, threshold=100, seed=0)
    for i in range(30):
        canvas = seg.canvas(i)
        image, label = canvas["image"][..., 0], canvas["label"]
        assert ((label > 0) == (image > 100)).all()
        # Rebuild the image independently from the recorded layout.
        expected = np.zeros((64, 64), np.uint8)
        for d, (r, c) in zip(canvas["digit_indices"], canvas["positions"]):
            patch = small_digits.images[d, ..., 0]
            expected[r : r + 28, c : c + 28] = np.maximum(expected[r : r + 28, c : c + 28], patch)
        np.testing.assert_array_equal(image, expected)
        for value in np.unique(label[label > 0]):
            ys, xs = np.nonzero(label == value)
            inside = np.zeros(ys.shape, bool)
            for (x0, y0, x1, y1), cls in zip(canvas["boxes"], canvas["classes"]):
                if cls + 1 == value:
                    inside |= (xs >= x0) & (xs < x1) & (ys >= y0) & (ys < y1)
            assert inside.all()


def test_overlap_goes_to_the_brightest_digit(small_digits):
    """Squares 200+i are brighter for larger i. Reference: stack the pasted layers; each pixel
    above threshold belongs to the last layer reaching the maximum."""
    seg = SegmentationCanvases(small_digits, 200, num_digits=3, seed=1)
    overlaps = 0
    for i in range(200):
        canvas = seg.canvas(i)
        layers = np.zeros((3, 64, 64), int)
        for k, (d, (r, c)) in enumerate(zip(canvas["digit_indices"], canvas["positions"])):
            layers[k, r : r + 28, c : c + 28] = small_digits.images[d, ..., 0]
        owner = 2 - np.argmax(layers[::-1], axis=0)
        classes = small_digits.labels[canvas["digit_indices"]]
        expected = np.where(layers.max(0) > 127, 1 + classes[owner], 0)
        np.testing.assert_array_equal(canvas["label"], expected)
        overlaps += ((layers > 127).sum(0) > 1).any()
    assert overlaps > 10


def test_detection_uses_the_same_canvases(small_digits):
    seg = SegmentationCanvases(small_digits, 10, seed=5)
    det = DetectionCanvases(small_digits, 10, seed=5)
    for i in range(10):
        example = det[i]
        np.testing.assert_array_equal(example["image"], seg[i]["image"])
        assert example["boxes"].shape == (3, 4) and example["boxes"].dtype == np.float32
        assert example["classes"].shape == (3,) and example["classes"].dtype == np.int32
        # The squares are 6..15 px placed with their top-left at (4, 6) inside the 28x28 patch.
        canvas = det.canvas(i)
        for (x0, y0, x1, y1), d, (r, c) in zip(example["boxes"], canvas["digit_indices"], canvas["positions"]):
            side = 6 + d % 10
            assert (x0, y0, x1, y1) == (c + 6, r + 4, c + 6 + side, r + 4 + side)
    assert det.info.num_classes == 10 and seg.info.num_classes == 11


def test_split_changes_the_layouts(small_digits):
    test_digits = small_digits.select(slice(None), split="test")
    a = SegmentationCanvases(small_digits, 5, seed=0).canvas(0)
    b = SegmentationCanvases(test_digits, 5, seed=0).canvas(0)
    assert not np.array_equal(a["positions"], b["positions"])


def test_canvases_in_the_pipeline(small_digits):
    loader = BatchLoader(SegmentationCanvases(small_digits, 12, seed=0), 4, seed=0, num_epochs=1,
                         shard_index=0, shard_count=1)
    batch = next(iter(loader))
    assert batch["image"].shape == (4, 64, 64, 1) and batch["label"].shape == (4, 64, 64)


def test_real_mnist_canvases(mnist_test):
    seg = SegmentationCanvases(mnist_test, 4, seed=0)
    example = seg[0]
    assert ((example["label"] > 0) == (example["image"][..., 0] > 127)).all()
    assert set(np.unique(example["label"])) - {0} <= {1 + c for c in seg.canvas(0)["classes"]}


def test_rotated_digits(small_digits):
    rot = RotatedDigits(small_digits, max_angle=45.0, seed=2)
    angles = np.array([rot[i]["label"] for i in range(40)])
    assert angles.dtype == np.float32 and (np.abs(angles) <= 45).all() and angles.std() > 5
    for i in (0, 11):
        example = rot[i]
        assert example["image"].shape == (28, 28, 1) and example["image"].dtype == np.uint8
        assert int(example["digit"]) == small_digits.labels[i]
        expected = rotate_image(small_digits.images[i], float(example["label"]))
        np.testing.assert_array_equal(example["image"], expected)
    np.testing.assert_array_equal(RotatedDigits(small_digits, seed=2)[3]["image"], rot[3]["image"])


def test_rotated_digits_at_several_angles_each(small_digits):
    """num_examples = 3 * len(digits): example i is digit i % len at its own angle; the first
    len(digits) examples are those of the default size."""
    n = len(small_digits)
    one, three = RotatedDigits(small_digits, seed=2), RotatedDigits(small_digits, 3 * n, seed=2)
    assert len(three) == three.info.num_examples == 3 * n
    for i in (0, 4):
        assert float(three[i]["label"]) == float(one[i]["label"])
        copies = [three[i + k * n] for k in range(3)]
        assert {int(c["digit"]) for c in copies} == {int(small_digits.labels[i])}
        assert len({float(c["label"]) for c in copies}) == 3
        for c in copies:
            np.testing.assert_array_equal(c["image"], rotate_image(small_digits.images[i], float(c["label"])))
    with pytest.raises(IndexError):
        three[3 * n]


def test_rotate_image_reference():
    image = np.random.default_rng(0).integers(0, 256, (7, 7, 1), dtype=np.uint8)
    np.testing.assert_array_equal(rotate_image(image, 0.0), image)
    np.testing.assert_array_equal(rotate_image(image, 90.0), np.rot90(image, 1))
    np.testing.assert_array_equal(rotate_image(image, -90.0), np.rot90(image, -1))


def test_argument_errors(small_digits):
    with pytest.raises(ValueError, match="num_examples must be a positive int, got 0"):
        SegmentationCanvases(small_digits, 0)
    with pytest.raises(ValueError, match="canvas_size=20 is smaller than the digits"):
        SegmentationCanvases(small_digits, 3, canvas_size=20)
    with pytest.raises(ValueError, match="max_angle must be <= 180"):
        RotatedDigits(small_digits, max_angle=200.0)
    with pytest.raises(IndexError, match="index 5 is out of range for 5"):
        SegmentationCanvases(small_digits, 5)[5]


def test_variable_digit_counts_are_padded_with_a_mask(small_digits):
    det = DetectionCanvases(small_digits, 60, min_digits=0, max_digits=4, seed=1)
    assert det.info.element_spec["box_valid"] == ((4,), "bool")
    counts = []
    for i in range(60):
        example, canvas = det[i], det.canvas(i)
        n = len(canvas["digit_indices"])
        counts.append(n)
        assert example["boxes"].shape == (4, 4) and example["classes"].shape == (4,)
        np.testing.assert_array_equal(example["box_valid"], np.arange(4) < n)
        assert (example["boxes"][n:] == 0).all() and (example["classes"][n:] == -1).all()
        np.testing.assert_array_equal(example["classes"][:n], small_digits.labels[canvas["digit_indices"]])
        assert (example["image"] > 0).any() == (n > 0)
    assert set(counts) == {0, 1, 2, 3, 4}
    # the fixed count keeps an all-True mask
    assert DetectionCanvases(small_digits, 2, num_digits=3)[0]["box_valid"].tolist() == [True] * 3


def test_scaled_digits_on_a_large_canvas(small_digits):
    """Reference: each recorded digit resized by torch's bilinear interpolation (half-pixel
    centres, no antialias) and pasted with np.maximum; boxes are the scaled squares."""
    torch = pytest.importorskip("torch")
    det = DetectionCanvases(small_digits, 12, canvas_size=96, min_digits=1, max_digits=3,
                            digit_scale=(0.5, 2.0), seed=2)
    factors = []
    for i in range(12):
        canvas = det.canvas(i)
        expected = np.zeros((96, 96), np.float64)
        for d, (r, c), (h, w), box in zip(canvas["digit_indices"], canvas["positions"], canvas["sizes"],
                                          canvas["boxes"]):
            patch = torch.from_numpy(small_digits.images[d, ..., 0].astype(np.float64))[None, None]
            scaled = torch.nn.functional.interpolate(patch, size=(int(h), int(w)), mode="bilinear",
                                                     align_corners=False)[0, 0].numpy()
            expected[r : r + h, c : c + w] = np.maximum(expected[r : r + h, c : c + w], np.round(scaled))
            factors.append(h / 28)
            # the square (side s at row 4, column 6 of the patch) scaled by h / 28, within a pixel
            s = 6 + d % 10
            np.testing.assert_allclose(box, [c + 6 * h / 28, r + 4 * h / 28, c + (6 + s) * h / 28,
                                             r + (4 + s) * h / 28], atol=1.01)
        assert np.abs(canvas["image"][..., 0].astype(int) - expected).max() <= 1
        assert ((canvas["label"] > 0) == (canvas["image"][..., 0] > 127)).all()
    assert min(factors) < 0.8 and max(factors) > 1.4 and 0.49 <= min(factors) and max(factors) <= 2.01


def test_boxes_follow_flips_and_crops(small_digits):
    """One solid square per canvas: after a flip and a crop, each box is still tight around the
    pixels above threshold (or empty when the square left the window); box_valid passes through."""
    from jaxcnn.data import augment as A

    det = DetectionCanvases(small_digits, 8, canvas_size=48, min_digits=1, max_digits=1,
                            digit_scale=(0.5, 1.5), seed=4)
    examples = [det[i] for i in range(8)]
    batch = {key: np.stack([e[key] for e in examples]) for key in examples[0]}
    flip = np.arange(8) % 2 == 0
    offsets = np.random.default_rng(0).integers(0, 41, size=(8, 2))
    out = A.crop(A.flip_left_right(batch, flip), offsets, padding=20)
    np.testing.assert_array_equal(np.asarray(out["box_valid"]), batch["box_valid"])
    for image, (x0, y0, x1, y1) in zip(np.asarray(out["image"]), np.asarray(out["boxes"])[:, 0]):
        ys, xs = np.nonzero(image[..., 0] > 127)
        if ys.size:
            assert (x0, y0, x1, y1) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
        else:
            assert x0 == x1 or y0 == y1


def test_real_mnist_scaled_canvases(mnist_test):
    det = DetectionCanvases(mnist_test, 3, canvas_size=96, min_digits=2, max_digits=5, digit_scale=(0.5, 2.0))
    for i in range(3):
        canvas = det.canvas(i)
        assert ((canvas["label"] > 0) == (canvas["image"][..., 0] > 127)).all()
        valid = canvas["boxes"][canvas["box_valid"]]
        assert (valid[:, :2] >= 0).all() and (valid[:, 2:] <= 96).all() and (valid[:, 2:] > valid[:, :2]).all()


def test_variable_canvas_argument_errors(small_digits):
    with pytest.raises(ValueError, match="give both min_digits and max_digits"):
        DetectionCanvases(small_digits, 3, min_digits=1)
    with pytest.raises(ValueError, match="max_digits must be"):
        DetectionCanvases(small_digits, 3, min_digits=3, max_digits=2)
    with pytest.raises(ValueError, match="smaller than the digits"):
        DetectionCanvases(small_digits, 3, canvas_size=64, digit_scale=(0.5, 2.5))
    with pytest.raises(ValueError, match="digit_scale must be a pair"):
        DetectionCanvases(small_digits, 3, digit_scale=2.0)
