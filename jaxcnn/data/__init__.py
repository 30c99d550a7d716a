"""Datasets and input pipelines (standalone: imports no model code).

Sources (random access, ``[i] -> {"image": uint8 (H, W, C), "label": int32 ()}``, ``.info``):
``load`` (IDX files or tfds), ``ArraySource`` (NumPy arrays), ``TfdsSource``, and the derived
``SegmentationCanvases`` / ``DetectionCanvases`` / ``RotatedDigits``. Batches: ``BatchLoader``
(grain; deterministic per-epoch shuffling, sharding over processes, resumable iterator).
Devices: ``data_sharding``, ``shard_batch``, ``prefetch_to_device``. Augmentations live in
``jaxcnn.data.augment``.
"""

from jaxcnn.data import augment
from jaxcnn.data.derived import (
    DetectionCanvases,
    DigitCanvases,
    RotatedDigits,
    SegmentationCanvases,
    rotate_image,
)
from jaxcnn.data.device import DevicePrefetchIterator, data_sharding, prefetch_to_device, shard_batch
from jaxcnn.data.idx import (
    IDX_DATASETS,
    ChecksumError,
    DatasetChecksumWarning,
    DownloadError,
    IdxFormatError,
    download_idx,
    read_idx,
    verify_checksum,
    write_idx,
)
from jaxcnn.data.loading import DatasetNotFoundError, load
from jaxcnn.data.pipeline import BatchIterator, BatchLoader, epoch_permutation
from jaxcnn.data.sources import ArraySource, DatasetInfo, RandomAccessSource, Subset
from jaxcnn.data.tfds_source import TfdsSource

__all__ = [
    "ArraySource", "BatchIterator", "BatchLoader", "ChecksumError", "DatasetChecksumWarning", "DatasetInfo",
    "DatasetNotFoundError", "DetectionCanvases", "DevicePrefetchIterator", "DigitCanvases",
    "DownloadError", "IDX_DATASETS", "IdxFormatError", "RandomAccessSource", "RotatedDigits",
    "SegmentationCanvases", "Subset", "TfdsSource", "augment", "data_sharding", "download_idx",
    "epoch_permutation", "load", "prefetch_to_device", "read_idx", "rotate_image", "shard_batch",
    "verify_checksum", "write_idx",
]
