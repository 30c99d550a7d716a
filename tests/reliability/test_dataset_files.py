"""Corrupted or truncated dataset files: a clear error naming the file, from ``load`` and ``jaxcnn train``.

``tests/data/test_idx.py`` tests the IDX parser on single files; here each damage is done to
one file of a complete MNIST folder and must be reported by ``jaxcnn.data.load`` *and* by the
``jaxcnn train`` command (which loads the data before compiling anything), naming that file.
"""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import numpy as np
import pytest
from fault_tools import KILL_CONFIG, record, write_synthetic_mnist

from jaxcnn import cli
from jaxcnn.data import DatasetNotFoundError, IdxFormatError, load, write_idx
from jaxcnn.data import idx as idx_module

IMAGES, LABELS = "train-images-idx3-ubyte", "train-labels-idx1-ubyte"


def _gz(folder: Path, stem: str) -> Path:
    return folder / "mnist" / f"{stem}.gz"


def _raw(folder: Path, stem: str) -> Path:
    """Replaces ``stem.gz`` by the uncompressed file (both layouts are accepted)."""
    gz = _gz(folder, stem)
    raw = gz.with_suffix("")
    raw.write_bytes(gzip.decompress(gz.read_bytes()))
    gz.unlink()
    return raw


def _flip(path: Path, offset: int) -> Path:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))
    return path


def _truncate(path: Path, keep: int) -> Path:
    path.write_bytes(path.read_bytes()[:keep])
    return path


