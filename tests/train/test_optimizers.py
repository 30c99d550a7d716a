"""Optimizers from config: schedules, weight-decay mask, freezing, clipping, accumulation."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from tiny_models import TinyCNN

from jaxcnn.train import (
    default_config,
    freeze_labels,
    make_base_optimizer,
    make_optimizer,
    make_schedule,
    weight_decay_mask,
)


@pytest.fixture(scope="module")
def params():
    variables = TinyCNN(num_classes=3).init(jax.random.PRNGKey(0), jnp.zeros((1, 6, 6, 2)), train=False)
    return variables["params"]


def _config(**overrides) -> ml_collections.ConfigDict:
    config = default_config()
    config.update_from_flattened_dict(overrides)
    return config


def test_weight_decay_mask_excludes_biases_and_norm(params):
    mask = weight_decay_mask(params)
    assert mask["Conv_0"]["kernel"] is True and mask["Dense_0"]["kernel"] is True
    assert mask["Conv_0"]["bias"] is False and mask["Dense_0"]["bias"] is False
    assert mask["BatchNorm_0"]["scale"] is False and mask["BatchNorm_0"]["bias"] is False
    # A rank-2 parameter inside a norm layer is still excluded, by its path.
    assert weight_decay_mask({"LayerNorm_0": {"kernel": jnp.ones((2, 2))}})["LayerNorm_0"]["kernel"] is False


@pytest.mark.parametrize("name", ["sgd", "adamw"])
def test_weight_decay_only_moves_masked_params(params, name):
    """With zero gradients, only the decay acts: kernels shrink, biases/norm params do not move."""
    tx = make_base_optimizer(name, 0.1, weight_decay=0.5)
    zeros = jax.tree.map(jnp.zeros_like, params)
    updates, _ = tx.update(zeros, tx.init(params), params)
    new = optax.apply_updates(params, updates)
    mask = weight_decay_mask(params)
    for decays, old, moved in zip(jax.tree.leaves(mask), jax.tree.leaves(params), jax.tree.leaves(new)):
        if decays:
            # p - lr * wd * p for both: sgd adds wd*p to the gradient, adamw decays decoupled.
            np.testing.assert_allclose(moved, old * (1 - 0.1 * 0.5), rtol=1e-6)
        else:
            np.testing.assert_array_equal(moved, old)


def test_freezing_keeps_frozen_params_unchanged(params):
    config = _config(
        freeze=("Conv_0", "*/bias"), **{"optimizer.name": "adam", "optimizer.learning_rate": 0.1}
    )
    tx, _ = make_optimizer(config, total_steps=10)
    grads = jax.tree.map(jnp.ones_like, params)
    state = tx.init(params)
    new = params
    for _ in range(3):
        updates, state = tx.update(grads, state, new)
        new = optax.apply_updates(new, updates)
    labels = freeze_labels(params, ("Conv_0", "*/bias"))
    assert labels["Conv_0"]["kernel"] == "frozen" and labels["Dense_0"]["bias"] == "frozen"
    assert labels["Dense_0"]["kernel"] == "trainable" and labels["BatchNorm_0"]["scale"] == "trainable"
    for label, old, moved in zip(jax.tree.leaves(labels), jax.tree.leaves(params), jax.tree.leaves(new)):
        if label == "frozen":
            np.testing.assert_array_equal(moved, old)
        else:
            assert not np.allclose(moved, old)


def test_schedules_hand_computed():
    lr = 1.0
    step = make_schedule("step", lr, 100, boundaries=(0.5, 75), decay_factor=0.1)
    np.testing.assert_allclose(
        [step(0), step(49), step(50), step(74), step(75)], [1, 1, 0.1, 0.1, 0.01], rtol=1e-6
    )
    # Boundaries count from the start of the run, warmup included.
    warm_step = make_schedule("step", lr, 100, warmup_steps=10, boundaries=(50,))
    np.testing.assert_allclose([warm_step(5), warm_step(49), warm_step(50)], [0.5, 1.0, 0.1], rtol=1e-6)
    cosine = make_schedule("cosine", lr, 100)
    np.testing.assert_allclose([cosine(0), cosine(50), cosine(100)], [1.0, 0.5, 0.0], atol=1e-6)
    warm = make_schedule("warmup_cosine", lr, 100, warmup_steps=10)
    np.testing.assert_allclose([warm(0), warm(5), warm(10)], [0.0, 0.5, 1.0], atol=1e-6)
    # After warmup, cosine over the remaining 90 steps: halfway at step 55.
    np.testing.assert_allclose(warm(55), 0.5, atol=1e-6)
    onecycle = make_schedule("onecycle", lr, 100, pct_start=0.3, div_factor=25.0)
    np.testing.assert_allclose([onecycle(0), onecycle(30)], [1 / 25, 1.0], rtol=1e-5)
    assert float(onecycle(100)) < 1e-4
    const = make_schedule("constant", 0.3, 10, warmup_steps=2)
    np.testing.assert_allclose([const(0), const(1), const(2), const(9)], [0.0, 0.15, 0.3, 0.3], rtol=1e-6)


def test_gradient_clipping_bounds_the_update():
    config = _config(grad_clip_norm=1.0, **{"optimizer.momentum": 0.0, "optimizer.learning_rate": 1.0})
    tx, _ = make_optimizer(config, total_steps=1)
    p = {"w": jnp.zeros(2)}
    updates, _ = tx.update({"w": jnp.array([3.0, 4.0])}, tx.init(p), p)
    np.testing.assert_allclose(updates["w"], [-0.6, -0.8], rtol=1e-6)


def test_grad_accumulation_averages_micro_steps():
    """k=2 micro-steps with grads g1, g2 make one SGD update with (g1 + g2) / 2."""
    config = _config(grad_accum_steps=2, **{"optimizer.momentum": 0.0, "optimizer.learning_rate": 0.5})
    tx, schedule = make_optimizer(config, total_steps=4)
    p = {"w": jnp.zeros(2)}
    state = tx.init(p)
    u1, state = tx.update({"w": jnp.array([1.0, 2.0])}, state, p)
    np.testing.assert_array_equal(u1["w"], [0.0, 0.0])
    u2, state = tx.update({"w": jnp.array([3.0, 6.0])}, state, p)
    np.testing.assert_allclose(u2["w"], [-1.0, -2.0], rtol=1e-6)
    assert math.isclose(float(schedule(0)), 0.5, rel_tol=1e-6)


def test_optax_by_name_and_errors(params):
    config = _config(**{"optimizer.name": "lamb", "optimizer.weight_decay": 0.01})
    tx, _ = make_optimizer(config, total_steps=5)
    tx.init(params)
    with pytest.raises(ValueError, match="optimizer.name='nope'"):
        make_base_optimizer("nope", 0.1)
    with pytest.raises(ValueError, match="schedule.name='bogus'"):
        make_schedule("bogus", 0.1, 10)
    with pytest.raises(ValueError, match="warmup_steps=20"):
        make_schedule("constant", 0.1, 10, warmup_steps=20)
    with pytest.raises(TypeError, match="freeze"):
        make_optimizer(_config(freeze="Conv_0"), total_steps=5)
