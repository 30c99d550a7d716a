"""tensorflow-datasets through ``tfds.data_source``: random access, no TensorFlow at training time.

The dataset must be prepared in the ArrayRecord format in ``data_dir`` (tfds' default folder,
``~/tensorflow_datasets`` or ``$TFDS_DATA_DIR``, when ``data_dir`` is None), e.g. once with
``tfds build mnist --file_format=array_record``, or fetched by ``download=True``.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np

from jaxcnn.data._arguments import check_bool, check_str
from jaxcnn.data.sources import DatasetInfo, Example, RandomAccessSource, check_index

logger = logging.getLogger("jaxcnn.data")


class TfdsSource(RandomAccessSource):
    """A tfds dataset split as a source: ``[i] -> {"image": uint8 (H, W, C), "label": int32 ()}``.

    Args:
      name: tfds name, optionally with config/version (``"mnist"``, ``"cifar10"``, ``"mnist:3.*.*"``).
      split: tfds split, slicing included (``"train"``, ``"train[:10%]"``).
      data_dir: tfds data folder; None for tfds' default.
      download: let tfds download and prepare the dataset if it is missing (needs internet and,
        for preparation, TensorFlow).
      image_key, label_key: feature names in the tfds dataset; the output keys are always
        ``"image"`` and ``"label"``. ``label_key=None`` drops the label.

    Grayscale ``(H, W)`` images get a channel axis; other features are dropped.
    """

    def __init__(self, name: str, split: str, *, data_dir: str | os.PathLike | None = None,
                 download: bool = False, image_key: str = "image", label_key: str | None = "label"):
        import tensorflow_datasets as tfds  # Imported here: tfds is slow to import and optional.

        fn = "TfdsSource"
        check_str(name, "name", fn)
        check_str(split, "split", fn)
        check_bool(download, "download", fn)
        self._source = tfds.data_source(
            name, split=split, data_dir=None if data_dir is None else os.fspath(data_dir), download=download
        )
        features = self._source.dataset_info.features
        if image_key not in features:
            raise ValueError(f"{fn}: image_key={image_key!r} is not a feature of {name}; features: {list(features)}")
        if label_key is not None and label_key not in features:
            raise ValueError(f"{fn}: label_key={label_key!r} is not a feature of {name}; features: {list(features)}")
        self.image_key, self.label_key = image_key, label_key
        image_shape = tuple(features[image_key].shape)
        if len(image_shape) == 2:
            image_shape = (*image_shape, 1)
        num_classes = class_names = None
        if label_key is not None:
            label_feature = features[label_key]
            num_classes = getattr(label_feature, "num_classes", None)
            names = getattr(label_feature, "names", None)
            class_names = tuple(names) if names else None
        spec = {"image": (image_shape, np.dtype(features[image_key].np_dtype).name)}
        if label_key is not None:
            spec["label"] = ((), "int32" if num_classes is not None else np.dtype(features[label_key].np_dtype).name)
        self.info = DatasetInfo(
            name=name, split=split, num_examples=len(self._source), image_shape=image_shape,
            num_classes=num_classes, class_names=class_names, source="tfds",
            location=_data_dir(self._source, data_dir), element_spec=spec,
        )
        logger.info("Using tfds.data_source for %s[%s] (%d examples, data_dir=%s)",
                    name, split, len(self._source), self.info.location)

    def __len__(self) -> int:
        return len(self._source)

    def __getitem__(self, index: int) -> Example:
        return self._convert(self._source[check_index(index, len(self), "TfdsSource")])

    def _convert(self, record: dict[str, Any]) -> Example:
        image = np.asarray(record[self.image_key])
        if image.ndim == 2:
            image = image[..., None]
        out = {"image": image}
        if self.label_key is not None:
            label = np.asarray(record[self.label_key])
            out["label"] = label.astype(np.int32) if np.issubdtype(label.dtype, np.integer) else label
        return out


def _data_dir(source: Any, data_dir: Any) -> str | None:
    """The folder tfds read from (its dataset info knows), for DatasetInfo.location and logs."""
    folder = getattr(getattr(source, "dataset_info", None), "data_dir", None)
    folder = folder if folder is not None else data_dir
    return None if folder is None else str(folder)
