"""Classification and segmentation metrics: accuracy, confusion matrix, IoU.

All are jit-safe (shapes are static, counts are scatter-adds). For a metric over a whole
data set, sum :func:`confusion_matrix` over batches and call :func:`iou_from_confusion_matrix`
once; averaging per-batch IoUs is not the data set's IoU.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxcnn.functional import _arguments as args
from jaxcnn.functional.losses import class_axis


def _check_ignore_index(ignore_index: Any, op: str) -> int | None:
    if ignore_index is None:
        return None
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, (int, np.integer)):
        raise TypeError(f"{op}: ignore_index must be an int or None, got {ignore_index!r}")
    return int(ignore_index)


def _integer(x: Any, name: str, op: str, hint: str = "") -> jnp.ndarray:
    x = args.as_array(x, name, op)
    if not jnp.issubdtype(x.dtype, jnp.integer):
        raise TypeError(f"{op}: {name} must be integer class indices, got dtype {x.dtype} (shape {tuple(x.shape)}){hint}")
    return x


def accuracy(
    scores: Any, labels: Any, *, ignore_index: int | None = None, layout: str = "NHWC"
) -> jnp.ndarray:
    """Fraction of positions whose top-scoring class (``argmax``, first on ties) is the label.

    Args:
      scores: floating class scores (logits or probabilities), ``(N, K)`` or
        ``(N, *spatial, K)`` for ``layout="NHWC"`` / ``(N, K, *spatial)`` for ``"NCHW"``; or
        integer predictions of the shape of ``labels``.
      labels: integer class indices, the shape of ``scores`` without the class axis.
      ignore_index: labels equal to it are left out (NaN if all are).
      layout: where the class axis of floating ``scores`` is.

    Returns:
      A float32 scalar in ``[0, 1]``.
    """
    op = "accuracy"
    scores = args.as_array(scores, "scores", op)
    labels = _integer(labels, "labels", op)
    ignore_index = _check_ignore_index(ignore_index, op)
    if jnp.issubdtype(scores.dtype, jnp.integer):
        if scores.shape != labels.shape:
            raise ValueError(
                f"{op}: integer predictions must have the shape of labels {tuple(labels.shape)}, got "
                f"{tuple(scores.shape)}"
            )
        axis = None  # already predictions
    else:
        args.check_floating(scores, "scores", op)
        if scores.ndim < 1:
            raise ValueError(f"{op}: scores must have a class axis, got a scalar")
        axis = class_axis(scores.ndim, layout, op)
        expected = tuple(s for a, s in enumerate(scores.shape) if a != axis)
        if tuple(labels.shape) != expected:
            raise ValueError(
                f"{op}: labels must have the shape of scores without the class axis {axis} (layout "
                f"{layout}), i.e. {expected}; got labels of shape {tuple(labels.shape)} for scores "
                f"of shape {tuple(scores.shape)}"
            )
    return _accuracy(scores, labels, axis=axis, ignore_index=ignore_index)


@functools.partial(jax.jit, static_argnames=("axis", "ignore_index"))
def _accuracy(scores, labels, *, axis, ignore_index):
    predictions = scores if axis is None else jnp.argmax(scores, axis=axis)
    correct = (predictions == labels).astype(jnp.float32)
    if ignore_index is None:
        return jnp.mean(correct)
    keep = (labels != ignore_index).astype(jnp.float32)
    return jnp.sum(correct * keep) / jnp.sum(keep)


def confusion_matrix(
    predictions: Any, labels: Any, num_classes: int, *, ignore_index: int | None = None
) -> jnp.ndarray:
    """Counts of (true class, predicted class) pairs.

    ``cm[i, j]`` is the number of positions whose label is ``i`` and whose prediction is
    ``j``: rows are the true class, columns the predicted class (scikit-learn's convention),
    so ``cm.sum(1)`` counts each class in the labels and ``diag(cm)`` the correct ones.

    Args:
      predictions: integer class indices, any shape (e.g. ``argmax`` of the logits).
      labels: integer class indices, the shape of ``predictions``.
      num_classes: ``K >= 1``, a Python int.
      ignore_index: labels equal to it are not counted (e.g. a void label 255).

    A concrete label or prediction outside ``[0, K)`` (other than ``ignore_index``) raises
    ``ValueError`` naming it and its position. Under ``jit``/``vmap`` (traced values, which
    cannot be checked) such positions are not counted.

    Returns:
      ``(K, K)`` int32 counts.
    """
    op = "confusion_matrix"
    hint = "; for logits use predictions = jnp.argmax(logits, axis=class_axis)"
    predictions = _integer(predictions, "predictions", op, hint)
    labels = _integer(labels, "labels", op)
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
        raise ValueError(f"{op}: num_classes must be a positive int, got {num_classes!r}")
    k = int(num_classes)
    ignore_index = _check_ignore_index(ignore_index, op)
    if predictions.shape != labels.shape:
        raise ValueError(
            f"{op}: predictions of shape {tuple(predictions.shape)} and labels of shape "
            f"{tuple(labels.shape)} must have the same shape"
        )
    args.check_label_range(labels, k, op, ignore_index=ignore_index)
    args.check_label_range(predictions, k, op, name="predictions")
    return _confusion_matrix(predictions, labels, k=k, ignore_index=ignore_index)


@functools.partial(jax.jit, static_argnames=("k", "ignore_index"))
def _confusion_matrix(predictions, labels, *, k, ignore_index):
    p = predictions.reshape(-1).astype(jnp.int32)
    t = labels.reshape(-1).astype(jnp.int32)
    valid = (p >= 0) & (p < k) & (t >= 0) & (t < k)
    if ignore_index is not None:
        valid = valid & (t != ignore_index)
    # Invalid positions scatter to index k*k, which mode="drop" discards.
    flat = jnp.where(valid, t * k + p, k * k)
    counts = jnp.zeros((k * k,), jnp.int32).at[flat].add(1, mode="drop")
    return counts.reshape((k, k))


def iou_from_confusion_matrix(cm: Any) -> jnp.ndarray:
    """Per-class intersection over union ``TP / (TP + FP + FN)`` from a :func:`confusion_matrix`.

    ``TP = cm[k, k]``, ``FN = row sum - TP``, ``FP = column sum - TP``. A class that appears
    in neither the labels nor the predictions (``TP + FP + FN = 0``) gets NaN: its IoU is
    undefined, and :func:`mean_iou` leaves it out of the mean.

    Args:
      cm: ``(K, K)`` counts, rows the true class (as :func:`confusion_matrix` returns).

    Returns:
      ``(K,)`` float32.
    """
    op = "iou_from_confusion_matrix"
    cm = args.as_array(cm, "cm", op)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"{op}: cm must be a square (K, K) matrix, got shape {tuple(cm.shape)}")
    cm = cm.astype(jnp.float32)
    tp = jnp.diagonal(cm)
    union = jnp.sum(cm, axis=0) + jnp.sum(cm, axis=1) - tp
    return jnp.where(union > 0, tp / jnp.where(union > 0, union, 1.0), jnp.full((), jnp.nan, jnp.float32))


def iou(predictions: Any, labels: Any, num_classes: int, *, ignore_index: int | None = None) -> jnp.ndarray:
    """Per-class IoU of integer predictions against labels; ``(K,)`` float32, NaN for absent classes.

    Arguments as :func:`confusion_matrix`; see :func:`iou_from_confusion_matrix`.
    """
    return iou_from_confusion_matrix(confusion_matrix(predictions, labels, num_classes, ignore_index=ignore_index))


def mean_iou(
    predictions: Any, labels: Any, num_classes: int, *, ignore_index: int | None = None
) -> jnp.ndarray:
    """Mean of :func:`iou` over the classes present in the labels or the predictions.

    Classes absent from both (NaN IoU) are excluded; NaN when no position is counted.

    Args:
      predictions: integer class indices, e.g. ``(N, H, W)`` (``argmax`` of the logits).
      labels: integer class indices, the shape of ``predictions``.
      num_classes: ``K >= 1``, a Python int.
      ignore_index: labels equal to it are not counted.

    Returns:
      A float32 scalar.

    Raises:
      TypeError: ``predictions`` or ``labels`` is not integer.
      ValueError: the shapes differ, or ``num_classes`` is not a positive int.
    """
    per_class = iou(predictions, labels, num_classes, ignore_index=ignore_index)
    present = ~jnp.isnan(per_class)
    total = jnp.sum(jnp.where(present, per_class, 0.0))
    count = jnp.sum(present.astype(jnp.float32))
    return jnp.where(count > 0, total / jnp.maximum(count, 1.0), jnp.full((), jnp.nan, jnp.float32))