def _damage(case: str, folder: Path) -> tuple[Path, str]:
    """Damages ``folder``'s MNIST as ``case`` says; returns (the damaged file, expected message regex)."""
    if case == "gzip cut short":
        return _truncate(_gz(folder, IMAGES), 300), "is a damaged gzip file"
    if case == "byte flipped inside the gzip stream":
        path = _gz(folder, IMAGES)
        return _flip(path, path.stat().st_size // 2), "is a damaged gzip file"
    if case == "gzip CRC trailer damaged":
        path = _gz(folder, LABELS)
        return _flip(path, path.stat().st_size - 6), "is a damaged gzip file"
    if case == "empty file":
        return _truncate(_gz(folder, LABELS), 0), "0 bytes, too short for an IDX header"
    if case == "raw file truncated":
        path = _raw(folder, IMAGES)
        return _truncate(path, path.stat().st_size - 1000), r"is truncated: shape \(192, 16, 16\)"
    if case == "raw file with trailing garbage":
        path = _raw(folder, LABELS)
        path.write_bytes(path.read_bytes() + b"garbage")
        return path, "is longer than its header says"
    if case == "bad magic number":
        return _flip(_raw(folder, IMAGES), 0), "does not start with an IDX magic number"
    if case == "unknown type code":
        path = _raw(folder, LABELS)
        data = bytearray(path.read_bytes())
        data[2] = 0x42
        path.write_bytes(bytes(data))
        return path, "does not start with an IDX magic number"
    if case == "header size flipped":
        return _flip(_raw(folder, IMAGES), 7), "is (truncated|longer than its header says)"
    if case == "header sizes overflowing":
        # Four sizes of 2**16 multiply to 2**64, which wraps to 0 in int64: an empty payload "fits".
        path = _raw(folder, IMAGES)
        path.write_bytes(bytes([0, 0, 8, 4]) + np.full(4, 2**16, ">u4").tobytes())
        return path, r"is truncated: shape \(65536, 65536, 65536, 65536\)"
    if case == "header declares 255 dimensions":
        path = _raw(folder, LABELS)
        path.write_bytes(bytes([0, 0, 8, 255]) + np.ones(255, ">u4").tobytes() + b"\x01")
        return path, "has a damaged header: it declares 255 dimensions"
    if case == "truncated header":
        return _truncate(_raw(folder, IMAGES), 9), "truncated header"
    if case == "label out of range":
        path = _gz(folder, LABELS)
        labels = idx_module.read_idx(path).copy()
        labels[17] = 11
        write_idx(path, labels)
        return path, r"labels outside \[0, 10\): min 0, max 11"
    if case == "fewer labels than images":
        path = _gz(folder, LABELS)
        write_idx(path, idx_module.read_idx(path)[:-3])
        return path, "has 192 images but .* has 189 labels"
    if case == "images and labels files swapped":
        images, labels = _gz(folder, IMAGES), _gz(folder, LABELS)
        tmp = images.with_suffix(".tmp")
        images.rename(tmp)
        labels.rename(images)
        tmp.rename(labels)
        return images, "are the images and labels files swapped"
    if case == "labels file missing":
        path = _gz(folder, LABELS)
        path.unlink()
        return path, r"dataset 'mnist' split 'train' was not found.*train-labels-idx1-ubyte"
    raise ValueError(case)


CASES = [
    "gzip cut short", "byte flipped inside the gzip stream", "gzip CRC trailer damaged", "empty file",
    "raw file truncated", "raw file with trailing garbage", "bad magic number", "unknown type code",
    "header size flipped", "header sizes overflowing", "header declares 255 dimensions", "truncated header",
    "label out of range", "fewer labels than images",
    "images and labels files swapped", "labels file missing",
]


@pytest.fixture
def isolated(monkeypatch, tmp_path):
    """No other place to find MNIST: only the folder the test builds."""
    monkeypatch.delenv("JAXCNN_DATA_DIR", raising=False)
    monkeypatch.setattr(idx_module, "DEFAULT_CACHE_DIR", tmp_path / "no_cache")


@pytest.mark.parametrize("case", CASES)
def test_damaged_dataset_file_is_named(case, tmp_path, isolated, capsys):
    folder = write_synthetic_mnist(tmp_path / "data")
    damaged, expected = _damage(case, folder)
    error_type = DatasetNotFoundError if case == "labels file missing" else IdxFormatError
    name = damaged.name if case != "labels file missing" else LABELS
    with pytest.raises(error_type) as from_load:
        load("mnist", "train", data_dir=folder)
    message = str(from_load.value)
    assert name in message and re.search(expected, message, re.S), message
    # The command: the same error, raised while loading the data, before any compilation, as one
    # message (exit code 1, no traceback) that names the file; no workdir is left behind.
    argv = ["train", "--config", str(KILL_CONFIG), "--workdir", str(tmp_path / "run"),
            f"--config.dataset.data_dir={folder}"]
    capsys.readouterr()
    assert cli.main(argv) == cli.EXIT_RUNTIME_ERROR
    err = capsys.readouterr().err
    assert f"jaxcnn train: error: {error_type.__name__}" in err and name in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()
    record(
        f"dataset file damaged: {case}",
        trials=2,
        detail=f"load() raises {error_type.__name__}, `jaxcnn train` exits 1 with it: "
               f"{message.splitlines()[0][:200]}",
        test="tests/reliability/test_dataset_files.py",
    )


def test_intact_synthetic_data_loads(tmp_path, isolated):
    folder = write_synthetic_mnist(tmp_path / "data")
    train = load("mnist", "train", data_dir=folder)
    assert train[0]["image"].shape == (16, 16, 1) and train.info.num_classes == 10
    assert np.asarray([train[i]["label"] for i in range(10)]).tolist() == list(range(10))


def test_another_datasets_files_are_detected(tmp_path, isolated, data_dir):
    """Fashion-MNIST files in an ``mnist`` folder warn (refused with verify='error'); MNIST's
    published files in a ``fashion_mnist`` folder are recognised and refused."""
    import warnings

    from jaxcnn.data import ChecksumError, DatasetChecksumWarning

    for source, target in (("fashion_mnist", "mnist"), ("mnist", "fashion_mnist")):
        folder = tmp_path / f"{source}_as_{target}" / target
        folder.mkdir(parents=True)
        for stem in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
            (folder / f"{stem}.gz").write_bytes((Path(data_dir) / source / f"{stem}.gz").read_bytes())
    with pytest.warns(DatasetChecksumWarning, match="differ from the published mnist files"):
        load("mnist", "test", data_dir=tmp_path / "fashion_mnist_as_mnist")
    with pytest.raises(ChecksumError, match="differ from the published mnist files") as strict:
        load("mnist", "test", data_dir=tmp_path / "fashion_mnist_as_mnist", verify="error")
    with warnings.catch_warnings(), pytest.raises(ChecksumError, match="is the published mnist file") as swapped:
        warnings.simplefilter("error")
        load("fashion_mnist", "test", data_dir=tmp_path / "mnist_as_fashion_mnist")
    record(
        "another dataset's files under the requested name (published MD5s checked)",
        trials=3,
        detail=f"Fashion-MNIST as MNIST: DatasetChecksumWarning, with verify='error' ChecksumError "
               f"({str(strict.value)[:120]}...); MNIST as Fashion-MNIST: {str(swapped.value)[:160]}",
        test="tests/reliability/test_dataset_files.py",
    )
