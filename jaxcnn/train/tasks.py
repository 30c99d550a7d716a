"""What a model is trained to do: the loss and the additive statistics behind its metrics.

A task turns model outputs and a batch into

* ``loss(outputs, batch) -> ()``: the mean loss over the valid examples (float32), and
* ``statistics(outputs, batch) -> dict``: sums (loss sum, correct count, confusion matrix ...)
  that add up across batches and devices, so evaluation over a padded, sharded test set is
  exact; ``summarize(sums)`` turns them into the reported metrics.

Batches are dicts: ``"image"`` ``(N, H, W, C)``, ``"label"`` (see each task) and an optional
``"mask"`` ``(N,)`` that is 0 for padding examples (the last, partial evaluation batch).
Outputs are cast to float32 before the loss, so a bfloat16 model still has an f32 loss.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxcnn.functional.losses import cross_entropy
from jaxcnn.functional.metrics import confusion_matrix

Batch = Mapping[str, jax.Array]
TASKS = ("classification", "segmentation", "regression")


def example_weights(batch: Batch) -> jax.Array:
    """``(N,)`` float32 weights: ``batch["mask"]`` when present, else ones."""
    n = batch["image"].shape[0]
    if "mask" in batch:
        return batch["mask"].astype(jnp.float32).reshape(n)
    return jnp.ones((n,), jnp.float32)


def _weighted_cross_entropy(logits: jax.Array, labels: jax.Array, weights: jax.Array) -> jax.Array:
    """Sum of ``weights * CE``: logits ``(..., K)`` float32, labels and weights ``(...)``.

    Zero-weight positions (padding, ignored pixels) may hold any label: they are replaced by
    class 0 before the loss and masked after it, so they never produce NaN.
    """
    safe = jnp.where(weights > 0, labels, jnp.zeros_like(labels))
    per_position = cross_entropy(logits, safe, reduction="none")
    return jnp.sum(jnp.where(weights > 0, per_position, 0.0) * weights)


def _check_labels(outputs: jax.Array, labels: jax.Array, task: str, label_rank: int) -> None:
    if labels.ndim != label_rank or outputs.shape[:label_rank] != labels.shape:
        raise ValueError(
            f"{task}: outputs {tuple(outputs.shape)} and labels {tuple(labels.shape)} do not fit; "
            f"expected labels of shape {tuple(outputs.shape[:label_rank])}"
        )
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        raise TypeError(f"{task}: labels must be integers (class ids), got {labels.dtype}")


@dataclasses.dataclass(frozen=True)
class Task:
    """A loss plus additive statistics; see the module docstring."""

    name: str
    loss: Callable[[jax.Array, Batch], jax.Array]
    statistics: Callable[[jax.Array, Batch], dict[str, jax.Array]]
    summarize: Callable[[Mapping[str, Any]], dict[str, float]]


def classification_task(num_classes: int, *, with_confusion: bool | None = None) -> Task:
    """Cross-entropy on logits ``(N, K)`` with labels ``(N,)`` int; metrics loss, accuracy.

    With ``with_confusion`` (default: ``K <= 100``) the statistics also hold the ``(K, K)``
    confusion matrix (rows: truth, columns: prediction), for the end-of-run plot.
    """
    if with_confusion is None:
        with_confusion = num_classes <= 100

    def loss(outputs, batch):
        logits = outputs.astype(jnp.float32)
        _check_labels(logits, batch["label"], "classification", 1)
        w = example_weights(batch)
        return _weighted_cross_entropy(logits, batch["label"], w) / jnp.maximum(jnp.sum(w), 1.0)

    def statistics(outputs, batch):
        logits = outputs.astype(jnp.float32)
        _check_labels(logits, batch["label"], "classification", 1)
        w = example_weights(batch)
        pred = jnp.argmax(logits, axis=-1)
        stats = {
            "loss_sum": _weighted_cross_entropy(logits, batch["label"], w),
            "correct": jnp.sum((pred == batch["label"]).astype(jnp.float32) * w),
            "count": jnp.sum(w),
        }
        if with_confusion:
            # Padding rows get label -1, which ignore_index=-1 leaves out.
            labels = jnp.where(w > 0, batch["label"], -jnp.ones_like(batch["label"]))
            stats["confusion"] = confusion_matrix(pred, labels, num_classes, ignore_index=-1).astype(jnp.float32)
        return stats

    def summarize(sums):
        count = max(float(sums["count"]), 1.0)
        return {"loss": float(sums["loss_sum"]) / count, "accuracy": float(sums["correct"]) / count}

    return Task("classification", loss, statistics, summarize)


def segmentation_task(num_classes: int, ignore_label: int = -1) -> Task:
    """Per-pixel cross-entropy: logits ``(N, H, W, K)``, labels ``(N, H, W)`` int.

    Pixels whose label is ``ignore_label`` (or outside ``[0, K)``) carry no loss. Metrics: loss,
    pixel ``accuracy`` and ``mean_iou`` (mean over classes present in prediction or truth) from a
    summed ``(K, K)`` confusion matrix (rows: truth, columns: prediction).
    """

    def pixel_weights(batch):
        labels = batch["label"]
        valid = (labels != ignore_label) & (labels >= 0) & (labels < num_classes)
        w = example_weights(batch).reshape((-1,) + (1,) * (labels.ndim - 1))
        return valid.astype(jnp.float32) * w

    def loss(outputs, batch):
        logits = outputs.astype(jnp.float32)
        _check_labels(logits, batch["label"], "segmentation", 3)
        w = pixel_weights(batch)
        return _weighted_cross_entropy(logits, batch["label"], w) / jnp.maximum(jnp.sum(w), 1.0)

    def statistics(outputs, batch):
        logits = outputs.astype(jnp.float32)
        _check_labels(logits, batch["label"], "segmentation", 3)
        w = pixel_weights(batch)
        labels = jnp.where(w > 0, batch["label"], -jnp.ones_like(batch["label"]))
        pred = jnp.argmax(logits, axis=-1)
        return {
            "loss_sum": _weighted_cross_entropy(logits, batch["label"], w),
            "count": jnp.sum(w),
            # Labels -1 (padding, ignored pixels) are left out of the counts.
            "confusion": confusion_matrix(pred, labels, num_classes, ignore_index=-1).astype(jnp.float32),
        }

    def summarize(sums):
        confusion = np.asarray(sums["confusion"], np.float64)
        count = max(float(sums["count"]), 1.0)
        tp = np.diag(confusion)
        union = confusion.sum(0) + confusion.sum(1) - tp
        present = union > 0
        mean_iou = float(np.mean(tp[present] / union[present])) if present.any() else 0.0
        return {
            "loss": float(sums["loss_sum"]) / count,
            "accuracy": float(tp.sum()) / count,
            "mean_iou": mean_iou,
        }

    return Task("segmentation", loss, statistics, summarize)


def regression_task(loss_name: str = "mse") -> Task:
    """Mean squared (``"mse"``) or absolute (``"mae"``) error; outputs and ``label`` same shape
    (or outputs ``(N, 1)`` for scalar labels ``(N,)``).

    Metrics: loss, mse, mae (averaged over every output element of the valid examples).
    """
    if loss_name not in ("mse", "mae"):
        raise ValueError(f"regression_task: loss_name must be 'mse' or 'mae', got {loss_name!r}")

    def errors(outputs, batch):
        pred = outputs.astype(jnp.float32)
        target = batch["label"].astype(jnp.float32)
        if pred.ndim == target.ndim + 1 and pred.shape[-1] == 1:
            pred = pred[..., 0]  # one output per example against scalar targets: (N, 1) vs (N,)
        if pred.shape != target.shape:
            raise ValueError(
                f"regression: outputs {tuple(pred.shape)} and labels {tuple(target.shape)} must have "
                f"the same shape"
            )
        n = pred.shape[0]
        w = example_weights(batch).reshape((n,) + (1,) * (pred.ndim - 1))
        w = jnp.broadcast_to(w, pred.shape)
        return pred - target, w

    def loss(outputs, batch):
        diff, w = errors(outputs, batch)
        per = jnp.square(diff) if loss_name == "mse" else jnp.abs(diff)
        return jnp.sum(per * w) / jnp.maximum(jnp.sum(w), 1.0)

    def statistics(outputs, batch):
        diff, w = errors(outputs, batch)
        return {
            "squared_error": jnp.sum(jnp.square(diff) * w),
            "absolute_error": jnp.sum(jnp.abs(diff) * w),
            "count": jnp.sum(w),
        }

    def summarize(sums):
        count = max(float(sums["count"]), 1.0)
        mse = float(sums["squared_error"]) / count
        mae = float(sums["absolute_error"]) / count
        return {"loss": mse if loss_name == "mse" else mae, "mse": mse, "mae": mae}

    return Task("regression", loss, statistics, summarize)


def make_task(name: str, *, num_classes: int | None = None, **kwargs: Any) -> Task:
    """A task by name: ``"classification"``, ``"segmentation"`` (need ``num_classes``), ``"regression"``."""
    if name in ("classification", "segmentation"):
        if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 2:
            raise ValueError(f"make_task: task={name!r} needs num_classes >= 2, got {num_classes!r}")
        if name == "classification":
            return classification_task(num_classes)
        return segmentation_task(num_classes, **kwargs)
    if name == "regression":
        return regression_task(**kwargs)
    raise ValueError(f"make_task: unknown task={name!r}; expected one of {TASKS}")


def add_statistics(total: dict[str, np.ndarray] | None, new: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Host-side running sum of statistics dicts (float64, so long evaluations stay exact)."""
    new = {k: np.asarray(v, np.float64) for k, v in new.items()}
    if total is None:
        return new
    return {k: total[k] + new[k] for k in total}
