"""Predictions of a trained workdir on image files or a dataset split (``jaxcnn predict``).

A task defines predictions with two methods (the detection task has them):

* ``predict(apply, batch) -> {name: (N, ...) array}``, traced: what the model predicts for
  ``batch["image"]`` (``apply`` runs the model in inference mode);
* ``write_predictions(predictions, images, out_dir, *, names, truth, class_names) -> [paths]``,
  on the host: the files (a JSON of the predictions, pictures).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np


def defines_predictions(task: Any) -> bool:
    """Whether ``task`` has ``predict`` and ``write_predictions`` (see the module docstring)."""
    return callable(getattr(task, "predict", None)) and callable(getattr(task, "write_predictions", None))


def read_images(paths: Sequence[str | os.PathLike], channels: int) -> np.ndarray:
    """Image files as one uint8 array ``(N, H, W, channels)`` (1: grayscale, 3: RGB).

    Raises:
      FileNotFoundError: a path that is not a file.
      ValueError: ``channels`` not 1 or 3, an unreadable image, or images of different sizes.
    """
    from PIL import Image, UnidentifiedImageError

    if channels not in (1, 3):
        raise ValueError(f"read_images: channels must be 1 or 3, got {channels}")
    arrays = []
    for path in paths:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"read_images: no image file {os.fspath(path)!r}")
        try:
            with Image.open(path) as image:
                array = np.asarray(image.convert("L" if channels == 1 else "RGB"), np.uint8)
        except UnidentifiedImageError as err:
            raise ValueError(f"read_images: {os.fspath(path)!r} is not an image PIL can read") from err
        arrays.append(array[..., None] if channels == 1 else array)
    shapes = sorted({a.shape for a in arrays})
    if len(shapes) != 1:
        raise ValueError(f"read_images: the images must share one size, got shapes {shapes}")
    return np.stack(arrays)


def input_channels(variables: Any, default: int = 1) -> int:
    """The input channels of a model: the third axis of its first 4-D convolution kernel."""
    for path, leaf in jax.tree_util.tree_flatten_with_path(variables.get("params", variables))[0]:
        if getattr(path[-1], "key", None) == "kernel" and np.ndim(leaf) == 4:
            return int(np.shape(leaf)[2])
    return default


def predict_workdir(
    workdir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    images: Sequence[str | os.PathLike] | None = None,
    split: str | None = None,
    checkpoint: str = "best",
    batch_size: int = 32,
    dataset: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Runs a ``train_and_evaluate`` workdir's model on image files or a split; writes the files.

    Args:
      workdir: a folder with ``config.json`` and ``checkpoints/`` whose task defines predictions.
      out_dir: where the task writes its files (detection: ``predictions.json``, ``images.json``,
        ``detections.png``).
      images: image files (one size; converted to the model's channels), or
      split: a split of the run's dataset, e.g. ``"test[:16]"`` (its true boxes are drawn too).
      checkpoint: ``"best"`` or ``"latest"``; the EMA weights when the run evaluated with them.
      batch_size: examples per compiled call.
      dataset: fields of the run's ``config.dataset`` to replace (``{"data_dir": ...}``).

    Returns:
      ``{"step", "checkpoint", "num_images", "images_per_second", "files": [paths]}``; the files
      include ``out_dir/inference.json`` (images, seconds and images/s of the prediction pass,
      timed after one untimed batch that compiles).
    """
    from jaxcnn.train.builders import build_model, dataset_num_classes, load_sources, make_preprocessing, make_task_for
    from jaxcnn.train.detection_task import batched_predictor, predict_source
    from jaxcnn.train.evaluation import _restore_chosen
    from jaxcnn.train.resume_checks import read_config_json

    if (images is None) == (split is None):
        raise ValueError("predict_workdir: give exactly one of images (files) or split")
    if checkpoint not in ("best", "latest"):
        raise ValueError(f"predict_workdir: checkpoint must be 'best' or 'latest', got {checkpoint!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"predict_workdir: batch_size must be an int >= 1, got {batch_size!r}")
    workdir = os.fspath(workdir)
    config = ml_collections.ConfigDict(read_config_json(workdir))
    with config.ignore_type():
        config.dataset.update(dataset or {})
        if split is not None:
            config.dataset.eval_split = split
    num_classes = int(config.dataset.num_classes or 0)
    source = None
    if split is not None or not num_classes:
        train_source, source = load_sources(config)
        num_classes = dataset_num_classes(config, train_source)
    task = make_task_for(config, num_classes)
    if not defines_predictions(task):
        raise ValueError(f"predict_workdir: the {config.task!r} task of {workdir!r} defines no predictions "
                         f"(predict and write_predictions methods)")
    model = build_model(config, num_classes, axis_name=None)
    step, variables, _ = _restore_chosen(os.path.join(workdir, "checkpoints"), checkpoint)
    use_ema = bool(config.ema_decay and config.eval_use_ema and variables["ema_params"] is not None)
    model_variables = {"params": variables["ema_params"] if use_ema else variables["params"]}
    if variables.get("batch_stats"):
        model_variables["batch_stats"] = variables["batch_stats"]
    model_variables = jax.tree.map(jnp.asarray, model_variables)
    _, preprocess = make_preprocessing(config)

    truth = None
    if images is not None:
        pixels = read_images(images, input_channels(model_variables))
        names = [os.fspath(p) for p in images]
        source = [{"image": image} for image in pixels]
    else:
        pixels = np.stack([np.asarray(source[i]["image"]) for i in range(len(source))])
        names = [f"{split}#{i}" for i in range(len(source))]
        first = source[0]
        if all(k in first for k in ("boxes", "classes", "box_valid")):
            truth = {k: np.stack([np.asarray(source[i][k]) for i in range(len(source))])
                     for k in ("boxes", "classes", "box_valid")}
    batch_size = min(batch_size, len(source))
    predictor = batched_predictor(task, model)
    # One batch first, untimed: the timed pass below measures inference, not compilation.
    predict_source(task, model, model_variables, [source[i] for i in range(batch_size)], preprocess,
                   batch_size=batch_size, predictor=predictor)
    start = time.perf_counter()
    predictions = predict_source(task, model, model_variables, source, preprocess,
                                 batch_size=batch_size, predictor=predictor)
    seconds = time.perf_counter() - start
    info = getattr(source, "info", None)
    files = task.write_predictions(predictions, pixels, os.fspath(out_dir), names=names, truth=truth,
                                   class_names=getattr(info, "class_names", None))
    # Throughput end to end after compilation: host batching, preprocessing, the model, the
    # post-processing (NMS) and the copy back; experiments.results reports it beside mAP.
    inference = {"num_images": len(source), "batch_size": batch_size, "seconds": seconds,
                 "images_per_second": len(source) / max(seconds, 1e-9), "backend": jax.default_backend(),
                 "step": step, "checkpoint": checkpoint}
    inference_path = os.path.join(os.fspath(out_dir), "inference.json")
    with open(inference_path, "w") as f:
        json.dump(inference, f, indent=2)
    files.append(inference_path)
    return {"step": step, "checkpoint": checkpoint, "num_images": len(source),
            "images_per_second": inference["images_per_second"], "files": files}
