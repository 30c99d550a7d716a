"""accuracy, confusion_matrix and IoU against naive NumPy loops and hand-computed values."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcnn.functional.metrics import accuracy, confusion_matrix, iou, iou_from_confusion_matrix, mean_iou

RNG = np.random.default_rng(0)


def _confusion_loop(pred, true, k, ignore=None):
    cm = np.zeros((k, k), np.int64)
    for p, t in zip(np.ravel(pred), np.ravel(true)):
        if ignore is not None and t == ignore:
            continue
        if 0 <= t < k and 0 <= p < k:
            cm[t, p] += 1
    return cm


def _iou_loop(pred, true, k, ignore=None):
    """IoU per class from sets of positions, NaN where the union is empty."""
    pred, true = np.ravel(pred), np.ravel(true)
    keep = np.ones(pred.shape, bool) if ignore is None else true != ignore
    keep &= (true >= 0) & (true < k) & (pred >= 0) & (pred < k)
    out = []
    for c in range(k):
        inter = np.sum((pred == c) & (true == c) & keep)
        union = np.sum(((pred == c) | (true == c)) & keep)
        out.append(inter / union if union else np.nan)
    return np.array(out)


# ----------------------------------------------------------------------------- accuracy


def test_accuracy_hand_computed():
    logits = jnp.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    np.testing.assert_allclose(accuracy(logits, jnp.array([1, 0, 0, 0])), 0.75)
    np.testing.assert_allclose(accuracy(logits, jnp.array([1, 0, 0, 1]), ignore_index=1), 0.5)
    # Ties go to the first class.
    np.testing.assert_allclose(accuracy(jnp.array([[1.0, 1.0]]), jnp.array([0])), 1.0)
    np.testing.assert_allclose(accuracy(jnp.array([2, 0, 1]), jnp.array([2, 1, 1])), 2 / 3)


def test_accuracy_segmentation_layouts_match_numpy():
    logits = RNG.normal(size=(2, 4, 3, 5)).astype(np.float32)  # NCHW
    labels = RNG.integers(0, 4, size=(2, 3, 5))
    labels[0, 0] = 255
    expected_all = np.mean(logits.argmax(1) == labels)
    keep = labels != 255
    expected_ignored = np.mean((logits.argmax(1) == labels)[keep])
    np.testing.assert_allclose(accuracy(logits, labels, layout="NCHW"), expected_all, rtol=1e-6)
    np.testing.assert_allclose(accuracy(np.moveaxis(logits, 1, -1), labels, ignore_index=255), expected_ignored, rtol=1e-6)
    np.testing.assert_allclose(jax.jit(functools.partial(accuracy, layout="NCHW"))(logits, labels), expected_all, rtol=1e-6)
    bf16 = accuracy(jnp.asarray(np.moveaxis(logits, 1, -1), jnp.bfloat16), labels)
    assert bf16.dtype == jnp.float32


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: accuracy(np.ones((4, 3), np.float32), np.zeros((3,), np.int32)), ValueError, r"accuracy: labels must have the shape of scores without the class axis 1 \(layout NHWC\), i.e. \(4,\); got labels of shape \(3,\)"),
        (lambda: accuracy(np.ones((4, 3), np.float32), np.zeros((4,), np.float32)), TypeError, r"accuracy: labels must be integer class indices, got dtype float32"),
        (lambda: accuracy(np.ones((4,), np.int32), np.zeros((3,), np.int32)), ValueError, r"integer predictions must have the shape of labels \(3,\), got \(4,\)"),
        (lambda: accuracy(np.ones((4, 3), np.float32), np.zeros((4,), np.int32), layout="NHCW"), ValueError, r"unknown layout='NHCW'"),
    ],
)
def test_accuracy_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()


# ----------------------------------------------------------------------------- confusion matrix


def test_confusion_matrix_hand_computed_rows_are_true_class():
    pred = jnp.array([0, 1, 1, 2, 2, 2])
    true = jnp.array([0, 1, 2, 2, 2, 0])
    expected = [[1, 0, 1], [0, 1, 0], [0, 1, 2]]
    cm = confusion_matrix(pred, true, 3)
    np.testing.assert_array_equal(cm, expected)
    assert cm.dtype == jnp.int32


def test_confusion_matrix_matches_loop_with_void_and_ignore():
    pred = RNG.integers(0, 5, size=(3, 6, 7))
    true = RNG.integers(0, 5, size=(3, 6, 7))
    true[0, :2] = 255  # void, out of range
    np.testing.assert_array_equal(confusion_matrix(pred, true, 5, ignore_index=255),
                                  _confusion_loop(pred, true, 5, ignore=255))
    true[0, :2] = 3
    np.testing.assert_array_equal(confusion_matrix(pred, true, 5, ignore_index=3), _confusion_loop(pred, true, 5, ignore=3))
    # Traced values cannot be checked: under jit, out-of-range positions are not counted.
    true[0, :2] = 255
    true[1, 0] = -1
    pred[2, 0, :3] = 9
    jitted = jax.jit(confusion_matrix, static_argnums=2)(pred, true, 5)
    np.testing.assert_array_equal(jitted, _confusion_loop(pred, true, 5))
    per_example = jax.vmap(lambda p, t: confusion_matrix(p, t, 5))(pred, true)
    np.testing.assert_array_equal(per_example.sum(0), _confusion_loop(pred, true, 5))


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: confusion_matrix(np.zeros(4, np.int32), np.zeros(5, np.int32), 3), ValueError, r"confusion_matrix: predictions of shape \(4,\) and labels of shape \(5,\) must have the same shape"),
        (lambda: confusion_matrix(np.zeros((4, 3), np.float32), np.zeros(4, np.int32), 3), TypeError, r"predictions must be integer class indices, got dtype float32 \(shape \(4, 3\)\); for logits use"),
        (lambda: confusion_matrix(np.zeros(4, np.int32), np.zeros(4, np.int32), 0), ValueError, r"num_classes must be a positive int, got 0"),
        (lambda: confusion_matrix(np.zeros(4, np.int32), np.zeros(4, np.int32), 3.0), ValueError, r"num_classes must be a positive int"),
        (lambda: iou_from_confusion_matrix(np.zeros((3, 2), np.int32)), ValueError, r"cm must be a square \(K, K\) matrix, got shape \(3, 2\)"),
        (lambda: mean_iou(np.zeros(4, np.int32), np.zeros(4, np.int32), 2, ignore_index="void"), TypeError, r"ignore_index must be an int or None"),
    ],
)
def test_confusion_and_iou_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()


# ----------------------------------------------------------------------------- IoU


def test_iou_hand_computed_absent_class_is_nan_and_excluded_from_mean():
    pred = jnp.array([0, 0, 1, 1])
    true = jnp.array([0, 1, 1, 1])
    # class 0: inter 1, union 2; class 1: inter 2, union 3; class 2: absent everywhere.
    per_class = iou(pred, true, 3)
    np.testing.assert_allclose(per_class[:2], [0.5, 2 / 3], rtol=1e-6)
    assert np.isnan(per_class[2])
    np.testing.assert_allclose(mean_iou(pred, true, 3), (0.5 + 2 / 3) / 2, rtol=1e-6)
    # A class only predicted (never labelled) is present: IoU 0, counted in the mean.
    np.testing.assert_allclose(iou(jnp.array([2, 1]), jnp.array([1, 1]), 3), [np.nan, 0.5, 0.0], rtol=1e-6)
    assert np.isnan(mean_iou(jnp.array([0]), jnp.array([255]), 2, ignore_index=255))


def test_confusion_matrix_refuses_concrete_out_of_range_values():
    """A label of 10 for 10 classes, or -1 that is not ignore_index, was silently dropped."""
    pred = np.zeros((2, 3), np.int32)
    true = np.array([[0, 1, 2], [3, 10, 4]])
    with pytest.raises(ValueError, match=r"confusion_matrix: labels\[1, 1\] = 10 is outside \[0, 10\)"):
        confusion_matrix(pred, true, 10)
    true[1, 1] = -1
    with pytest.raises(ValueError, match=r"labels\[1, 1\] = -1 is outside \[0, 10\) and is not ignore_index=255"):
        mean_iou(pred, true, 10, ignore_index=255)
    pred[0, 2] = 12
    with pytest.raises(ValueError, match=r"predictions\[0, 2\] = 12 is outside \[0, 10\)"):
        confusion_matrix(pred, true, 10, ignore_index=-1)


def test_iou_matches_loop_and_accumulates_over_batches():
    pred = RNG.integers(0, 4, size=(4, 5, 5))
    true = RNG.integers(0, 4, size=(4, 5, 5))
    true[true == 3] = 255  # class 3 only appears in predictions
    expected = _iou_loop(pred, true, 5, ignore=255)  # class 4 absent everywhere -> NaN
    np.testing.assert_allclose(iou(pred, true, 5, ignore_index=255), expected, rtol=1e-6)
    np.testing.assert_allclose(mean_iou(pred, true, 5, ignore_index=255), np.nanmean(expected), rtol=1e-6)
    # The data-set IoU comes from summed confusion matrices, not averaged batch IoUs.
    total = sum(confusion_matrix(pred[i], true[i], 5, ignore_index=255) for i in range(4))
    np.testing.assert_allclose(iou_from_confusion_matrix(total), expected, rtol=1e-6)
    np.testing.assert_allclose(jax.jit(mean_iou, static_argnums=2)(pred, true, 5), np.nanmean(_iou_loop(pred, true, 5)), rtol=1e-6)
