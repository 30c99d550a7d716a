"""Random-access sources: the one interface every dataset in ``jaxcnn.data`` offers.

A source is a sequence of examples. ``source[i]`` returns a dict of NumPy arrays; for image
classification that is ``{"image": uint8 (H, W, C), "label": int32 ()}``. ``len(source)`` is the
number of examples, ``source.info`` a :class:`DatasetInfo`, and ``source.get_batch(indices)``
the stacked examples ``{"image": (B, H, W, C), "label": (B,)}`` (sources backed by arrays do this
with one fancy-indexing read). Any such object works with :class:`jaxcnn.data.BatchLoader` and
with ``grain.MapDataset.source``.
"""

from __future__ import annotations

import abc
import dataclasses
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from jaxcnn.data._arguments import check_optional_int, check_str

Example = dict[str, np.ndarray]


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What a source holds.

    Attributes:
      name: dataset name, e.g. ``"mnist"``.
      split: split name, e.g. ``"train"`` or ``"test[:1000]"``.
      num_examples: ``len(source)``.
      image_shape: ``(H, W, C)`` of ``example["image"]`` (``None`` entries where it varies).
      num_classes: number of classes of ``example["label"]``, ``None`` for non-class targets.
      class_names: one name per class, or ``None``.
      source: where the examples come from: ``"idx"``, ``"tfds"``, ``"arrays"`` or ``"derived"``.
      location: the folder or file the examples were read from, if any.
      element_spec: ``{key: (shape, dtype name)}`` of one example.
    """

    name: str
    split: str
    num_examples: int
    image_shape: tuple[int | None, ...]
    num_classes: int | None = None
    class_names: tuple[str, ...] | None = None
    source: str = "arrays"
    location: str | None = None
    element_spec: Mapping[str, tuple[tuple[int | None, ...], str]] = dataclasses.field(default_factory=dict)


def check_index(index: Any, length: int, fn: str) -> int:
    """A Python int in ``[0, length)``; negative indices count from the end (like a list)."""
    if isinstance(index, bool) or not isinstance(index, numbers.Integral):
        raise TypeError(f"{fn}: index must be an int, got {index!r} ({type(index).__name__})")
    index = int(index)
    if index < -length or index >= length:
        raise IndexError(f"{fn}: index {index} is out of range for {length} examples")
    return index % length


def check_indices(indices: Any, length: int, fn: str) -> np.ndarray:
    """A 1-D int64 array of indices in ``[0, length)``."""
    array = np.asarray(indices)
    if array.ndim != 1:
        raise ValueError(f"{fn}: indices must be 1-D, got shape {array.shape}")
    if array.size == 0:
        return array.astype(np.int64)
    if not np.issubdtype(array.dtype, np.integer):
        raise TypeError(f"{fn}: indices must be integers, got dtype {array.dtype}")
    if array.min() < 0 or array.max() >= length:
        raise IndexError(
            f"{fn}: indices must lie in [0, {length}), got min {array.min()} and max {array.max()}"
        )
    return array.astype(np.int64)


def stack_examples(examples: Sequence[Example], fn: str = "stack_examples") -> Example:
    """``[{k: (...)}, ...]`` -> ``{k: (B, ...)}``; every example must have the same keys and shapes."""
    if not examples:
        raise ValueError(f"{fn}: cannot stack an empty list of examples")
    keys = examples[0].keys()
    out = {}
    for key in keys:
        try:
            out[key] = np.stack([np.asarray(ex[key]) for ex in examples])
        except (KeyError, ValueError) as err:
            shapes = sorted({np.shape(ex.get(key)) for ex in examples}, key=str)
            raise ValueError(
                f"{fn}: examples disagree on {key!r} (shapes {shapes}); only examples with equal "
                f"shapes can be batched"
            ) from err
    return out


def element_spec_of(example: Mapping[str, Any]) -> dict[str, tuple[tuple[int, ...], str]]:
    """``{key: (shape, dtype name)}`` of one example, e.g. ``{"image": ((28, 28, 1), "uint8")}``."""
    return {k: (tuple(np.shape(v)), np.asarray(v).dtype.name) for k, v in example.items()}


class RandomAccessSource(abc.ABC):
    """Base class of the sources: ``len``, ``[i] -> dict``, ``get_batch`` and ``info``."""

    info: DatasetInfo

    @abc.abstractmethod
    def __len__(self) -> int: ...

    @abc.abstractmethod
    def __getitem__(self, index: int) -> Example: ...

    def get_batch(self, indices: Sequence[int] | np.ndarray) -> Example:
        """Examples ``indices`` stacked: ``{key: (len(indices), ...)}``."""
        name = type(self).__name__
        indices = check_indices(indices, len(self), f"{name}.get_batch")
        if indices.size == 0:
            raise ValueError(f"{name}.get_batch: indices is empty")
        return stack_examples([self[int(i)] for i in indices], f"{name}.get_batch")

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]

    def __repr__(self) -> str:
        info = self.info
        return (
            f"{type(self).__name__}(name={info.name!r}, split={info.split!r}, "
            f"num_examples={len(self)}, image_shape={info.image_shape}, source={info.source!r})"
        )


class ArraySource(RandomAccessSource):
    """Examples held in memory as NumPy arrays.

    Args:
      images: ``(N, H, W)`` or ``(N, H, W, C)``; stored as ``(N, H, W, C)``. ``uint8`` in
        ``[0, 255]`` is the convention (:func:`jaxcnn.data.augment.normalize` divides integer
        images by 255 and takes float images as already in ``[0, 1]``).
      labels: ``(N, ...)``: class ids (cast to ``int32``), float targets (cast to ``float32``),
        or per-pixel maps.
      name, split: for :class:`DatasetInfo` and log messages.
      num_classes: number of classes; integer labels must lie in ``[0, num_classes)``.
      class_names: ``num_classes`` names.
      source, location: recorded in :class:`DatasetInfo` (``load`` sets ``"idx"`` and the folder).

    ``source[i]`` -> ``{"image": (H, W, C), "label": labels[i]}``.

    Example::

        source = ArraySource(np.zeros((100, 28, 28), np.uint8), np.arange(100) % 10, num_classes=10)
        source[3]["image"].shape  # (28, 28, 1)
    """

    def __init__(
        self,
        images: Any,
        labels: Any,
        *,
        name: str = "arrays",
        split: str = "train",
        num_classes: int | None = None,
        class_names: Sequence[str] | None = None,
        source: str = "arrays",
        location: str | None = None,
    ):
        fn = "ArraySource"
        images = np.asarray(images)
        labels = np.asarray(labels)
        if images.ndim == 3:
            images = images[..., None]
        if images.ndim != 4:
            raise ValueError(
                f"{fn}: images must have shape (N, H, W) or (N, H, W, C), got shape {images.shape}"
            )
        if not (np.issubdtype(images.dtype, np.integer) or np.issubdtype(images.dtype, np.floating)):
            raise TypeError(f"{fn}: images must be integer or float, got dtype {images.dtype}")
        if images.shape[0] == 0:
            raise ValueError(f"{fn}: images is empty (shape {images.shape}); a source needs at least one example")
        if labels.ndim < 1 or labels.shape[0] != images.shape[0]:
            raise ValueError(
                f"{fn}: labels must have one entry per image: images shape {images.shape}, "
                f"labels shape {labels.shape}"
            )
        if np.issubdtype(labels.dtype, np.integer):
            labels = labels.astype(np.int32, copy=False)
        elif np.issubdtype(labels.dtype, np.floating):
            labels = labels.astype(np.float32, copy=False)
        else:
            raise TypeError(f"{fn}: labels must be integer or float, got dtype {labels.dtype}")
        num_classes = check_optional_int(num_classes, "num_classes", fn, minimum=1)
        if num_classes is not None and labels.size:
            if not np.issubdtype(labels.dtype, np.integer):
                raise TypeError(f"{fn}: num_classes={num_classes} needs integer labels, got {labels.dtype}")
            low, high = int(labels.min()), int(labels.max())
            if low < 0 or high >= num_classes:
                raise ValueError(
                    f"{fn}: labels must lie in [0, num_classes={num_classes}), got min {low} and max {high}"
                )
        if class_names is not None:
            class_names = tuple(str(c) for c in class_names)
            if num_classes is None or len(class_names) != num_classes:
                raise ValueError(
                    f"{fn}: class_names has {len(class_names)} entries but num_classes={num_classes}"
                )
        self.images = images
        self.labels = labels
        self.info = DatasetInfo(
            name=check_str(name, "name", fn),
            split=check_str(split, "split", fn),
            num_examples=int(images.shape[0]),
            image_shape=tuple(int(d) for d in images.shape[1:]),
            num_classes=num_classes,
            class_names=class_names,
            source=source,
            location=location,
            element_spec={
                "image": (tuple(images.shape[1:]), images.dtype.name),
                "label": (tuple(labels.shape[1:]), labels.dtype.name),
            },
        )

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> Example:
        i = check_index(index, len(self), "ArraySource")
        return {"image": self.images[i], "label": self.labels[i]}

    def get_batch(self, indices: Sequence[int] | np.ndarray) -> Example:
        """``{"image": (B, H, W, C), "label": (B, ...)}`` in one fancy-indexing read (copies)."""
        indices = check_indices(indices, len(self), "ArraySource.get_batch")
        return {"image": self.images[indices], "label": self.labels[indices]}

    def select(self, indices: Sequence[int] | np.ndarray | slice, split: str | None = None) -> "ArraySource":
        """A new :class:`ArraySource` with the examples ``indices`` (a slice, or ints)."""
        if isinstance(indices, slice):
            idx = np.arange(len(self))[indices]
        else:
            idx = check_indices(indices, len(self), "ArraySource.select")
        info = self.info
        if idx.size == 0:
            raise ValueError(
                f"ArraySource.select: {indices!r} selects none of the {len(self)} examples of "
                f"{info.name} {info.split!r}" + (f" (split {split!r})" if split else "")
            )
        return ArraySource(
            self.images[idx],
            self.labels[idx],
            name=info.name,
            split=split or info.split,
            num_classes=info.num_classes,
            class_names=info.class_names,
            source=info.source,
            location=info.location,
        )


class Subset(RandomAccessSource):
    """The examples ``indices`` of any source, in that order (no copy of the data)."""

    def __init__(self, source: RandomAccessSource, indices: Sequence[int] | np.ndarray, split: str | None = None):
        self.source = source
        self.indices = check_indices(indices, len(source), "Subset")
        parent = getattr(source, "info", None)
        if parent is None:
            raise TypeError(f"Subset: source must have an .info (DatasetInfo), got {type(source).__name__}")
        self.info = dataclasses.replace(parent, split=split or parent.split, num_examples=len(self.indices))

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> Example:
        return self.source[int(self.indices[check_index(index, len(self), "Subset")])]

    def get_batch(self, indices: Sequence[int] | np.ndarray) -> Example:
        indices = check_indices(indices, len(self), "Subset.get_batch")
        return self.source.get_batch(self.indices[indices])


def get_batch(source: Any, indices: np.ndarray) -> Example:
    """Stacked examples ``indices`` of any random-access source (uses ``get_batch`` if present)."""
    if hasattr(source, "get_batch"):
        return source.get_batch(indices)
    return stack_examples([dict(source[int(i)]) for i in indices], "get_batch")
