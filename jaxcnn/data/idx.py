"""MNIST-style IDX files: parsing, locating, checksums and download.

The IDX format (LeCun et al.): a big-endian header ``0x00 0x00 <dtype code> <ndim>``, then
``ndim`` big-endian ``uint32`` sizes, then the raw values in C order. Files may be gzipped
(detected from the content, not the name).

Layouts accepted for a dataset ``name`` under a folder ``<dir>``::

    <dir>/<name>/train-images-idx3-ubyte[.gz]   (and the three other files)
    <dir>/train-images-idx3-ubyte[.gz]          (the files directly in <dir>)

Folders searched, in order: the ``data_dir`` argument, ``$JAXCNN_DATA_DIR``, and
``~/.cache/jaxcnn/datasets`` (where :func:`download_idx` writes by default).
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import json
import logging
import math
import os
import re
import shutil
import tempfile
import urllib.request
import warnings
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from jaxcnn.data._arguments import check_float, check_str
from jaxcnn.data.sources import ArraySource

logger = logging.getLogger("jaxcnn.data")

ENV_VAR = "JAXCNN_DATA_DIR"
DEFAULT_CACHE_DIR = Path("~/.cache/jaxcnn/datasets")

# IDX type code -> big-endian NumPy dtype.
_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"
# NumPy's limit on array rank (``numpy.MAXDIMS`` is not public API).
_MAX_IDX_NDIM = 64


class IdxFormatError(ValueError):
    """An IDX file is truncated, corrupted or not an IDX file; the message names the file."""


class ChecksumError(ValueError):
    """A file's digest differs from the expected one."""


class DatasetChecksumWarning(UserWarning):
    """Dataset files differ from the published ones (a subset, a re-encoding, or another dataset)."""


class DownloadError(OSError):
    """No mirror delivered a file with the expected checksum."""


@dataclasses.dataclass(frozen=True)
class IdxDataset:
    """An MNIST-family dataset distributed as four IDX files.

    ``files[split] = (images file, labels file)`` without ``.gz``; ``md5`` is of the published
    ``.gz`` files; ``md5_uncompressed`` of their decompressed bytes, where known (a file gzipped
    again by other tools keeps these); ``mirrors`` are base URLs tried in order.
    """

    name: str
    files: dict[str, tuple[str, str]]
    num_examples: dict[str, int]
    class_names: tuple[str, ...]
    md5: dict[str, str]
    mirrors: tuple[str, ...]
    md5_uncompressed: dict[str, str] = dataclasses.field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

