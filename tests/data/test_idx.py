"""IDX files: the real MNIST / Fashion-MNIST files, damaged files, locating, checksums, download."""

import gzip
import hashlib
import dataclasses

import numpy as np
import pytest

from jaxcnn.data import idx as idx_module
from jaxcnn.data import (
    ChecksumError,
    DatasetNotFoundError,
    DownloadError,
    IdxFormatError,
    load,
    read_idx,
    verify_checksum,
    write_idx,
)

# From /work/shared/datasets/README.md (independent of this code).
MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
MNIST_MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}


# ----------------------------------------------------------------------------- the real files


def test_mnist_sizes_and_label_counts(mnist_train, mnist_test):
    assert len(mnist_train) == 60_000 and len(mnist_test) == 10_000
    assert mnist_train.images.shape == (60_000, 28, 28, 1) and mnist_train.images.dtype == np.uint8
    assert mnist_train.labels.dtype == np.int32
    assert np.bincount(mnist_train.labels, minlength=10).tolist() == MNIST_TRAIN_COUNTS
    assert np.bincount(mnist_test.labels, minlength=10).tolist() == MNIST_TEST_COUNTS
    example = mnist_train[0]
    assert example["image"].shape == (28, 28, 1) and example["image"].dtype == np.uint8
    assert example["label"].dtype == np.int32 and example["label"].shape == ()
    info = mnist_train.info
    assert (info.name, info.split, info.source, info.num_classes, info.image_shape) == (
        "mnist", "train", "idx", 10, (28, 28, 1))


def test_mnist_files_are_the_official_bytes(data_dir):
    """The decompressed files carry the published MD5s, and the parser reads what they hold."""
    for stem, md5 in MNIST_MD5.items():
        path = f"{data_dir}/mnist/{stem}.gz"
        with gzip.open(path, "rb") as handle:
            raw = handle.read()
        assert hashlib.md5(raw).hexdigest() == md5
    raw = gzip.decompress(open(f"{data_dir}/mnist/t10k-labels-idx1-ubyte.gz", "rb").read())
    # Independent decode: 8-byte header (magic 2049, count), then one byte per label.
    assert int.from_bytes(raw[:4], "big") == 2049 and int.from_bytes(raw[4:8], "big") == 10_000
    np.testing.assert_array_equal(read_idx(f"{data_dir}/mnist/t10k-labels-idx1-ubyte.gz"),
                                  np.frombuffer(raw[8:], np.uint8))


def test_fashion_mnist_classes_and_statistics(data_dir):
    train = load("fashion_mnist", "train", data_dir=data_dir, source="idx")
    test = load("fashion_mnist", "test", data_dir=data_dir, source="idx")
    assert np.bincount(train.labels).tolist() == [6000] * 10
    assert np.bincount(test.labels).tolist() == [1000] * 10
    counts = np.bincount(train.images.ravel(), minlength=256)
    values = np.arange(256) / 255.0
    mean = (counts * values).sum() / counts.sum()
    std = np.sqrt((counts * (values - mean) ** 2).sum() / counts.sum())
    assert abs(mean - 0.2860) < 5e-4 and abs(std - 0.3530) < 5e-4
    assert train.info.class_names[9] == "Ankle boot"


def test_split_slices(data_dir, mnist_test):
    part = load("mnist", "test[:100]", data_dir=data_dir)
    tail = load("mnist", "test[90%:]", data_dir=data_dir)
    assert len(part) == 100 and len(tail) == 1000 and part.info.split == "test[:100]"
    np.testing.assert_array_equal(part.images, mnist_test.images[:100])
    np.testing.assert_array_equal(tail.labels, mnist_test.labels[9000:])
    with pytest.raises(ValueError, match="split='validation'"):
        load("mnist", "validation", data_dir=data_dir)


# ----------------------------------------------------------------------------- format and damage


def test_write_read_roundtrip(tmp_path):
    for dtype in (np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64):
        array = (np.arange(24).reshape(2, 3, 4) - 5).astype(dtype)
        for name in ("a.idx", "a.idx.gz"):
            back = read_idx(write_idx(tmp_path / name, array))
            assert back.dtype == np.dtype(dtype) and back.dtype.isnative
            np.testing.assert_array_equal(back, array)
    # Hand-made bytes: magic 0x00000801 (uint8, rank 1), size 3.
    (tmp_path / "hand").write_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 3, 7, 8, 9]))
    np.testing.assert_array_equal(read_idx(tmp_path / "hand"), [7, 8, 9])


