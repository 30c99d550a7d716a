"""From a config to the pieces of a run: data sources, model, task and preprocessing.

Shared by the training loop, ``evaluate_workdir`` and the ``jaxcnn`` command (``summary``).
"""

from __future__ import annotations

import inspect
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxcnn.train.parallel import with_axis_name
from jaxcnn.train.tasks import Task, task_from_config


def build_model(
    config: ml_collections.ConfigDict, num_classes: int, axis_name: str | None, model: nn.Module | None = None
) -> nn.Module:
    """``jaxcnn.models.get_model(config.model.name, **other model fields)`` for this run.

    Fills in ``num_classes`` (the task's ``num_classes`` when it has one, unless given), ``axis_name``
    (per-device BatchNorm sync) and ``dtype=bfloat16`` under ``mixed_precision`` when the model
    has those fields. A given ``model`` replaces the zoo model; it keeps its ``num_classes``.
    """
    if model is None:
        from jaxcnn.models import MODELS, get_model

        kwargs = {k: v for k, v in config.model.items() if k != "name"}
        kwargs = {
            k: (v.to_dict() if isinstance(v, ml_collections.ConfigDict) else v) for k, v in kwargs.items()
        }
        factory = MODELS.get(config.model.name)
        takes_classes = factory is not None and "num_classes" in inspect.signature(factory).parameters
        # Some models (UNet, FCN) require num_classes, so it goes in at construction.
        task_classes = make_task_for(config, num_classes).num_classes if takes_classes else None
        if task_classes is not None and "num_classes" not in kwargs:
            kwargs["num_classes"] = task_classes
        model = get_model(config.model.name, **kwargs)
    fields = set(getattr(model, "__dataclass_fields__", {}))
    updates = {}
    if config.mixed_precision:
        if "dtype" not in fields:
            raise ValueError(
                f"config.mixed_precision=True but model {config.model.name!r} has no dtype field to "
                f"compute in bfloat16"
            )
        updates["dtype"] = jnp.bfloat16
    if updates:
        model = model.clone(**updates)
    return with_axis_name(model, axis_name)


def load_sources(config: ml_collections.ConfigDict) -> tuple[Any, Any]:
    """``(train, eval)`` random-access sources of ``config.dataset`` (``jaxcnn.data.load``).

    ``dataset.examples_per_class > 0`` keeps the first that many training examples of each
    class (a balanced few-label subset, e.g. 100 per class for transfer learning);
    ``dataset.derived_train_examples > 0`` sizes a derived training set (``load``'s
    ``num_examples``); ``dataset.derived_options`` are the derived dataset's keyword arguments
    (``canvas_size``, ``min_digits`` ...), for both splits. The eval set is always the split as named.
    """
    from jaxcnn.data import Subset
    from jaxcnn.data.loading import load

    data_dir = config.dataset.data_dir or None
    kwargs = {"data_dir": data_dir, "source": config.dataset.source, "download": bool(config.dataset.get("download", False))}
    options = config.dataset.get("derived_options", None)
    if options:
        kwargs["derived_options"] = options.to_dict() if isinstance(options, ml_collections.ConfigDict) else dict(options)
    derived_examples = int(config.dataset.get("derived_train_examples", 0) or 0)
    train = load(config.dataset.name, config.dataset.train_split, num_examples=derived_examples or None, **kwargs)
    per_class = int(config.dataset.get("examples_per_class", 0) or 0)
    if per_class:
        labels = np.asarray([int(train[i]["label"]) for i in range(len(train))]) if not hasattr(train, "labels") \
            else np.asarray(train.labels)
        keep = np.sort(np.concatenate([np.flatnonzero(labels == c)[:per_class] for c in np.unique(labels)]))
        train = Subset(train, keep, split=f"{config.dataset.train_split}, {per_class} per class")
    return train, load(config.dataset.name, config.dataset.eval_split, **kwargs)


def dataset_num_classes(config: ml_collections.ConfigDict, source: Any) -> int:
    """``config.dataset.num_classes``, or the source's ``info.num_classes`` when that is 0 (0
    when neither says; a task that needs classes raises, naming ``config.dataset.num_classes``)."""
    if config.dataset.num_classes:
        return int(config.dataset.num_classes)
    info = getattr(source, "info", None)
    return int(getattr(info, "num_classes", None) or 0)


def make_task_for(config: ml_collections.ConfigDict, num_classes: int) -> Task:
    """The :class:`Task` that ``config.task`` names (:func:`jaxcnn.train.tasks.register_task`)."""
    return task_from_config(config, num_classes)


def eval_split_name(config: ml_collections.ConfigDict) -> str:
    """The ``split`` written to ``metrics.jsonl`` for evaluations: ``"test[:512]"`` -> ``"test"``."""
    return config.dataset.eval_split.split("[")[0]


def input_shape_for(
    config: ml_collections.ConfigDict, shape: tuple[int, ...] | None = None
) -> tuple[tuple[int, ...], int]:
    """``(input shape, num_classes)`` of a config's model, e.g. ``((1, 28, 28, 1), 10)`` for MNIST.

    ``shape`` (``(N, H, W, C)``) is used as given; otherwise it is ``(1, *image shape)`` of the
    first training example. ``num_classes`` comes from the config or the dataset.
    """
    if shape is not None and config.dataset.num_classes:
        return tuple(shape), int(config.dataset.num_classes)
    train, _ = load_sources(config)
    if shape is None:
        shape = (1, *np.shape(train[0]["image"]))
    return tuple(shape), dataset_num_classes(config, train)


def make_preprocessing(config: ml_collections.ConfigDict):
    """``(train_preprocess, eval_preprocess)``: ``fn(key, batch) -> batch`` run on the device.

    Training: the ``config.augment`` functions of :mod:`jaxcnn.data.augment` (with
    ``config.augment_options[name]`` keywords), then normalisation; evaluation: normalisation
    only. Normalisation is ``(image / 255 - normalize.mean) / normalize.std`` for uint8 images.
    """
    from functools import partial

    from jaxcnn.data import augment

    steps = []
    options = config.augment_options.to_dict() if config.augment_options else {}
    unknown = sorted(set(options) - set(config.augment))
    if unknown:
        raise ValueError(
            f"config.augment_options has {unknown}, which are not in config.augment={tuple(config.augment)}"
        )
    for name in config.augment:
        fn = getattr(augment, name, None)
        # Only these take (key, batch); the others (crop, affine ...) take explicit parameters.
        if not (name.startswith("random_") or name == "resize") or not callable(fn):
            raise ValueError(
                f"config.augment has {name!r}, which is not a jaxcnn.data.augment function; try "
                f"'random_crop', 'random_flip', 'random_affine'"
            )
        steps.append(partial(fn, **options.get(name, {})))
    normalize = partial(augment.normalize, mean=float(config.normalize.mean), std=float(config.normalize.std))
    return augment.compose(*steps, normalize), normalize
