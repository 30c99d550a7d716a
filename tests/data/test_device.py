"""Host batches onto devices: data sharding and the prefetching iterator."""

import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from jaxcnn.data import BatchLoader, data_sharding, prefetch_to_device, shard_batch


def labels(batches):
    return [np.asarray(b["label"]).tolist() for b in batches]


def test_shard_batch_single_device(index_source):
    batch = next(iter(BatchLoader(index_source(20), 4, seed=0, shard_index=0, shard_count=1)))
    placed = shard_batch(batch, data_sharding())
    assert isinstance(placed["image"], jax.Array) and placed["image"].shape == (4, 2, 2, 1)
    assert placed["image"].sharding.spec == jax.sharding.PartitionSpec("data")
    np.testing.assert_array_equal(placed["label"], batch["label"])


def test_shard_batch_errors():
    with pytest.raises(ValueError, match="same leading"):
        shard_batch({"a": np.zeros((4, 2)), "b": np.zeros((3,))})
    mesh = jax.make_mesh((1,), ("batch",))
    with pytest.raises(ValueError, match="axis='data' is not an axis"):
        data_sharding(mesh)


@pytest.mark.parametrize("sharding", [None, "data"])
def test_prefetch_state_follows_the_consumer(index_source, sharding):
    loader = BatchLoader(index_source(37), 4, seed=1, num_epochs=2, shard_index=0, shard_count=1)
    expected = labels(loader)
    it = prefetch_to_device(iter(loader), size=3, sharding=None if sharding is None else data_sharding())
    first = [next(it) for _ in range(5)]
    assert isinstance(first[0]["image"], jax.Array)
    state = it.get_state()
    assert state["step"] == 5  # Not the prefetched position.
    it.close()
    resumed = prefetch_to_device(iter(loader), size=2)
    resumed.set_state(state)
    assert labels(first) + labels(resumed) == expected
    with pytest.raises(StopIteration):
        next(resumed)


def test_prefetch_passes_errors_on():
    def broken():
        yield {"x": np.zeros(2)}
        raise RuntimeError("source failed")

    it = prefetch_to_device(broken(), size=2)
    next(it)
    with pytest.raises(RuntimeError, match="source failed"):
        next(it)


def test_four_devices_each_get_their_rows():
    """In a fresh process with 4 CPU devices: each device holds a quarter of the batch rows."""
    code = textwrap.dedent(
        """
        import numpy as np, jax
        from jaxcnn.data import ArraySource, BatchLoader, data_sharding, prefetch_to_device
        source = ArraySource(np.zeros((40, 2, 2), np.uint8), np.arange(40))
        loader = BatchLoader(source, 8, seed=0, num_epochs=1)
        sharding = data_sharding()
        assert sharding.mesh.shape["data"] == 4
        host = next(iter(loader))
        batch = next(prefetch_to_device(iter(loader), 2, sharding))
        shards = sorted(batch["label"].addressable_shards, key=lambda s: s.index[0].start)
        assert [s.data.shape for s in shards] == [(2,)] * 4
        assert np.concatenate([np.asarray(s.data) for s in shards]).tolist() == host["label"].tolist()
        # Augmentations run on the sharded batch, for automatic and explicit mesh axes alike.
        from functools import partial
        from jaxcnn.data import augment as A
        aug = jax.jit(A.compose(A.random_flip, partial(A.random_crop, padding=1), A.random_affine,
                                partial(A.normalize, mean=0.5, std=0.5)))
        explicit = data_sharding(jax.make_mesh((4,), ("data",), axis_types=(jax.sharding.AxisType.Explicit,)))
        for sh in (sharding, explicit):
            out = aug(jax.random.key(0), next(prefetch_to_device(iter(loader), 1, sh)))
            assert out["image"].shape == (8, 2, 2, 1) and out["image"].dtype == np.float32
        print("ok")
        """
    )
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4", "JAX_PLATFORMS": "cpu"}
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]
