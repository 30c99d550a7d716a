"""Checks of a config against the data it will train on, made at start before anything is written.

:func:`jaxcnn.train.validate_config` checks each field on its own; what needs the files (an
explicit data folder that does not exist, labels beyond ``dataset.num_classes``, test images
of another shape than the training ones) is checked here, right after the data is loaded and
before a step is compiled or a file written. The identity of the data (name, split, size,
folder and a CRC-32 of its first examples) is saved in each checkpoint, so a resume that
would read other data (``dataset.data_dir`` pointing at Fashion-MNIST files named as MNIST)
is refused.
"""

from __future__ import annotations

import os
import zlib
from typing import Any

import ml_collections
import numpy as np

# Examples hashed into a dataset's fingerprint: enough to tell datasets apart, cheap to read.
FINGERPRINT_EXAMPLES = 64


class ConfigValueError(ValueError):
    """A config value that cannot work with this data; the message names the field, the value
    and what is allowed (the CLI exits with code 2)."""


def check_data_dir(config: ml_collections.ConfigDict) -> None:
    """An explicit ``dataset.data_dir`` must exist (no silent fallback to ``$JAXCNN_DATA_DIR``)."""
    data_dir = config.dataset.data_dir
    if data_dir and not os.path.isdir(os.path.expanduser(data_dir)):
        raise ConfigValueError(
            f"config.dataset.data_dir={data_dir!r} is not a folder; give an existing folder, or '' to use "
            f"$JAXCNN_DATA_DIR and the download cache"
        )


def data_folder(source: Any) -> str | None:
    """The folder (or tfds data dir) a source was read from, as its ``info.location`` says."""
    return getattr(getattr(source, "info", None), "location", None)


def _labels(source: Any) -> np.ndarray | None:
    labels = getattr(source, "labels", None)
    if labels is None and hasattr(source, "source") and hasattr(source, "indices"):  # a Subset
        parent = _labels(source.source)
        return None if parent is None else np.asarray(parent)[np.asarray(source.indices)]
    return None if labels is None else np.asarray(labels)


def check_sources(config: ml_collections.ConfigDict, train: Any, test: Any, num_classes: int) -> None:
    """Raises :class:`ConfigValueError` when the data cannot train the configured model.

    * test images of another shape than training images (the model would fail at the first
      evaluation, after training and checkpointing);
    * classification labels outside ``[0, num_classes)`` (they would turn the loss into NaN).
    """
    train_shape = np.shape(train[0]["image"])
    test_shape = np.shape(test[0]["image"])
    if train_shape != test_shape:
        raise ConfigValueError(
            f"config.dataset.eval_split={config.dataset.eval_split!r} has images of shape {test_shape}, but "
            f"config.dataset.train_split={config.dataset.train_split!r} has {train_shape}; the model takes one "
            f"shape: evaluate on images of the training shape"
        )
    if config.task != "classification":
        return
    for split, source in (("train_split", train), ("eval_split", test)):
        labels = _labels(source)
        if labels is None or labels.size == 0:
            continue
        low, high = int(labels.min()), int(labels.max())
        if low < 0 or high >= num_classes:
            field = "dataset.num_classes"
            raise ConfigValueError(
                f"config.{field}={num_classes} but config.dataset.{split}={getattr(config.dataset, split)!r} has "
                f"labels in [{low}, {high}]; allowed: num_classes > {high} (0: the dataset's own count)"
            )


def dataset_identity(source: Any) -> dict[str, Any]:
    """``{"name", "split", "num_examples", "fingerprint"}`` of a source (CRC-32 of its first examples)."""
    info = getattr(source, "info", None)
    crc = 0
    for i in range(min(len(source), FINGERPRINT_EXAMPLES)):
        example = source[i]
        for key in ("image", "label"):
            if key not in example:  # detection canvases have boxes, not a label
                continue
            crc = zlib.crc32(np.ascontiguousarray(np.asarray(example[key])).tobytes(), crc)
    return {
        "name": getattr(info, "name", None),
        "split": getattr(info, "split", None),
        "num_examples": len(source),
        "fingerprint": crc,
    }


def check_same_dataset(saved: dict[str, Any] | None, now: dict[str, Any], folder: str | None) -> None:
    """Refuses a resume whose training data differs from the data the checkpoint was trained on."""
    if not saved:
        return  # a checkpoint of an older jaxcnn: nothing recorded
    if saved != now:
        fields = ", ".join(f"{k}: {saved.get(k)!r} there, {now.get(k)!r} now" for k in sorted(set(saved) | set(now))
                           if saved.get(k) != now.get(k))
        raise ConfigValueError(
            f"the training data read now (from {folder}) is not the data the checkpoints were trained on "
            f"({fields}); point config.dataset.data_dir at the same files to resume"
        )
