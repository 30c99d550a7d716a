"""The ``detection`` task: R-CNN family detectors trained and scored with COCO mAP by the engine.

``config.task = "detection"`` with ``config.model.name`` one of ``"RCNN"``, ``"FastRCNN"``,
``"FasterRCNN"`` (:mod:`jaxcnn.models.detection`) and a detection dataset (``"mnist_detection"``,
whose batches hold ``"image"`` ``(N, H, W, C)``, ``"boxes"`` ``(N, G, 4)``, ``"classes"``
``(N, G)`` int and ``"box_valid"`` ``(N, G)`` bool):

- ``forward``: in training the detector is called with the true boxes (they join the
  proposals, as torchvision does) and its training loss (:func:`detection_loss`, sampling
  keyed by the step's task key) is computed there; in evaluation the detector runs without
  them, its loss is computed all the same and :func:`detect` gives the fixed-size detections.
- ``loss``: the detector's training loss (the RoI head's, plus the RPN's for Faster R-CNN).
- statistics: the loss and its parts summed over valid examples (each batch's loss weighted
  by its count of valid examples), and in evaluation the detections and the ground truth of
  every example as *gathered* rows (``Task.gathered_statistics``): mAP is not a sum over
  batches, so ``summarize`` runs the COCO evaluation (:func:`jaxcnn.detection_metrics.coco_evaluate`)
  on the host over the whole evaluation split: ``mAP`` (@[.5:.95]), ``mAP50``, ``mAP75``, ``AR100``.
- evaluation extras: ``predictions.json`` (COCO results format, ``image_id`` = index in the
  evaluation split) in the workdir and ``plots/detections.png`` (true boxes dashed green,
  predictions red with class and score).

The task also defines predictions (:meth:`DetectionTask.predict`,
:meth:`DetectionTask.write_predictions`), which ``jaxcnn predict`` uses.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxcnn.train.tasks import Task, example_weights, model_inputs, register_task

DETECTION_KEYS = ("boxes", "scores", "classes", "valid")
_LOSS_PARTS = ("classification", "box_regression", "objectness", "rpn_box_regression")


class DetectionTask(Task):
    """Two-stage detection; see the module docstring.

    Args:
      num_classes: object classes (the model adds background itself).
      score_threshold, nms_threshold, max_detections: :func:`jaxcnn.models.detection.detect`'s.
    """

    name = "detection"
    metric_modes = {"loss": "min", "mAP": "max", "mAP50": "max", "mAP75": "max", "AR100": "max"}
    gathered_statistics = (
        "det_boxes", "det_scores", "det_classes", "det_valid", "gt_boxes", "gt_classes", "gt_valid", "example_valid",
    )

    def __init__(self, num_classes: int, *, score_threshold: float = 0.05, nms_threshold: float = 0.5,
                 max_detections: int = 20):
        if not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"detection task: num_classes must be an int >= 1, got {num_classes!r}")
        if not 0.0 <= float(score_threshold) <= 1.0 or not 0.0 <= float(nms_threshold) <= 1.0:
            raise ValueError(f"detection task: score_threshold={score_threshold} and nms_threshold={nms_threshold} "
                             f"must be in [0, 1]")
        if not isinstance(max_detections, int) or max_detections < 1:
            raise ValueError(f"detection task: max_detections must be an int >= 1, got {max_detections!r}")
        self.num_classes = num_classes
        self.score_threshold = float(score_threshold)
        self.nms_threshold = float(nms_threshold)
        self.max_detections = max_detections

    # -- in the compiled step -----------------------------------------------------------------

    @staticmethod
    def _targets(batch):
        for key in ("boxes", "classes", "box_valid"):
            if key not in batch:
                raise ValueError(
                    f"detection task: the batch has no {key!r} (keys {sorted(batch)}); use a detection dataset "
                    f"such as 'mnist_detection'"
                )
        valid = batch["box_valid"].astype(bool) & (example_weights(batch) > 0)[:, None]
        return batch["boxes"].astype(jnp.float32), batch["classes"].astype(jnp.int32), valid

    def _detect(self, outputs, image_size):
        from jaxcnn.models.detection import detect

        return detect(outputs, image_size, score_threshold=self.score_threshold,
                      nms_threshold=self.nms_threshold, max_detections=self.max_detections)

    def forward(self, apply, batch, key, *, train):
        from jaxcnn.models.detection import detection_loss

        images = model_inputs(batch)
        gt_boxes, gt_classes, gt_valid = self._targets(batch)
        outputs = apply(images, gt_boxes, gt_valid) if train else apply(images)
        losses = detection_loss(outputs, gt_boxes, gt_classes, gt_valid, key)
        result = {"losses": losses}
        if not train:
            result["detections"] = self._detect(outputs, images.shape[1:3])
        return result

    def loss(self, outputs, batch):
        return outputs["losses"]["loss"]

    def statistics(self, outputs, batch):
        count = jnp.sum(example_weights(batch))
        losses = outputs["losses"]
        stats = {"count": count, "loss_sum": losses["loss"] * count}
        stats.update({f"{k}_sum": losses[k] * count for k in _LOSS_PARTS if k in losses})
        if "detections" in outputs:
            d = outputs["detections"]
            gt_boxes, gt_classes, gt_valid = self._targets(batch)
            stats.update({
                "det_boxes": d["boxes"], "det_scores": d["scores"], "det_classes": d["classes"],
                "det_valid": d["valid"], "gt_boxes": gt_boxes, "gt_classes": gt_classes, "gt_valid": gt_valid,
                "example_valid": example_weights(batch) > 0,
            })
        return stats

    def metrics(self, statistics):
        count = jnp.maximum(statistics["count"], 1.0)
        return {k: statistics[f"{k}_sum"] / count for k in _LOSS_PARTS if f"{k}_sum" in statistics}

    # -- on the host --------------------------------------------------------------------------

    def summarize(self, sums):
        count = max(float(sums["count"]), 1.0)
        result = {"loss": float(sums["loss_sum"]) / count}
        result.update({k: float(sums[f"{k}_sum"]) / count for k in _LOSS_PARTS if f"{k}_sum" in sums})
        if "det_boxes" in sums:
            result.update(coco_metrics(gathered_rows(sums)))
        return result

    def predict(self, apply, batch):
        """Traced: ``{"boxes": (N, M, 4), "scores", "classes", "valid": (N, M)}`` for ``batch["image"]``."""
        images = model_inputs(batch)
        return self._detect(apply(images), images.shape[1:3])

    def write_predictions(self, predictions: Mapping[str, np.ndarray], images: np.ndarray, out_dir: str, *,
                          names: Sequence[str] | None = None, truth: Mapping[str, np.ndarray] | None = None,
                          class_names: Sequence[str] | None = None) -> list[str]:
        """Host: ``out_dir/predictions.json`` (COCO results, ``image_id`` = index), ``out_dir/images.json``
        (``[{"id", "file_name"}]`` when ``names`` are given) and ``out_dir/detections.png`` (the
        first 16 images); returns the paths."""
        from jaxcnn.detection_metrics import coco_results

        os.makedirs(out_dir, exist_ok=True)
        results = coco_results(predictions["boxes"], predictions["scores"], predictions["classes"],
                               pred_valid=predictions["valid"])
        path = os.path.join(out_dir, "predictions.json")
        with open(path, "w") as f:
            json.dump(results, f)
        paths = [path]
        if names is not None:
            names_path = os.path.join(out_dir, "images.json")
            with open(names_path, "w") as f:
                json.dump([{"id": i, "file_name": str(n)} for i, n in enumerate(names)], f, indent=1)
            paths.append(names_path)
        # The picture shows the first 16 images; the JSON holds them all.
        k = min(16, len(images))
        paths.append(plot_detections(
            np.asarray(images)[:k], {key: np.asarray(v)[:k] for key, v in predictions.items()},
            os.path.join(out_dir, "detections.png"),
            truth=None if truth is None else {key: np.asarray(v)[:k] for key, v in truth.items()},
            class_names=class_names, titles=None if names is None else list(names)[:k],
        ))
        return paths

    def evaluation_extras(self, context):
        source = context.eval_source
        if context.statistics is not None and "det_boxes" in context.statistics:
            rows = gathered_rows(context.statistics)
            predictions = {k: rows[f"det_{k}"] for k in DETECTION_KEYS}
        else:  # a saved checkpoint is evaluated: run the detector over the split again
            predictions = predict_source(self, context.model, context.variables, source, context.preprocess)
        from jaxcnn.detection_metrics import coco_results

        results = coco_results(predictions["boxes"], predictions["scores"], predictions["classes"],
                               pred_valid=predictions["valid"])
        with open(os.path.join(context.workdir, "predictions.json"), "w") as f:
            json.dump(results, f)
        n = min(8, len(source))
        examples = [source[i] for i in range(n)]
        truth = {key: np.stack([np.asarray(e[key]) for e in examples]) for key in ("boxes", "classes", "box_valid")}
        info = getattr(source, "info", None)
        plot_detections(
            np.stack([np.asarray(e["image"]) for e in examples]), {k: v[:n] for k, v in predictions.items()},
            os.path.join(context.workdir, "plots", "detections.png"), truth=truth,
            class_names=getattr(info, "class_names", None),
        )


def gathered_rows(sums: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The gathered per-example statistics of the real (not padding) evaluation examples."""
    keep = np.asarray(sums["example_valid"]).astype(bool)
    return {k: np.asarray(sums[k])[keep] for k in DetectionTask.gathered_statistics}