IDX_DATASETS: dict[str, IdxDataset] = {
    "mnist": IdxDataset(
        name="mnist",
        files=_MNIST_FILES,
        num_examples={"train": 60_000, "test": 10_000},
        class_names=tuple(str(d) for d in range(10)),
        md5={
            "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
            "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
            "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
        },
        md5_uncompressed={
            "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
            "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
            "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
            "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
        },
        mirrors=(
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
        ),
    ),
    "fashion_mnist": IdxDataset(
        name="fashion_mnist",
        files=_MNIST_FILES,
        num_examples={"train": 60_000, "test": 10_000},
        class_names=(
            "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
            "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
        ),
        md5={
            "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
            "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
            "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
        },
        mirrors=(
            "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
            "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        ),
    ),
}


# ----------------------------------------------------------------------------- parsing


def _short_shape(shape: tuple[int, ...]) -> str:
    """The shape for an error message, elided past 8 sizes (a damaged header may declare 255)."""
    if len(shape) <= 8:
        return str(shape)
    return f"({', '.join(map(str, shape[:8]))}, ... {len(shape) - 8} more)"


def parse_idx(data: bytes, path: str = "<bytes>") -> np.ndarray:
    """Decodes the bytes of an (uncompressed) IDX file; ``path`` only names it in errors."""
    if len(data) < 4:
        raise IdxFormatError(f"read_idx: {path} has {len(data)} bytes, too short for an IDX header")
    if data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise IdxFormatError(
            f"read_idx: {path} does not start with an IDX magic number (got bytes "
            f"{data[:4].hex(' ')}; expected 00 00 <type 08/09/0b/0c/0d/0e> <ndim>); "
            f"is it an IDX file, and not corrupted?"
        )
    dtype, ndim = _IDX_DTYPES[data[2]], data[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(data) < header:
        raise IdxFormatError(
            f"read_idx: {path} has a truncated header: {ndim} dimension(s) need {header} header "
            f"bytes, the file has {len(data)}"
        )
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    if ndim > _MAX_IDX_NDIM:
        raise IdxFormatError(
            f"read_idx: {path} has a damaged header: it declares {ndim} dimensions (sizes "
            f"{_short_shape(shape)}), more than the {_MAX_IDX_NDIM} an array can have; delete the "
            f"file and fetch it again"
        )
    # Python ints: a damaged header's sizes can overflow int64 and wrap round to a plausible count.
    expected = math.prod(shape) * dtype.itemsize
    found = len(data) - header
    if found != expected:
        what = "truncated" if found < expected else "longer than its header says"
        raise IdxFormatError(
            f"read_idx: {path} is {what}: shape {_short_shape(shape)} of {dtype.name} needs {expected} "
            f"data bytes after the {header}-byte header, found {found}; delete the file and fetch it again"
        )
    array = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return array.astype(dtype.newbyteorder("="))


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Reads an IDX file (gzipped or not) into a native-endian array of the header's shape.

    Raises:
      FileNotFoundError: no such file.
      IdxFormatError: bad gzip stream, bad magic number, or a size that disagrees with the header.
    """
    path = Path(path)
    data = path.read_bytes()
    if data[:2] == _GZIP_MAGIC:
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as err:
            raise IdxFormatError(
                f"read_idx: {path} is a damaged gzip file ({err}); delete it and fetch it again"
            ) from err
    return parse_idx(data, str(path))


def write_idx(path: str | os.PathLike, array: np.ndarray, *, compress: bool | None = None) -> Path:
    """Writes ``array`` as an IDX file (gzipped when ``compress`` or the name ends in ``.gz``)."""
    array = np.asarray(array)
    codes = {dt.newbyteorder("=").name: code for code, dt in _IDX_DTYPES.items()}
    if array.dtype.name not in codes:
        raise TypeError(f"write_idx: array dtype {array.dtype} has no IDX type code; use one of {sorted(codes)}")
    if not 1 <= array.ndim <= 255:
        raise ValueError(f"write_idx: array must have 1 to 255 dimensions, got shape {array.shape}")
    code = codes[array.dtype.name]
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    payload = header + array.astype(_IDX_DTYPES[code], copy=False).tobytes()
    path = Path(path)
    if compress is None:
        compress = path.suffix == ".gz"
    path.write_bytes(gzip.compress(payload, mtime=0) if compress else payload)
    return path


# ----------------------------------------------------------------------------- splits

_SPLIT_RE = re.compile(r"^(?P<base>\w+)(?:\[(?P<start>-?\d+%?)?:(?P<stop>-?\d+%?)?\])?$")


def parse_split(split: str, num_examples: dict[str, int], fn: str = "load") -> tuple[str, slice]:
    """``"train"``, ``"test[:1000]"``, ``"train[10%:]"`` -> (base split, slice of its examples).

    The slice syntax follows tfds: ints or percents, either bound optional.
    """
    check_str(split, "split", fn)
    match = _SPLIT_RE.match(split.replace(" ", ""))
    if match is None or match["base"] not in num_examples:
        raise ValueError(
            f"{fn}: split={split!r} is not understood; expected one of {sorted(num_examples)}, "
            f"optionally sliced like 'train[:1000]' or 'test[50%:]'"
        )
    base = match["base"]
    n = num_examples[base]

    def bound(text: str | None) -> int | None:
        if text is None:
            return None
        if text.endswith("%"):
            percent = int(text[:-1])
            if not -100 <= percent <= 100:
                raise ValueError(f"{fn}: split={split!r}: percent bounds must lie in [-100, 100]")
            return round(n * percent / 100)
        return int(text)

    return base, slice(bound(match["start"]), bound(match["stop"]))


# ----------------------------------------------------------------------------- locating


def candidate_dirs(data_dir: str | os.PathLike | None = None) -> list[Path]:
    """Folders searched for IDX files: ``data_dir``, ``$JAXCNN_DATA_DIR``, the download cache."""
    dirs = []
    if data_dir is not None:
        dirs.append(Path(data_dir).expanduser())
    env = os.environ.get(ENV_VAR)
    if env:
        dirs.append(Path(env).expanduser())
    dirs.append(DEFAULT_CACHE_DIR.expanduser())
    unique = []
    for d in dirs:
        if d not in unique:
            unique.append(d)
    return unique


def _find_file(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def find_idx_files(
    name: str, split: str, data_dir: str | os.PathLike | None = None
) -> tuple[tuple[Path, Path] | None, list[str]]:
    """Locates the (images, labels) files of ``name``/``split`` (base split, no slice).

    Returns ``((images_path, labels_path) or None, places looked)``; the places are written
    ``folder/{images,labels}[.gz]`` for error messages.
    """
    spec = IDX_DATASETS[name]
    images_stem, labels_stem = spec.files[split]
    looked = []
    for base in candidate_dirs(data_dir):
        for folder in (base / name, base):
            looked.append(f"{folder}/{{{images_stem},{labels_stem}}}[.gz]")
            images, labels = _find_file(folder, images_stem), _find_file(folder, labels_stem)
            if images is not None and labels is not None:
                return (images, labels), looked
    return None, looked


_CACHE: dict[tuple, np.ndarray] = {}


def _read_cached(path: Path) -> np.ndarray:
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _CACHE:
        array = read_idx(path)
        array.flags.writeable = False
        _CACHE[key] = array
    return _CACHE[key]


def load_idx_split(images_path: str | os.PathLike, labels_path: str | os.PathLike, *,
                   name: str = "idx", split: str = "train", class_names: Sequence[str] | None = None
                   ) -> ArraySource:
    """An :class:`~jaxcnn.data.ArraySource` from an images file ``(N, H, W)`` and a labels file ``(N,)``.

    The pair is checked: uint8 images of rank 3, labels of rank 1, the same ``N``, labels in
    ``[0, num_classes)`` (``num_classes = len(class_names)``, or ``max + 1`` without names).
    """
    images_path, labels_path = Path(images_path), Path(labels_path)
    images = _read_cached(images_path)
    labels = _read_cached(labels_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise IdxFormatError(
            f"load_idx_split: {images_path} must hold uint8 images of shape (N, H, W), got "
            f"{images.dtype} shape {images.shape}; are the images and labels files swapped?"
        )
    if labels.ndim != 1:
        raise IdxFormatError(
            f"load_idx_split: {labels_path} must hold labels of shape (N,), got shape {labels.shape}"
        )
    if labels.shape[0] != images.shape[0]:
        raise IdxFormatError(
            f"load_idx_split: {images_path} has {images.shape[0]} images but {labels_path} has "
            f"{labels.shape[0]} labels"
        )
    num_classes = len(class_names) if class_names is not None else int(labels.max()) + 1
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise IdxFormatError(
            f"load_idx_split: {labels_path} has labels outside [0, {num_classes}): min "
            f"{labels.min()}, max {labels.max()}"
        )
    return ArraySource(
        images, labels, name=name, split=split, num_classes=num_classes, class_names=class_names,
        source="idx", location=str(images_path.parent),
    )


# ----------------------------------------------------------------------------- checksums, download


def file_digest(path: str | os.PathLike, algorithm: str = "md5") -> str:
    """Hex digest of a file's bytes (``"md5"``, ``"sha256"`` or any ``hashlib`` name)."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_checksum(path: str | os.PathLike, *, md5: str | None = None, sha256: str | None = None,
                    name: str | None = None) -> None:
    """Raises :class:`ChecksumError` unless the file has the given digest(s); ``name`` replaces
    the path in the message."""
    if md5 is None and sha256 is None:
        raise ValueError("verify_checksum: give md5 or sha256 (or both)")
    for algorithm, expected in (("md5", md5), ("sha256", sha256)):
        if expected is None:
            continue
        got = file_digest(path, algorithm)
        if got != expected.lower():
            raise ChecksumError(
                f"verify_checksum: {name or path} has {algorithm} {got}, expected {expected.lower()}; "
                f"the file is incomplete or not the published one"
            )


VERIFY_POLICIES = ("warn", "error", "off")


def checksum_cache_path() -> Path:
    """The JSON file remembering digests by (path, size, mtime): ``~/.cache/jaxcnn/checksums.json``."""
    return DEFAULT_CACHE_DIR.expanduser().parent / "checksums.json"


_DIGESTS: dict[str, tuple[str, str]] = {}


def _digest_key(path: Path) -> str:
    stat = path.stat()
    return f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"


def _read_digest_cache(cache: Path) -> dict:
    try:
        entries = json.loads(cache.read_text())
    except (OSError, ValueError):  # Missing or damaged: digests are simply computed again.
        return {}
    return entries if isinstance(entries, dict) else {}


def _write_digest_cache(cache: Path, entries: dict) -> None:
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        handle, tmp = tempfile.mkstemp(dir=cache.parent, prefix=f".{cache.name}.")
        with os.fdopen(handle, "w") as out:
            json.dump(entries, out, indent=0, sort_keys=True)
        os.replace(tmp, cache)
    except OSError as err:  # A read-only home only costs the digests being computed next time.
        logger.debug("Could not write the checksum cache %s: %s", cache, err)


def file_md5s(path: str | os.PathLike) -> tuple[str, str]:
    """``(md5 of the file's bytes, md5 of its content)``; the content is the decompressed bytes of a
    gzip file, else the file itself. Remembered by (path, size, mtime) in memory and in
    :func:`checksum_cache_path`, so each file is hashed once."""
    path = Path(path)
    key = _digest_key(path)
    if key in _DIGESTS:
        return _DIGESTS[key]
    cache = checksum_cache_path()
    entries = _read_digest_cache(cache)
    cached = entries.get(key)
    if isinstance(cached, list) and len(cached) == 2 and all(isinstance(d, str) for d in cached):
        _DIGESTS[key] = (cached[0], cached[1])
        return _DIGESTS[key]
    data = path.read_bytes()
    raw = hashlib.md5(data).hexdigest()
    content = raw
    if data[:2] == _GZIP_MAGIC:
        try:
            content = hashlib.md5(gzip.decompress(data)).hexdigest()
        except (OSError, EOFError, zlib.error):
            content = ""  # A damaged stream: read_idx reports it, naming the file.
    _DIGESTS[key] = (raw, content)
    entries[key] = [raw, content]
    _write_digest_cache(cache, entries)
    return _DIGESTS[key]


def _published_as(stem: str, digests: tuple[str, str]) -> list[str]:
    """The known datasets whose published file ``stem`` has these digests."""
    raw, content = digests
    return [
        spec.name for spec in IDX_DATASETS.values()
        if spec.md5.get(f"{stem}.gz") == raw or spec.md5_uncompressed.get(stem) in (raw, content)
    ]


def check_published(name: str, paths: Sequence[str | os.PathLike], verify: str = "warn",
                    fn: str = "load") -> bool:
    """Compares dataset files with the published digests of ``name``; True when all match.

    A file whose digest is another known dataset's published one (Fashion-MNIST files in an
    ``mnist`` folder) raises :class:`ChecksumError` unless ``verify="off"``. A file that matches
    no published digest (a subset, a synthetic file, a re-ordered copy) raises under
    ``verify="error"`` and gives a :class:`DatasetChecksumWarning` under ``verify="warn"``.
    """
    check_str(verify, "verify", fn)
    if verify not in VERIFY_POLICIES:
        raise ValueError(f"{fn}: verify={verify!r} must be one of {VERIFY_POLICIES}")
    if verify == "off":
        return True
    spec = IDX_DATASETS[name]
    differ = []
    for path in map(Path, paths):
        stem = path.name[:-3] if path.name.endswith(".gz") else path.name
        if stem not in spec.md5_uncompressed and f"{stem}.gz" not in spec.md5:
            differ.append(f"{path} (not a file name of the published {name})")
            continue
        digests = file_md5s(path)
        owners = _published_as(stem, digests)
        if name in owners:
            continue
        if owners:
            raise ChecksumError(
                f"{fn}: {path} is the published {owners[0]} file, not {name}'s; point data_dir at "
                f"the {name} files (or pass verify='off' to load it anyway)"
            )
        differ.append(f"{path} (md5 {digests[0]})")
    if not differ:
        return True
    message = (
        f"{fn}: {len(differ)} file(s) differ from the published {name} files: " + "; ".join(differ)
        + ". They may be a subset, a re-encoding or another dataset. Pass verify='off' to silence "
        "this for files you made, verify='error' to refuse such files"
    )
    if verify == "error":
        raise ChecksumError(message)
    warnings.warn(message, DatasetChecksumWarning, stacklevel=4)
    return False


def download_file(urls: Sequence[str], destination: str | os.PathLike, *, md5: str | None = None,
                  sha256: str | None = None, timeout: float = 60.0) -> Path:
    """Fetches the first URL that answers with the right checksum to ``destination``.

    Each attempt writes a temporary file beside ``destination``, verifies it, then renames it,
    so an interrupted or wrong download never leaves a file under the final name.
    """
    destination = Path(destination)
    timeout = check_float(timeout, "timeout", "download_file", minimum=0.0)
    if isinstance(urls, str) or not urls:
        raise TypeError(f"download_file: urls must be a non-empty sequence of URLs, got {urls!r}")
    destination.parent.mkdir(parents=True, exist_ok=True)
    errors = []
    for url in urls:
        handle, tmp = tempfile.mkstemp(dir=destination.parent, prefix=f".{destination.name}.")
        try:
            with os.fdopen(handle, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
                shutil.copyfileobj(response, out)
            verify_checksum(tmp, md5=md5, sha256=sha256, name=f"the file from {url}")
            os.replace(tmp, destination)
            logger.info("Downloaded %s to %s", url, destination)
            return destination
        except (OSError, ChecksumError) as err:
            errors.append(f"  {url}: {err}" if isinstance(err, OSError) else f"  {err}")
            logger.warning("Download of %s failed: %s", url, err)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
    raise DownloadError(f"download_file: could not fetch {destination.name}:\n" + "\n".join(errors))


def download_idx(name: str, data_dir: str | os.PathLike | None = None, *,
                 mirrors: Sequence[str] | None = None, timeout: float = 60.0) -> Path:
    """Downloads the four ``.gz`` files of ``name`` into ``<data_dir>/<name>/`` and checks their MD5.

    ``data_dir`` defaults to ``$JAXCNN_DATA_DIR``, else ``~/.cache/jaxcnn/datasets``. Files already
    there with the right checksum are kept. Returns the folder.
    """
    if name not in IDX_DATASETS:
        raise ValueError(f"download_idx: name={name!r} is not one of {sorted(IDX_DATASETS)}")
    spec = IDX_DATASETS[name]
    if data_dir is None:
        data_dir = os.environ.get(ENV_VAR) or DEFAULT_CACHE_DIR
    folder = Path(data_dir).expanduser() / name
    for filename, md5 in spec.md5.items():
        target = folder / filename
        if target.is_file():
            try:
                verify_checksum(target, md5=md5)
                continue
            except ChecksumError:
                logger.warning("%s has the wrong checksum; downloading it again", target)
        urls = [base.rstrip("/") + "/" + filename for base in (mirrors or spec.mirrors)]
        download_file(urls, target, md5=md5, timeout=timeout)
    return folder
