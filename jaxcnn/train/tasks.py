"""What a model is trained to do, as one plugin object: a :class:`Task`.

A task owns everything that depends on what the model's outputs mean: how the model is called
on a batch (``forward``), the loss, the per-step metrics computed in the compiled step, the
additive statistics behind evaluation, their host-side summary, and the evaluation extras
(plots). The engine (steps, loop, evaluation, builders) only calls these methods and never
asks a task its name, so a new task is a subclass plus one :func:`register_task` call::

    class Parity(Task):                       # is the digit even?
        name = "parity"
        def loss(self, outputs, batch):
            target = (batch["label"] % 2 == 0).astype(jnp.float32)
            return weighted_mean(optax.sigmoid_binary_cross_entropy(outputs[:, 0], target), batch)
        ...
    register_task("parity", lambda config, num_classes: Parity())   # config.task = "parity"

Batches are dicts of arrays with a leading example axis ``N``: ``"image"`` ``(N, H, W, C)``,
``"label"`` (whatever the task reads: class ids ``(N,)``, masks ``(N, H, W)``, boxes ...) and
an optional ``"mask"`` ``(N,)`` that is 0 for padding examples (the last, partial evaluation
batch). Floating outputs are cast to float32 before the loss, so a bfloat16 model still has an
f32 loss. See ``docs/training_engine.md`` for the protocol with every shape.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxcnn.functional.losses import cross_entropy
from jaxcnn.functional.metrics import confusion_matrix, iou_from_confusion_matrix

Batch = Mapping[str, Any]
Outputs = Any  # an array, or a pytree of arrays (e.g. a detector's dict of heads)
Statistics = dict[str, jax.Array]
Apply = Callable[..., Outputs]


def model_inputs(batch: Batch) -> jax.Array:
    """``batch["image"]`` as float: uint8 images are scaled to ``[0, 1]`` on the device."""
    images = batch["image"]
    if jnp.issubdtype(images.dtype, jnp.integer):
        return images.astype(jnp.float32) / 255.0
    return images


def example_weights(batch: Batch) -> jax.Array:
    """``(N,)`` float32 weights: ``batch["mask"]`` when present, else ones."""
    n = batch["image"].shape[0]
    if "mask" in batch:
        return batch["mask"].astype(jnp.float32).reshape(n)
    return jnp.ones((n,), jnp.float32)


@dataclasses.dataclass(frozen=True)
class EvaluationContext:
    """What ``Task.evaluation_extras`` may use, on the host, after an evaluation.

    Attributes:
      workdir: the run's folder (plots go to ``workdir/plots``).
      model: the linen module.
      variables: host copy of ``{"params": ..., ["batch_stats": ...]}`` as evaluated.
      eval_source: the evaluation source (``len``, ``[i] -> {"image", "label", ...}``).
      preprocess: ``preprocess(None, batch) -> batch``, the evaluation preprocessing.
      statistics: the summed evaluation statistics (float64 NumPy), or ``None`` when a saved
        checkpoint is evaluated (``evaluate_workdir``) rather than the run's final state.
    """

    workdir: str
    model: Any
    variables: Mapping[str, Any]
    eval_source: Any
    preprocess: Callable[[Any, Batch], Batch] | None
    statistics: Mapping[str, np.ndarray] | None


class Task:
    """The protocol of a task; subclass it and override what differs from the defaults.

    Methods run in the compiled step (traced, static shapes) unless said otherwise:

    * ``forward(apply, batch, key, *, train) -> outputs``: calls the model. ``apply(*args, **kwargs)``
      is ``model.apply(variables, *args, train=..., ...)`` with the step's variables, mutable
      collections and dropout key already bound. The default is ``apply(model_inputs(batch))``;
      a diffusion task draws timesteps and noise from ``key`` and calls ``apply(noisy, t)``,
      returning e.g. ``{"predicted": eps_hat, "noise": eps}``. ``key`` is a PRNG key distinct
      from the dropout key (fixed during evaluation, so evaluation is deterministic); ``train``
      is ``False`` in evaluation (``apply`` then runs the model in inference mode).
    * ``loss(outputs, batch) -> ()``: the float32 mean loss over the valid examples, the one
      that is differentiated. Under data parallelism each device computes it on its equal
      share and the engine averages.
    * ``statistics(outputs, batch) -> {name: array}``: sums over the valid examples (loss sum,
      correct count, confusion matrix ...) that add across batches and devices, so a padded,
      sharded evaluation is exact. Any shapes, fixed per task.
    * ``metrics(statistics) -> {name: ()}``: the per-step metrics of one training batch from its
      (device-summed) statistics, traced; the loop averages them over the log interval. The
      engine adds ``loss``, ``grad_norm`` and ``learning_rate`` itself.
    * ``summarize(sums) -> {name: float}`` (host): evaluation metrics from statistics summed in
      float64 over a whole pass (the ``gathered_statistics`` concatenated); must contain ``"loss"``.
    * ``evaluation_extras(context)`` (host): files beside the metrics after the final
      evaluation (plots), see :class:`EvaluationContext`. Default: nothing. It may return
      ``{name: float}``: metrics that ``evaluate_workdir`` (``jaxcnn eval``) adds to its result.

    Attributes:
      name: how configs name the task (``config.task``).
      metric_modes: ``{metric: "min" | "max"}`` for the metrics of ``summarize``.
      num_classes: what the model's ``num_classes`` is set to when the zoo model takes one, or
        ``None`` for tasks whose model output size is not a class count (regression).
    """

    name: str = "task"
    num_classes: int | None = None
    # The metrics ``summarize`` reports, each with the direction in which it improves ("min" or
    # "max"): what ``config.checkpoint.best_metric`` / ``best_mode`` are checked against.
    metric_modes: Mapping[str, str] = {"loss": "min"}
    # Statistics that are per-example rows (leading axis N) rather than sums: the engine
    # concatenates them over evaluation batches (and gathers them over devices) instead of
    # adding them, so ``summarize`` can compute metrics that are not additive (detection mAP).
    # Padding examples' rows are kept: the task masks them with its own weights.
    gathered_statistics: tuple[str, ...] = ()

    def forward(self, apply: Apply, batch: Batch, key: jax.Array, *, train: bool) -> Outputs:
        del key, train
        return apply(model_inputs(batch))

    def loss(self, outputs: Outputs, batch: Batch) -> jax.Array:
        raise NotImplementedError(f"{type(self).__name__}.loss")

    def statistics(self, outputs: Outputs, batch: Batch) -> Statistics:
        raise NotImplementedError(f"{type(self).__name__}.statistics")

    def metrics(self, statistics: Statistics) -> dict[str, jax.Array]:
        return {}

    def summarize(self, sums: Mapping[str, Any]) -> dict[str, float]:
        raise NotImplementedError(f"{type(self).__name__}.summarize")

    def evaluation_extras(self, context: EvaluationContext) -> Mapping[str, float] | None:
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, num_classes={self.num_classes!r})"


def _weighted_cross_entropy(logits: jax.Array, labels: jax.Array, weights: jax.Array) -> jax.Array:
    """Sum of ``weights * CE``: logits ``(..., K)`` float32, labels and weights ``(...)``.

    Zero-weight positions (padding, ignored pixels) may hold any label: they are replaced by
    class 0 before the loss and masked after it, so they never produce NaN.
    """
    safe = jnp.where(weights > 0, labels, jnp.zeros_like(labels))
    per_position = cross_entropy(logits, safe, reduction="none")
    return jnp.sum(jnp.where(weights > 0, per_position, 0.0) * weights)


def _logits(outputs: Any, labels: jax.Array, task: str, label_rank: int) -> jax.Array:
    """``outputs`` as float32 logits ``(*labels.shape, K)``, checked against the labels."""
    if not hasattr(outputs, "ndim"):
        raise TypeError(f"{task}: outputs must be an array of logits, got {type(outputs).__name__}")
    outputs = jnp.asarray(outputs, jnp.float32)
    _check_labels(outputs, labels, task, label_rank)
    return outputs


def _check_labels(outputs: jax.Array, labels: jax.Array, task: str, label_rank: int) -> None:
    if labels.ndim != label_rank or outputs.shape[:label_rank] != labels.shape:
        raise ValueError(
            f"{task}: outputs {tuple(outputs.shape)} and labels {tuple(labels.shape)} do not fit; "
            f"expected labels of shape {tuple(outputs.shape[:label_rank])}"
        )
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        raise TypeError(f"{task}: labels must be integers (class ids), got {labels.dtype}")


def _mean_iou(confusion: Any) -> Any:
    """Mean IoU over the classes present in prediction or truth (0 when none is): traced or NumPy.

    The per-class IoU is :func:`jaxcnn.functional.metrics.iou_from_confusion_matrix` (NaN for
    absent classes), the one IoU of the library.
    """
    per_class = iou_from_confusion_matrix(confusion)
    present = ~jnp.isnan(per_class)
    total = jnp.sum(jnp.where(present, per_class, 0.0))
    return total / jnp.maximum(jnp.sum(present.astype(jnp.float32)), 1.0)


class ClassificationTask(Task):
    """Cross-entropy on logits ``(N, K)`` with labels ``(N,)`` int; metrics loss, accuracy.

    With ``with_confusion`` (default: ``K <= 100``) the statistics also hold the ``(K, K)``
    confusion matrix (rows: truth, columns: prediction); the evaluation extras then write
    ``plots/confusion_matrix.png`` and ``.json``.
    """

    name = "classification"
    metric_modes = {"loss": "min", "accuracy": "max"}

    def __init__(self, num_classes: int, *, with_confusion: bool | None = None):
        self.num_classes = num_classes
        self.with_confusion = num_classes <= 100 if with_confusion is None else bool(with_confusion)

    def loss(self, outputs, batch):
        outputs = _logits(outputs, batch["label"], self.name, 1)
        w = example_weights(batch)
        return _weighted_cross_entropy(outputs, batch["label"], w) / jnp.maximum(jnp.sum(w), 1.0)

    def statistics(self, outputs, batch):
        outputs = _logits(outputs, batch["label"], self.name, 1)
        w = example_weights(batch)
        pred = jnp.argmax(outputs, axis=-1)
        stats = {
            "loss_sum": _weighted_cross_entropy(outputs, batch["label"], w),
            "correct": jnp.sum((pred == batch["label"]).astype(jnp.float32) * w),
            "count": jnp.sum(w),
        }
        if self.with_confusion:
            # Padding rows get label -1, which ignore_index=-1 leaves out.
            labels = jnp.where(w > 0, batch["label"], -jnp.ones_like(batch["label"]))
            stats["confusion"] = confusion_matrix(
                pred, labels, self.num_classes, ignore_index=-1
            ).astype(jnp.float32)
        return stats

    def metrics(self, statistics):
        return {"accuracy": statistics["correct"] / jnp.maximum(statistics["count"], 1.0)}

    def summarize(self, sums):
        count = max(float(sums["count"]), 1.0)
        return {"loss": float(sums["loss_sum"]) / count, "accuracy": float(sums["correct"]) / count}

    def evaluation_extras(self, context):
        if context.statistics is None or "confusion" not in context.statistics:
            return
        import json

        from jaxcnn.train.plots import plot_confusion_matrix

        plots = os.path.join(context.workdir, "plots")
        info = getattr(context.eval_source, "info", None)
        matrix = np.asarray(context.statistics["confusion"])
        plot_confusion_matrix(
            matrix,
            os.path.join(plots, "confusion_matrix.png"),
            class_names=getattr(info, "class_names", None),
            title="confusion matrix (evaluation split)",
        )
        with open(os.path.join(plots, "confusion_matrix.json"), "w") as f:
            json.dump(matrix.astype(np.int64).tolist(), f)


class SegmentationTask(Task):
    """Per-pixel cross-entropy: logits ``(N, H, W, K)``, labels ``(N, H, W)`` int.

    Pixels whose label is ``ignore_label`` (or outside ``[0, K)``) carry no loss. Metrics: loss,
    pixel ``accuracy`` and ``mean_iou`` (mean over classes present in prediction or truth) from a
    summed ``(K, K)`` confusion matrix (rows: truth, columns: prediction). The evaluation extras
    write ``plots/predicted_masks.png`` (truth beside prediction for the first examples).
    """

    name = "segmentation"
    metric_modes = {"loss": "min", "accuracy": "max", "mean_iou": "max"}

    def __init__(self, num_classes: int, ignore_label: int = -1):
        self.num_classes = num_classes
        self.ignore_label = ignore_label

    def _pixel_weights(self, batch):
        labels = batch["label"]
        valid = (labels != self.ignore_label) & (labels >= 0) & (labels < self.num_classes)
        w = example_weights(batch).reshape((-1,) + (1,) * (labels.ndim - 1))
        return valid.astype(jnp.float32) * w

    def loss(self, outputs, batch):
        outputs = _logits(outputs, batch["label"], self.name, 3)
        w = self._pixel_weights(batch)
        return _weighted_cross_entropy(outputs, batch["label"], w) / jnp.maximum(jnp.sum(w), 1.0)

    def statistics(self, outputs, batch):
        outputs = _logits(outputs, batch["label"], self.name, 3)
        w = self._pixel_weights(batch)
        labels = jnp.where(w > 0, batch["label"], -jnp.ones_like(batch["label"]))
        pred = jnp.argmax(outputs, axis=-1)
        return {
            "loss_sum": _weighted_cross_entropy(outputs, batch["label"], w),
            "count": jnp.sum(w),
            # Labels -1 (padding, ignored pixels) are left out of the counts.
            "confusion": confusion_matrix(pred, labels, self.num_classes, ignore_index=-1).astype(jnp.float32),
        }

    def metrics(self, statistics):
        confusion = statistics["confusion"]
        count = jnp.maximum(statistics["count"], 1.0)
        return {"accuracy": jnp.trace(confusion) / count, "mean_iou": _mean_iou(confusion)}

    def summarize(self, sums):
        confusion = np.asarray(sums["confusion"], np.float64)
        count = max(float(sums["count"]), 1.0)
        return {
            "loss": float(sums["loss_sum"]) / count,
            "accuracy": float(np.trace(confusion)) / count,
            "mean_iou": float(_mean_iou(confusion)),
        }

    def evaluation_extras(self, context):
        from jaxcnn.train.plots import plot_segmentation_examples

        source = context.eval_source
        examples = [source[i] for i in range(min(6, len(source)))]
        batch = {key: np.stack([np.asarray(e[key]) for e in examples]) for key in ("image", "label")}
        inputs = batch if context.preprocess is None else context.preprocess(None, dict(batch))
        logits = context.model.apply(context.variables, model_inputs(inputs), train=False)
        plot_segmentation_examples(
            batch["image"], batch["label"], np.asarray(jnp.argmax(logits, axis=-1)),
            os.path.join(context.workdir, "plots", "predicted_masks.png"),
            num_classes=self.num_classes, title="evaluation examples",
        )


class RegressionTask(Task):
    """Mean squared (``"mse"``) or absolute (``"mae"``) error; outputs and ``label`` same shape
    (or outputs ``(N, 1)`` for scalar labels ``(N,)``).

    Metrics: loss, mse, mae (averaged over every output element of the valid examples).
    """

    name = "regression"
    metric_modes = {"loss": "min", "mse": "min", "mae": "min"}

    def __init__(self, loss_name: str = "mse"):
        if loss_name not in ("mse", "mae"):
            raise ValueError(f"regression_task: loss_name must be 'mse' or 'mae', got {loss_name!r}")
        self.loss_name = loss_name

    def _errors(self, outputs, batch):
        pred = jnp.asarray(outputs, jnp.float32)
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
        return pred - target, jnp.broadcast_to(w, pred.shape)

    def loss(self, outputs, batch):
        diff, w = self._errors(outputs, batch)
        per = jnp.square(diff) if self.loss_name == "mse" else jnp.abs(diff)
        return jnp.sum(per * w) / jnp.maximum(jnp.sum(w), 1.0)

    def statistics(self, outputs, batch):
        diff, w = self._errors(outputs, batch)
        return {
            "squared_error": jnp.sum(jnp.square(diff) * w),
            "absolute_error": jnp.sum(jnp.abs(diff) * w),
            "count": jnp.sum(w),
        }

    def metrics(self, statistics):
        count = jnp.maximum(statistics["count"], 1.0)
        return {"mse": statistics["squared_error"] / count, "mae": statistics["absolute_error"] / count}

    def summarize(self, sums):
        count = max(float(sums["count"]), 1.0)
        mse = float(sums["squared_error"]) / count
        mae = float(sums["absolute_error"]) / count
        return {"loss": mse if self.loss_name == "mse" else mae, "mse": mse, "mae": mae}


def classification_task(num_classes: int, *, with_confusion: bool | None = None) -> ClassificationTask:
    """A :class:`ClassificationTask`."""
    return ClassificationTask(num_classes, with_confusion=with_confusion)


def segmentation_task(num_classes: int, ignore_label: int = -1) -> SegmentationTask:
    """A :class:`SegmentationTask`."""
    return SegmentationTask(num_classes, ignore_label)


def regression_task(loss_name: str = "mse") -> RegressionTask:
    """A :class:`RegressionTask`."""
    return RegressionTask(loss_name)


# -- the registry: config.task -> Task ---------------------------------------------------------

TaskFactory = Callable[[Any, int], Task]
_REGISTRY: dict[str, TaskFactory] = {}


def register_task(name: str, factory: TaskFactory, *, replace: bool = False) -> None:
    """Makes ``config.task = name`` build ``factory(config, num_classes)``.

    Args:
      name: the task's name in configs.
      factory: ``(config: ml_collections.ConfigDict, num_classes: int) -> Task``; it reads any
        option it needs from the config (``num_classes`` is the dataset's, 0 when unknown).
      replace: allow replacing an existing registration (otherwise a ``ValueError``).
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"register_task: name must be a non-empty string, got {name!r}")
    if not callable(factory):
        raise TypeError(f"register_task: factory must be callable, got {type(factory).__name__}")
    if name in _REGISTRY and not replace:
        raise ValueError(f"register_task: task {name!r} is already registered; pass replace=True")
    _REGISTRY[name] = factory