def coco_metrics(rows: Mapping[str, np.ndarray]) -> dict[str, float]:
    """``{"mAP", "mAP50", "mAP75", "AR100"}`` of gathered rows (COCO: -1 when there is no ground truth)."""
    from jaxcnn.detection_metrics import coco_evaluate

    result = coco_evaluate(
        rows["det_boxes"], rows["det_scores"], rows["det_classes"], rows["gt_boxes"], rows["gt_classes"],
        pred_valid=rows["det_valid"].astype(bool), gt_valid=rows["gt_valid"].astype(bool),
    )
    stats = result.stats
    return {"mAP": float(stats["AP"]), "mAP50": float(stats["AP50"]), "mAP75": float(stats["AP75"]),
            "AR100": float(stats["AR100"])}


def batched_predictor(task: Task, model: Any) -> Any:
    """``task.predict`` of ``model`` as one jitted ``(variables, batch) -> predictions``: pass it to
    several :func:`predict_source` calls to compile once."""
    return jax.jit(lambda variables, batch: task.predict(
        lambda *a, **kw: model.apply(variables, *a, train=False, **kw), batch))


def predict_source(task: Task, model: Any, variables: Mapping[str, Any], source: Any, preprocess: Any = None, *,
                   batch_size: int = 32, predictor: Any = None) -> dict[str, np.ndarray]:
    """``task.predict`` over every example of a random-access source (or a sequence of
    ``{"image": ...}`` dicts), batched and jitted; returns per-example NumPy arrays in order.
    ``predictor``: a :func:`batched_predictor` of ``task`` and ``model`` (a new one when ``None``)."""
    predict = predictor if predictor is not None else batched_predictor(task, model)
    parts = []
    for start in range(0, len(source), batch_size):
        stop = min(start + batch_size, len(source))
        images = np.stack([np.asarray(source[i]["image"]) for i in range(start, stop)])
        # Pad the last batch to the batch size: one compiled shape.
        padded = np.concatenate([images, np.zeros((start + batch_size - stop, *images.shape[1:]), images.dtype)])
        batch = {"image": padded}
        if preprocess is not None:
            batch = preprocess(None, batch)
        out = jax.device_get(predict(variables, batch))
        parts.append({k: np.asarray(v)[: stop - start] for k, v in out.items()})
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def plot_detections(images: np.ndarray, predictions: Mapping[str, np.ndarray], path: str | os.PathLike, *,
                    truth: Mapping[str, np.ndarray] | None = None, class_names: Sequence[str] | None = None,
                    titles: Sequence[str] | None = None, ncols: int = 4, min_score: float = 0.5) -> str:
    """Saves the images with their boxes: predictions red (``class score``), truth dashed green.

    Only predictions scoring at least ``min_score`` are drawn (the low-score tail that COCO
    evaluation keeps would hide the picture).

    ``images`` ``(N, H, W[, C])``; ``predictions`` ``{"boxes": (N, M, 4), "scores", "classes",
    "valid": (N, M)}``; ``truth`` ``{"boxes": (N, G, 4), "classes", "box_valid": (N, G)}``.
    """
    from jaxcnn.train.plots import _pyplot, _save

    images = np.asarray(images)
    if images.ndim == 4 and images.shape[-1] == 1:
        images = images[..., 0]
    n = images.shape[0]
    if n == 0 or np.shape(predictions["boxes"])[:1] != (n,):
        raise ValueError(f"plot_detections: images {images.shape} and predicted boxes "
                         f"{np.shape(predictions['boxes'])} must hold the same N >= 1 examples")
    names = list(class_names) if class_names is not None else None

    def label(c):
        return names[int(c)] if names is not None and 0 <= int(c) < len(names) else str(int(c))

    plt = _pyplot()
    ncols = min(ncols, n)
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.6 * ncols, 2.6 * nrows), squeeze=False)
    for ax in axes.reshape(-1):
        ax.axis("off")
    for i in range(n):
        ax = axes.reshape(-1)[i]
        # Box coordinates are pixel edges (pixel j spans [j, j + 1]); imshow's default puts pixel
        # centres at integers, which would draw every box half a pixel up and left.
        h, w = images.shape[1:3]
        ax.imshow(images[i], cmap="gray" if images.ndim == 3 else None, extent=(0, w, h, 0))
        if truth is not None:
            for box, valid in zip(np.asarray(truth["boxes"][i]), np.asarray(truth["box_valid"][i])):
                if valid:
                    x1, y1, x2, y2 = box
                    ax.add_patch(plt.Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor="lime",
                                               linestyle="--", linewidth=1.2))
        for box, score, cls, valid in zip(*(np.asarray(predictions[k][i]) for k in DETECTION_KEYS)):
            if valid and score >= min_score:
                x1, y1, x2, y2 = box
                ax.add_patch(plt.Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor="red", linewidth=1.2))
                ax.text(x1, y1, f"{label(cls)} {score:.2f}", color="white", fontsize=6, va="bottom",
                        bbox={"facecolor": "red", "alpha": 0.6, "pad": 0.5, "linewidth": 0})
        if titles is not None:
            ax.set_title(os.path.basename(str(titles[i])), fontsize=7)
    fig.suptitle(f"predicted (red, score >= {min_score:g}) and true (dashed green) boxes", fontsize=9)
    return _save(plt, fig, path)


def detection_task(num_classes: int, **kwargs: Any) -> DetectionTask:
    """A :class:`DetectionTask`."""
    return DetectionTask(num_classes, **kwargs)


def _from_config(config: Any, num_classes: int) -> DetectionTask:
    if num_classes < 1:
        raise ValueError(
            f"config.task='detection' needs config.dataset.num_classes >= 1 (or a dataset that states its number "
            f"of classes), got {num_classes}"
        )
    return detection_task(num_classes)


register_task("detection", _from_config)