def _mnist_like(folder, n=5, gz=True):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    suffix = ".gz" if gz else ""
    for split, count in (("train", n), ("t10k", n - 1)):
        write_idx(folder / f"{split}-images-idx3-ubyte{suffix}", rng.integers(0, 256, (count, 28, 28), dtype=np.uint8))
        write_idx(folder / f"{split}-labels-idx1-ubyte{suffix}", (np.arange(count) % 10).astype(np.uint8))
    return folder


def test_truncated_file_names_the_file(tmp_path):
    path = write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((3, 28, 28), np.uint8))
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(IdxFormatError, match=r"train-images-idx3-ubyte is truncated.*needs 2352 data bytes.*found 2252"):
        read_idx(path)
    path.write_bytes(path.read_bytes()[:10])
    with pytest.raises(IdxFormatError, match="truncated header"):
        read_idx(path)


def test_too_long_file(tmp_path):
    path = write_idx(tmp_path / "x.idx", np.zeros((4,), np.uint8))
    path.write_bytes(path.read_bytes() + b"\x00")
    with pytest.raises(IdxFormatError, match="longer than its header says"):
        read_idx(path)


def test_bad_magic_names_the_file(tmp_path):
    path = tmp_path / "labels.idx"
    path.write_bytes(b"PK\x03\x04" + bytes(20))
    with pytest.raises(IdxFormatError, match=r"labels\.idx does not start with an IDX magic number"):
        read_idx(path)


def test_damaged_gzip_names_the_file(tmp_path):
    path = write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", np.ones((2, 28, 28), np.uint8))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # A download cut short.
    with pytest.raises(IdxFormatError, match=r"t10k-images-idx3-ubyte\.gz is a damaged gzip file"):
        read_idx(path)
    corrupted = bytearray(data)
    corrupted[-6] ^= 0xFF  # Breaks the CRC / length trailer.
    path.write_bytes(bytes(corrupted))
    with pytest.raises(IdxFormatError, match="damaged gzip"):
        read_idx(path)


def test_load_reports_damaged_file(tmp_path, monkeypatch):
    monkeypatch.delenv("JAXCNN_DATA_DIR", raising=False)
    folder = _mnist_like(tmp_path / "mnist")
    target = folder / "train-labels-idx1-ubyte.gz"
    target.write_bytes(target.read_bytes()[:-9])
    with pytest.raises(IdxFormatError, match="train-labels-idx1-ubyte.gz"):
        load("mnist", "train", data_dir=tmp_path)


def test_mismatched_pair(tmp_path):
    write_idx(tmp_path / "i", np.zeros((3, 4, 4), np.uint8))
    write_idx(tmp_path / "l", np.zeros((2,), np.uint8))
    with pytest.raises(IdxFormatError, match="has 3 images but .* has 2 labels"):
        idx_module.load_idx_split(tmp_path / "i", tmp_path / "l")
    with pytest.raises(IdxFormatError, match="swapped"):
        idx_module.load_idx_split(tmp_path / "l", tmp_path / "i")


# ----------------------------------------------------------------------------- locating


def test_layouts_and_env_var(tmp_path, monkeypatch):
    monkeypatch.delenv("JAXCNN_DATA_DIR", raising=False)
    _mnist_like(tmp_path / "nested" / "mnist", n=5)
    _mnist_like(tmp_path / "flat", n=7, gz=False)
    assert len(load("mnist", "train", data_dir=tmp_path / "nested")) == 5
    assert len(load("mnist", "test", data_dir=tmp_path / "flat", source="idx")) == 6
    monkeypatch.setenv("JAXCNN_DATA_DIR", str(tmp_path / "nested"))
    source = load("mnist", "train")
    assert len(source) == 5 and source.info.location == str(tmp_path / "nested" / "mnist")


def test_not_found_lists_every_place(tmp_path, monkeypatch):
    monkeypatch.setenv("JAXCNN_DATA_DIR", str(tmp_path / "env"))
    monkeypatch.setattr(idx_module, "DEFAULT_CACHE_DIR", tmp_path / "cache")
    with pytest.raises(DatasetNotFoundError) as info:
        load("fashion_mnist", "train", data_dir=tmp_path / "arg", source="idx")
    message = str(info.value)
    for folder in ("arg/fashion_mnist", "arg/{", "env/fashion_mnist", "env/{", "cache/fashion_mnist"):
        assert folder in message, folder
    assert "JAXCNN_DATA_DIR" in message and "download=True" in message


