"""Checkpoints: round trip with iterator state, retention, atomicity, params-only restore."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from tiny_models import TinyCNN, sources

from jaxcnn.data.pipeline import BatchLoader
from jaxcnn.train import Checkpointer, create_train_state, load_params


@pytest.fixture(scope="module")
def state():
    tx = optax.adam(1e-3)
    state = create_train_state(
        TinyCNN(num_classes=3), tx, jax.random.PRNGKey(7), jnp.zeros((1, 6, 6, 1)), ema_decay=0.9
    )
    # Non-trivial values everywhere (params, moments, batch stats, step).
    return jax.tree.map(
        lambda x: x + jnp.ones_like(x) if jnp.issubdtype(x.dtype, jnp.floating) else x, state
    ).replace(step=jnp.asarray(5, jnp.int32))


def _assert_trees_equal(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        assert np.asarray(x).dtype == np.asarray(y).dtype
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_round_trip_with_iterator_state_and_config(state, tmp_path):
    train, _ = sources(64, 8)
    loader = BatchLoader(train, 16, seed=3, num_epochs=None)
    it = iter(loader)
    for _ in range(3):
        next(it)
    with Checkpointer(tmp_path, async_save=True) as ckpt:
        ckpt.save(5, state, data_state={"iterator": it.get_state()}, config={"seed": 3, "batch_size": 16})
        ckpt.wait()
        restored = ckpt.restore(jax.tree.map(jnp.zeros_like, state))
    assert restored.step == 5
    _assert_trees_equal(restored.state, state)
    assert restored.config == {"seed": 3, "batch_size": 16}
    resumed = iter(loader)
    resumed.set_state(restored.data_state["iterator"])
    expected = next(it)
    got = next(resumed)
    np.testing.assert_array_equal(got["image"], expected["image"])
    np.testing.assert_array_equal(got["label"], expected["label"])


def test_keeps_last_k_plus_best(state, tmp_path):
    accuracies = {1: 0.2, 2: 0.9, 3: 0.3, 4: 0.4, 5: 0.1}
    with Checkpointer(tmp_path, keep=2, best_metric="accuracy", best_mode="max", async_save=False) as ckpt:
        for step, acc in accuracies.items():
            ckpt.save(step, state, metrics={"accuracy": acc})
        ckpt.save(6, state)  # e.g. a preemption save, without metrics
        assert ckpt.all_steps() == [2, 5, 6]
        assert ckpt.best_step() == 2 and ckpt.latest_step() == 6
    with Checkpointer(tmp_path, keep=1, best_metric="loss", best_mode="min", async_save=False) as ckpt:
        ckpt.save(7, state, metrics={"loss": 5.0})
        ckpt.save(8, state, metrics={"loss": 9.0})
        assert 7 in ckpt.all_steps() and 8 in ckpt.all_steps()
    with pytest.raises(ValueError, match="best_metric='accuracy'"):
        Checkpointer(tmp_path / "other", best_metric="accuracy").save(1, state, metrics={"loss": 1.0})


def test_half_written_checkpoint_is_never_restored(state, tmp_path):
    with Checkpointer(tmp_path, async_save=False) as ckpt:
        ckpt.save(3, state)
    # What a crash in the middle of writing step 9 leaves behind: orbax's temporary folder.
    partial = tmp_path / "9.orbax-checkpoint-tmp-1234567"
    (partial / "state").mkdir(parents=True)
    (partial / "state" / "garbage").write_bytes(b"\x00" * 10)
    with Checkpointer(tmp_path, async_save=False) as ckpt:
        assert ckpt.latest_step() == 3
        restored = ckpt.restore(state)
    assert restored.step == 3
    assert not partial.exists()  # cleaned up on start
    with pytest.raises(FileNotFoundError, match="step 9"):
        Checkpointer(tmp_path).restore(state, step=9)


def test_restore_params_only_for_fine_tuning(state, tmp_path):
    with Checkpointer(tmp_path, async_save=False) as ckpt:
        ckpt.save(5, state)
    params, batch_stats = load_params(tmp_path)
    _assert_trees_equal(params, jax.device_get(state.params))
    _assert_trees_equal(batch_stats, jax.device_get(state.batch_stats))
    # A new run with another optimizer takes the params over.
    fresh = create_train_state(
        TinyCNN(num_classes=3), optax.sgd(0.1), jax.random.PRNGKey(0), jnp.zeros((1, 6, 6, 1))
    )
    fine_tune = fresh.replace(params=jax.tree.map(jnp.asarray, params))
    assert fine_tune.opt_state is fresh.opt_state


def test_empty_directory_and_argument_errors(state, tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        Checkpointer(tmp_path).restore(state)
    with pytest.raises(ValueError, match="checkpoint.keep"):
        Checkpointer(tmp_path, keep=0)
    with pytest.raises(ValueError, match="best_mode"):
        Checkpointer(tmp_path, best_mode="largest")
    assert not os.listdir(tmp_path) or all(not d[0].isdigit() for d in os.listdir(tmp_path))


def test_a_reader_without_config_ranks_as_the_writer_did(state, tmp_path):
    # Step 2 scores best, then retention keeps only it and the latest: a reader that knows
    # nothing of the run's config must still answer 2, not the latest step.
    with Checkpointer(tmp_path, keep=1, best_metric="accuracy", best_mode="max", async_save=False) as ckpt:
        for step, acc in {2: 0.9, 4: 0.5, 6: 0.3}.items():
            ckpt.save(step, state, metrics={"accuracy": acc})
    with Checkpointer(tmp_path, read_only=True, async_save=False) as reader:
        assert reader.all_steps() == [2, 6]
        assert (reader.best_step(), reader.best_metric, reader.best_mode) == (2, "accuracy", "max")
    with Checkpointer(tmp_path / "min", keep=1, best_metric="loss", best_mode="min", async_save=False) as ckpt:
        for step, loss in {2: 3.0, 4: 1.0, 6: 2.0}.items():
            ckpt.save(step, state, metrics={"loss": loss})
    with Checkpointer(tmp_path / "min", read_only=True, async_save=False) as reader:
        assert reader.best_step() == 4


def test_a_checkpoint_removed_while_read_is_not_reported_corrupt(state, tmp_path):
    import shutil

    from jaxcnn.train.checkpoint import CheckpointRemovedError, CorruptCheckpointError

    with Checkpointer(tmp_path, async_save=False) as ckpt:
        ckpt.save(1, state, config={"seed": 1})
        ckpt.save(2, state)
    with Checkpointer(tmp_path, read_only=True, async_save=False) as reader:
        assert reader.read_config(1) == {"seed": 1} and reader.read_config(2) is None
        shutil.rmtree(tmp_path / "1")  # what the writing run's retention does meanwhile
        with pytest.raises(CheckpointRemovedError, match=r"step 1 .* was removed while being read") as info:
            reader.restore_variables(1)
        assert not isinstance(info.value, CorruptCheckpointError)
        assert reader.restore_variables()["params"] is not None  # the latest is still there
    assert not any(name.endswith(".corrupt") for name in os.listdir(tmp_path))
