"""The tfds path, on ``tfds.testing.mock_data`` (which patches ``tfds.data_source`` in tfds 4.9.10)."""

import numpy as np
import pytest

tfds = pytest.importorskip("tensorflow_datasets")

from jaxcnn.data import BatchLoader, TfdsSource, load  # noqa: E402


class JaxcnnTinyDigits(tfds.core.GeneratorBasedBuilder):
    """A real (unmocked) tfds dataset, written as ArrayRecord without TensorFlow: a Tensor image
    feature needs no PNG encoder. Image ``i`` is filled with ``i``; its label is ``i % 3``."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
            "image": tfds.features.Tensor(shape=(8, 8, 1), dtype=np.uint8),
            "label": tfds.features.ClassLabel(num_classes=3),
        }))

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(12), "test": self._generate_examples(5)}

    def _generate_examples(self, n):
        for i in range(n):
            yield i, {"image": np.full((8, 8, 1), i, np.uint8), "label": i % 3}


@pytest.fixture
def mock_tfds(tmp_path):
    with tfds.testing.mock_data(num_examples=24, data_dir=str(tmp_path)):
        yield


def test_mnist_through_data_source(mock_tfds):
    source = load("mnist", "train", source="tfds")
    assert isinstance(source, TfdsSource) and len(source) == 24
    example = source[5]
    assert example["image"].shape == (28, 28, 1) and example["image"].dtype == np.uint8
    assert example["label"].shape == () and example["label"].dtype == np.int32
    assert 0 <= int(example["label"]) < 10
    info = source.info
    assert (info.source, info.num_classes, info.image_shape) == ("tfds", 10, (28, 28, 1))
    batch = source.get_batch([0, 3, 5])
    np.testing.assert_array_equal(batch["image"][2], example["image"])


def test_color_dataset_and_pipeline(mock_tfds):
    source = TfdsSource("cifar10", "test")
    assert source.info.image_shape == (32, 32, 3) and source[0]["image"].shape == (32, 32, 3)
    loader = BatchLoader(source, 8, seed=0, num_epochs=1, shard_index=0, shard_count=1)
    batches = list(loader)
    assert len(batches) == 3
    assert batches[0]["image"].shape == (8, 32, 32, 3) and batches[0]["label"].dtype == np.int32


def test_bad_feature_key(mock_tfds):
    with pytest.raises(ValueError, match="image_key='pixels' is not a feature of mnist"):
        TfdsSource("mnist", "train", image_key="pixels")


def test_missing_tfds_dataset_is_reported(tmp_path, monkeypatch):
    """Without the mock and without files, auto mode lists the IDX folders and the tfds attempt."""
    monkeypatch.delenv("JAXCNN_DATA_DIR", raising=False)
    from jaxcnn.data import DatasetNotFoundError
    from jaxcnn.data import idx as idx_module

    monkeypatch.setattr(idx_module, "DEFAULT_CACHE_DIR", tmp_path / "cache")
    with pytest.raises(DatasetNotFoundError, match=r"(?s)IDX: .*tfds data_source\('mnist'.*tfds build mnist"):
        load("mnist", "train", data_dir=tmp_path)


def test_real_array_record_dataset(tmp_path):
    """The unmocked read path: tfds.data_source over ArrayRecord files, decoded without TensorFlow."""
    import sys

    JaxcnnTinyDigits(data_dir=str(tmp_path), file_format="array_record").download_and_prepare()
    source = load("jaxcnn_tiny_digits", "train", data_dir=tmp_path)  # "auto": not an IDX name.
    assert isinstance(source, TfdsSource) and len(source) == 12 and source.info.num_classes == 3
    values = sorted(int(source[i]["image"][0, 0, 0]) for i in range(12))
    assert values == list(range(12))
    for i in range(12):
        example = source[i]
        assert example["image"].dtype == np.uint8 and example["label"].dtype == np.int32
        assert int(example["label"]) == int(example["image"][0, 0, 0]) % 3
    part = load("jaxcnn_tiny_digits", "test[:3]", data_dir=tmp_path, source="tfds")
    assert len(part) == 3
    loader = BatchLoader(source, 5, seed=0, num_epochs=1, last_batch="pad", shard_index=0, shard_count=1)
    seen = [int(v) for b in loader for v in b["image"][b["mask"], 0, 0, 0]]
    assert sorted(seen) == list(range(12))
    assert "tensorflow" not in sys.modules