def test_load_argument_errors():
    with pytest.raises(ValueError, match="source='cloud'"):
        load("mnist", "train", source="cloud")
    with pytest.raises(ValueError, match="source='idx' supports"):
        load("cifar10", "train", source="idx")
    with pytest.raises(TypeError, match="download must be True or False"):
        load("mnist", "train", download="yes")


# ----------------------------------------------------------------------------- checksums, download


def test_verify_checksum(tmp_path):
    path = tmp_path / "blob"
    path.write_bytes(b"jaxcnn")
    verify_checksum(path, md5=hashlib.md5(b"jaxcnn").hexdigest(), sha256=hashlib.sha256(b"jaxcnn").hexdigest())
    with pytest.raises(ChecksumError, match=r"blob has md5 .* expected 0+"):
        verify_checksum(path, md5="0" * 32)
    with pytest.raises(ValueError, match="give md5 or sha256"):
        verify_checksum(path)


def test_download_from_local_mirror(tmp_path, monkeypatch):
    """download_idx over file:// URLs: a mirror with a wrong file is skipped, the good one is used."""
    good = _mnist_like(tmp_path / "good")
    bad = tmp_path / "bad"
    bad.mkdir()
    for f in good.iterdir():
        (bad / f.name).write_bytes(f.read_bytes()[:-3])
    md5 = {f.name: hashlib.md5(f.read_bytes()).hexdigest() for f in good.iterdir()}
    spec = dataclasses.replace(idx_module.IDX_DATASETS["mnist"], md5=md5,
                               mirrors=(bad.as_uri() + "/", good.as_uri() + "/"))
    monkeypatch.setitem(idx_module.IDX_DATASETS, "mnist", spec)
    folder = idx_module.download_idx("mnist", tmp_path / "out")
    assert sorted(p.name for p in folder.iterdir()) == sorted(md5)  # No temporary files left.
    monkeypatch.delenv("JAXCNN_DATA_DIR", raising=False)
    monkeypatch.setattr(idx_module, "DEFAULT_CACHE_DIR", tmp_path / "cache")
    assert len(load("mnist", "train", data_dir=tmp_path / "out")) == 5
    # load(download=True) falls back to the download when nothing local is found.
    assert len(load("mnist", "test", data_dir=tmp_path / "out3", source="idx", download=True)) == 4

    spec = dataclasses.replace(spec, mirrors=(bad.as_uri() + "/",))
    monkeypatch.setitem(idx_module.IDX_DATASETS, "mnist", spec)
    with pytest.raises(DownloadError, match=r"could not fetch \S+-idx\d-ubyte.gz:\n.*bad/.* has md5"):
        idx_module.download_idx("mnist", tmp_path / "out2")
    assert not list((tmp_path / "out2" / "mnist").iterdir())


# ----------------------------------------------------------------------------- issue 22: splits, headers


def test_percent_split_counts_the_files_examples(tmp_path, monkeypatch):
    """``train[:50%]`` of a 192-example file is its first 96 examples (not min(30,000, 192))."""
    monkeypatch.delenv("JAXCNN_DATA_DIR", raising=False)
    monkeypatch.setattr(idx_module, "DEFAULT_CACHE_DIR", tmp_path / "no_cache")
    folder = _mnist_like(tmp_path / "mnist", n=192)
    labels = read_idx(folder / "train-labels-idx1-ubyte.gz")
    half = load("mnist", "train[:50%]", data_dir=tmp_path, verify="off")
    assert len(half) == 96
    np.testing.assert_array_equal(half.labels, labels[:96])
    tail = load("mnist", "train[-25%:]", data_dir=tmp_path, verify="off")
    np.testing.assert_array_equal(tail.labels, labels[144:])
    assert len(load("mnist", "test[10%:20%]", data_dir=tmp_path, verify="off")) == 19  # 191 * 10% -> 19


def test_damaged_header_sizes_are_named_not_a_numpy_error(tmp_path):
    # Four sizes of 2**16: their product is 2**64, which wraps to 0 in int64 and matched the
    # empty payload; NumPy then failed to reshape, without naming the file.
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(bytes([0, 0, 8, 4]) + np.full(4, 2**16, ">u4").tobytes())
    with pytest.raises(IdxFormatError, match=r"train-images-idx3-ubyte is truncated: shape \(65536, 65536, "
                       r"65536, 65536\) of uint8 needs 18446744073709551616 data bytes"):
        read_idx(path)
    # ndim 255 (the most a header byte can say): more dimensions than any array can have.
    path.write_bytes(bytes([0, 0, 8, 255]) + np.ones(255, ">u4").tobytes() + b"\x07")
    with pytest.raises(IdxFormatError, match=r"train-images-idx3-ubyte has a damaged header: it declares "
                       r"255 dimensions \(sizes \(1, 1, 1, 1, 1, 1, 1, 1, \.\.\. 247 more\)\)"):
        read_idx(path)


