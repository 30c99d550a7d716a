"""``load(name, split)``: one entry point over the IDX files and tensorflow-datasets."""

from __future__ import annotations

import logging
import os

from jaxcnn.data import idx
from jaxcnn.data._arguments import check_bool, check_choice, check_int, check_str
from jaxcnn.data.sources import ArraySource, RandomAccessSource

logger = logging.getLogger("jaxcnn.data")

SOURCES = ("auto", "idx", "tfds")


DERIVED_TASKS = ("segmentation", "detection", "rotation")


def _derive(task: str, digits: RandomAccessSource, num_examples: int | None,
            options: dict | None = None) -> RandomAccessSource:
    """The ``<digits>_<task>`` dataset built from a digits source (default: one example per digit);
    ``options`` are keyword arguments of the derived dataset's class."""
    from jaxcnn.data.derived import DetectionCanvases, RotatedDigits, SegmentationCanvases

    num_examples = len(digits) if num_examples is None else num_examples
    cls = {"segmentation": SegmentationCanvases, "detection": DetectionCanvases}.get(task, RotatedDigits)
    options = dict(options or {})
    if "digit_scale" in options and options["digit_scale"] is not None:
        options["digit_scale"] = tuple(options["digit_scale"])  # JSON configs give a list
    try:
        return cls(digits, num_examples, **options)
    except TypeError as err:
        raise TypeError(f"load: derived_options {sorted(options)} do not fit {cls.__name__}: {err}") from err


class DatasetNotFoundError(FileNotFoundError):
    """No source could provide the dataset; the message lists every place looked."""


def load(name: str, split: str, *, data_dir: str | os.PathLike | None = None, source: str = "auto",
         download: bool = False, num_examples: int | None = None, verify: str = "warn",
         derived_options: dict | None = None) -> RandomAccessSource:
    """A random-access source of ``name``/``split``: ``[i] -> {"image": uint8 (H, W, C), "label": int32 ()}``.

    Args:
      name: ``"mnist"`` or ``"fashion_mnist"`` (IDX files or tfds), or any tfds image dataset
        (``"cifar10"``, ``"mnist:3.0.1"``; tfds only). A suffix ``_segmentation``,
        ``_detection`` or ``_rotation`` (``"mnist_segmentation"``) derives, from the digits of
        that split, one 64x64 canvas per digit (:class:`SegmentationCanvases`,
        :class:`DetectionCanvases`, seed 0) or rotated digits with the angle as the target
        (:class:`RotatedDigits`, within +/-45 degrees).
      split: ``"train"`` or ``"test"``, optionally sliced tfds-style: ``"train[:1000]"``,
        ``"train[90%:]"``.
      data_dir: for IDX, a folder holding ``<name>/train-images-idx3-ubyte[.gz]`` ... or the files
        directly; for tfds, its data folder. Searched before ``$JAXCNN_DATA_DIR``.
      source: ``"idx"`` (local IDX files, MNIST family only), ``"tfds"`` (``tfds.data_source``) or
        ``"auto"``: IDX files if found, else a prepared tfds dataset, else a download when allowed.
      download: allow fetching over the network: IDX files with MD5 verification into
        ``data_dir`` (or ``$JAXCNN_DATA_DIR``, or ``~/.cache/jaxcnn/datasets``), or tfds' own
        download. Off by default so an offline run fails fast with a clear message.
      num_examples: derived datasets only: how many examples to derive from the split's digits
        (default one per digit; ``4 * len(digits)`` shows each digit at 4 angles or in 4 canvases).
      derived_options: derived datasets only: keyword arguments of their class, e.g.
        ``{"canvas_size": 96, "min_digits": 1, "max_digits": 5, "digit_scale": (0.5, 2.0)}``
        for :class:`DetectionCanvases`.
      verify: IDX files only: how to treat files whose MD5 differs from the published ones
        (computed once per file, then remembered by path, size and mtime in
        ``~/.cache/jaxcnn/checksums.json``). ``"warn"`` (default): a
        :class:`DatasetChecksumWarning` naming them; ``"error"``: :class:`ChecksumError`;
        ``"off"``: no check (files you made). Files that are another dataset's published ones
        (Fashion-MNIST loaded as ``"mnist"``) are refused unless ``"off"``.

    Returns:
      an :class:`ArraySource` (IDX, in memory) or a :class:`TfdsSource`; ``.info`` tells which.

    Raises:
      DatasetNotFoundError: listing every place looked and how to provide the files.
      IdxFormatError: a found IDX file is truncated or corrupted (the message names it).
      ChecksumError: see ``verify``.

    Example::

        train = load("mnist", "train")          # uses $JAXCNN_DATA_DIR/mnist/*.gz
        train[0]["image"].shape, train.info.num_classes   # (28, 28, 1), 10
    """
    fn = "load"
    check_str(name, "name", fn)
    check_str(split, "split", fn)
    check_choice(source, "source", fn, SOURCES)
    check_bool(download, "download", fn)
    check_choice(verify, "verify", fn, idx.VERIFY_POLICIES)
    base, _, task = name.rpartition("_")
    derived = task in DERIVED_TASKS and bool(base)
    if num_examples is not None:
        check_int(num_examples, "num_examples", fn, minimum=1)
        if not derived:
            raise ValueError(f"{fn}: num_examples applies to derived datasets (names ending in "
                             f"{', '.join('_' + t for t in DERIVED_TASKS)}), got name={name!r}")
    if derived_options and not derived:
        raise ValueError(f"{fn}: derived_options apply to derived datasets, got name={name!r}")
    if derived:
        digits = load(base, split, data_dir=data_dir, source=source, download=download, verify=verify)
        return _derive(task, digits, num_examples, derived_options)
    is_idx = name in idx.IDX_DATASETS
    if source == "idx" and not is_idx:
        raise ValueError(
            f"{fn}: source='idx' supports {sorted(idx.IDX_DATASETS)}, got name={name!r}; use source='tfds'"
        )
    looked: list[str] = []

    if is_idx and source in ("auto", "idx"):
        found = _load_idx(name, split, data_dir, looked, verify)
        if found is not None:
            return found
        if download and source == "idx":
            idx.download_idx(name, data_dir)
            found = _load_idx(name, split, data_dir, [], verify)
            if found is not None:
                return found

    if source in ("auto", "tfds"):
        # In "auto" mode tfds may only download for datasets the IDX path cannot fetch itself.
        tfds_download = download and not (is_idx and source == "auto")
        try:
            from jaxcnn.data.tfds_source import TfdsSource

            return TfdsSource(name, split, data_dir=data_dir, download=tfds_download)
        except ImportError as err:
            looked.append(f"tfds: not importable ({err})")
        except Exception as err:  # tfds raises many kinds of errors for a missing dataset.
            looked.append(f"tfds data_source({name!r}, split={split!r}) in {_tfds_dir(name, data_dir)}: "
                          f"{type(err).__name__}: {_first_line(err)}")
            if source == "tfds" and not _looks_missing(err):
                raise

    if is_idx and source == "auto" and download:
        idx.download_idx(name, data_dir)
        found = _load_idx(name, split, data_dir, [], verify)
        if found is not None:
            return found

    raise DatasetNotFoundError(_not_found_message(name, split, looked, is_idx))