def registered_tasks() -> tuple[str, ...]:
    """The names ``config.task`` accepts, in registration order."""
    return tuple(_REGISTRY)


def _needs_classes(task: str, config: Any, num_classes: int) -> int:
    if num_classes < 2:
        raise ValueError(
            f"config.task={task!r} needs config.dataset.num_classes >= 2 (or a dataset that states "
            f"its number of classes), got {num_classes}"
        )
    return num_classes


register_task("classification", lambda config, k: classification_task(_needs_classes("classification", config, k)))
register_task("segmentation", lambda config, k: segmentation_task(_needs_classes("segmentation", config, k)))
register_task("regression", lambda config, k: regression_task(config.get("regression_loss", "mse")))

# The built-in task names (``registered_tasks()`` also lists those registered later).
TASKS = registered_tasks()


def task_from_config(config: Any, num_classes: int) -> Task:
    """The :class:`Task` that ``config.task`` names, through the registry."""
    factory = _REGISTRY.get(config.task)
    if factory is None:
        raise ValueError(f"config.task={config.task!r} is not one of {registered_tasks()} (see register_task)")
    task = factory(config, num_classes)
    if not isinstance(task, Task):
        raise TypeError(
            f"the factory registered for task {config.task!r} returned {type(task).__name__}, not a Task"
        )
    return task


def make_task(name: str, *, num_classes: int | None = None, **kwargs: Any) -> Task:
    """A built-in task by name: ``"classification"``, ``"segmentation"`` (need ``num_classes``),
    ``"regression"`` (keyword ``loss_name``)."""
    if name in ("classification", "segmentation"):
        if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 2:
            raise ValueError(f"make_task: task={name!r} needs num_classes >= 2, got {num_classes!r}")
        if name == "classification":
            return classification_task(num_classes)
        return segmentation_task(num_classes, **kwargs)
    if name == "regression":
        return regression_task(**kwargs)
    raise ValueError(f"make_task: unknown task={name!r}; expected one of {TASKS}")


def add_statistics(
    total: dict[str, np.ndarray] | None, new: Mapping[str, Any], gathered: tuple[str, ...] = ()
) -> dict[str, np.ndarray]:
    """Host-side running sum of statistics dicts (float64, so long evaluations stay exact);
    the ``gathered`` ones (``Task.gathered_statistics``) are concatenated along axis 0."""
    new = {k: np.asarray(v) if k in gathered else np.asarray(v, np.float64) for k, v in new.items()}
    if total is None:
        return new
    return {k: np.concatenate([total[k], new[k]]) if k in gathered else total[k] + new[k] for k in total}