# ----------------------------------------------------------------------------- issue 22: published checksums


@pytest.fixture
def checksum_cache(tmp_path, monkeypatch):
    """An empty digest cache (in memory and on disk) under tmp_path; no other MNIST folder."""
    monkeypatch.delenv("JAXCNN_DATA_DIR", raising=False)
    monkeypatch.setattr(idx_module, "DEFAULT_CACHE_DIR", tmp_path / "cache" / "datasets")
    monkeypatch.setattr(idx_module, "_DIGESTS", {})
    return tmp_path / "cache" / "checksums.json"


def _copy_split(source_folder, target_folder, prefix="t10k"):
    target_folder.mkdir(parents=True)
    for kind in ("images-idx3", "labels-idx1"):
        name = f"{prefix}-{kind}-ubyte.gz"
        (target_folder / name).write_bytes((source_folder / name).read_bytes())
    return target_folder


def test_published_files_load_silently_and_digests_are_cached(data_dir, tmp_path, checksum_cache, monkeypatch):
    import json
    import warnings

    from pathlib import Path

    folder = _copy_split(Path(data_dir) / "mnist", tmp_path / "d" / "mnist")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Re-gzipped official files: their content MD5s match.
        assert len(load("mnist", "test", data_dir=tmp_path / "d", verify="error")) == 10_000
    entries = json.loads(checksum_cache.read_text())
    images = folder / "t10k-images-idx3-ubyte.gz"
    key = next(k for k in entries if k.startswith(str(images.resolve()) + "|"))
    assert entries[key][1] == MNIST_MD5["t10k-images-idx3-ubyte"]  # From the shared README, not the code.
    # A new process (empty memory) reads the cache file and hashes nothing.
    monkeypatch.setattr(idx_module, "_DIGESTS", {})
    monkeypatch.setattr(idx_module.hashlib, "md5", None)
    load("mnist", "test", data_dir=tmp_path / "d", verify="error")
    # A changed file (new mtime and size) is hashed again, and now differs.
    monkeypatch.undo()
    monkeypatch.delenv("JAXCNN_DATA_DIR", raising=False)
    monkeypatch.setattr(idx_module, "DEFAULT_CACHE_DIR", tmp_path / "cache" / "datasets")
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", read_idx(folder / "t10k-labels-idx1-ubyte.gz")[::-1].copy())
    with pytest.raises(ChecksumError, match=r"t10k-labels-idx1-ubyte.gz \(md5 [0-9a-f]{32}\)"):
        load("mnist", "test", data_dir=tmp_path / "d", verify="error")


def test_fashion_mnist_files_loaded_as_mnist_are_detected(data_dir, tmp_path, checksum_cache):
    from pathlib import Path

    from jaxcnn.data import DatasetChecksumWarning

    _copy_split(Path(data_dir) / "fashion_mnist", tmp_path / "d" / "mnist")
    with pytest.warns(DatasetChecksumWarning, match=r"2 file\(s\) differ from the published mnist files"):
        load("mnist", "test", data_dir=tmp_path / "d")
    with pytest.raises(ChecksumError, match=r"t10k-images-idx3-ubyte.gz \(md5"):
        load("mnist", "test", data_dir=tmp_path / "d", verify="error")
    # The other way round the MNIST files are recognised by their published digests: refused.
    _copy_split(Path(data_dir) / "mnist", tmp_path / "e" / "fashion_mnist")
    with pytest.raises(ChecksumError, match=r"t10k-images-idx3-ubyte.gz is the published mnist file, "
                       r"not fashion_mnist's"):
        load("fashion_mnist", "test", data_dir=tmp_path / "e")


def test_synthetic_files_warn_by_default_and_load_silently_with_verify_off(tmp_path, checksum_cache):
    import warnings

    from jaxcnn.data import DatasetChecksumWarning

    _mnist_like(tmp_path / "mnist", n=6)
    with pytest.warns(DatasetChecksumWarning, match="verify='off'"):
        assert len(load("mnist", "train", data_dir=tmp_path)) == 6
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(load("mnist_rotation", "train", data_dir=tmp_path, verify="off")) == 6
    with pytest.raises(ValueError, match="verify='no'"):
        load("mnist", "train", data_dir=tmp_path, verify="no")