def _load_idx(name: str, split: str, data_dir, looked: list[str], verify: str) -> ArraySource | None:
    spec = idx.IDX_DATASETS[name]
    base, _ = idx.parse_split(split, spec.num_examples)
    paths, places = idx.find_idx_files(name, base, data_dir)
    looked.extend(f"IDX: {p}" for p in places)
    if paths is None:
        return None
    source = idx.load_idx_split(*paths, name=name, split=base, class_names=spec.class_names)
    # After parsing, so a damaged file is reported as such rather than as a checksum mismatch.
    idx.check_published(name, paths, verify)
    # Percent bounds count the examples the files hold, not the published size of the split.
    _, part = idx.parse_split(split, {base: len(source)})
    if part != slice(None):
        source = source.select(part, split=split)
    logger.info("Loaded %s[%s] from IDX files in %s (%d examples)", name, split, paths[0].parent, len(source))
    return source


def _tfds_dir(name: str, data_dir) -> str:
    if data_dir is not None:
        return str(data_dir)
    try:
        from tensorflow_datasets.core.utils import file_utils

        return ", ".join(str(d) for d in file_utils.list_data_dirs())
    except Exception:  # Only for the message; tfds internals may move.
        return os.environ.get("TFDS_DATA_DIR", "~/tensorflow_datasets")


def _first_line(err: Exception) -> str:
    text = str(err).strip().splitlines()
    return text[0][:200] if text else ""


def _looks_missing(err: Exception) -> bool:
    return isinstance(err, (FileNotFoundError, NotImplementedError, ValueError, AssertionError))


def _not_found_message(name: str, split: str, looked: list[str], is_idx: bool) -> str:
    lines = [f"load: dataset {name!r} split {split!r} was not found. Places looked:"]
    lines += [f"  - {place}" for place in looked]
    lines.append("To provide it:")
    if is_idx:
        lines.append(
            f"  - put train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, "
            f"t10k-labels-idx1-ubyte.gz in <dir>/{name}/ and pass data_dir=<dir> or set "
            f"{idx.ENV_VAR}=<dir>;"
        )
        lines.append(f"  - or, with internet, call load({name!r}, {split!r}, download=True) (MD5-checked);")
    lines.append(
        f"  - {'or ' if is_idx else ''}prepare it for tfds in ArrayRecord format (`tfds build {name} "
        f"--file_format=array_record --data_dir=<dir>`) and pass data_dir=<dir>, source='tfds'."
    )
    return "\n".join(lines)
