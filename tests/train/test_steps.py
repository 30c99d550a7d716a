"""TrainState, train/eval steps and tasks on one device."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from tiny_models import TinyCNN, TinyRegressor, TinySegmenter, bright_dark_arrays

from jaxcnn.train import (
    add_statistics,
    classification_task,
    create_train_state,
    make_eval_step,
    make_task,
    make_train_step,
    regression_task,
    segmentation_task,
)


def _log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def test_overfit_tiny_batch_to_full_accuracy():
    images, labels = bright_dark_arrays(8, size=6, seed=3)
    labels = np.array([0, 1, 2, 3, 0, 1, 2, 3], np.int32)  # arbitrary labels: must be memorised
    rng = np.random.default_rng(0)
    images = rng.normal(size=(8, 6, 6, 1)).astype(np.float32)
    model = TinyCNN(num_classes=4, use_batch_norm=False)
    tx = optax.adam(0.05)
    state = create_train_state(model, tx, jax.random.PRNGKey(0), images[:1])
    task = classification_task(4)
    step = jax.jit(make_train_step(model, task, tx))
    batch = {"image": jnp.asarray(images), "label": jnp.asarray(labels)}
    for _ in range(150):
        state, metrics = step(state, batch)
    stats = jax.jit(make_eval_step(model, task))(state, batch)
    assert task.summarize(stats)["accuracy"] == 1.0
    assert float(metrics["loss"]) < 0.1
    assert int(state.step) == 150


def test_train_step_updates_batch_stats_ema_and_reports_metrics():
    images, labels = bright_dark_arrays(16, size=6)
    model = TinyCNN(num_classes=2, dropout_rate=0.5)
    tx = optax.sgd(0.1)
    state = create_train_state(model, tx, jax.random.PRNGKey(1), images[:1].astype(np.float32), ema_decay=0.5)
    step = jax.jit(
        make_train_step(model, classification_task(2), tx, ema_decay=0.5, learning_rate_fn=lambda c: 0.1)
    )
    new, metrics = step(state, {"image": images, "label": labels})
    assert set(metrics) >= {"loss", "accuracy", "grad_norm", "learning_rate", "finite"}
    assert float(metrics["finite"]) == 1.0
    old_mean = state.batch_stats["BatchNorm_0"]["mean"]
    assert not np.allclose(new.batch_stats["BatchNorm_0"]["mean"], old_mean)
    for ema, before, after in zip(
        jax.tree.leaves(new.ema_params), jax.tree.leaves(state.params), jax.tree.leaves(new.params)
    ):
        np.testing.assert_allclose(ema, 0.5 * before + 0.5 * after, rtol=1e-6, atol=1e-7)
    # The dropout key depends only on (rng, step): the same step twice gives the same result.
    again, _ = step(state, {"image": images, "label": labels})
    for a, b in zip(jax.tree.leaves(new.params), jax.tree.leaves(again.params)):
        np.testing.assert_array_equal(a, b)


def test_non_finite_step_is_flagged_and_discarded():
    images, labels = bright_dark_arrays(4, size=6)
    model = TinyCNN(num_classes=2, use_batch_norm=False)
    tx = optax.sgd(0.1)
    state = create_train_state(model, tx, jax.random.PRNGKey(0), images[:1].astype(np.float32))
    bad = np.full((4, 6, 6, 1), np.nan, np.float32)
    new, metrics = jax.jit(make_train_step(model, classification_task(2), tx))(
        state, {"image": bad, "label": labels}
    )
    assert float(metrics["finite"]) == 0.0
    for a, b in zip(jax.tree.leaves(new), jax.tree.leaves(state)):
        np.testing.assert_array_equal(a, b)


def test_classification_statistics_match_numpy_with_padding_mask():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(6, 3)).astype(np.float32)
    labels = np.array([0, 2, 1, 1, 0, 2], np.int32)
    mask = np.array([1, 1, 1, 1, 0, 0], bool)
    batch = {"image": np.zeros((6, 1, 1, 1), np.float32), "label": labels, "mask": mask}
    task = classification_task(3)
    stats = jax.jit(task.statistics)(jnp.asarray(logits), batch)
    ce = -_log_softmax(logits)[np.arange(6), labels]
    np.testing.assert_allclose(stats["loss_sum"], ce[:4].sum(), rtol=1e-5)
    assert float(stats["count"]) == 4
    assert float(stats["correct"]) == float((logits.argmax(1) == labels)[:4].sum())
    expected = np.zeros((3, 3))
    for t, p in zip(labels[:4], logits.argmax(1)[:4]):
        expected[t, p] += 1
    np.testing.assert_array_equal(stats["confusion"], expected)
    np.testing.assert_allclose(task.loss(jnp.asarray(logits), batch), ce[:4].mean(), rtol=1e-5)


def test_segmentation_task_ignores_pixels_and_computes_mean_iou():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(2, 3, 3, 3)).astype(np.float32)
    labels = rng.integers(0, 3, (2, 3, 3)).astype(np.int32)
    labels[0, 0, 0] = -1  # ignored
    task = segmentation_task(3)
    batch = {"image": np.zeros((2, 3, 3, 1), np.float32), "label": labels}
    stats = add_statistics(None, jax.device_get(task.statistics(jnp.asarray(logits), batch)))
    valid = labels >= 0
    ce = -np.take_along_axis(_log_softmax(logits), np.clip(labels, 0, 2)[..., None], -1)[..., 0]
    np.testing.assert_allclose(stats["loss_sum"], ce[valid].sum(), rtol=1e-5)
    pred = logits.argmax(-1)
    ious = []
    for c in range(3):
        inter = np.sum((pred == c) & (labels == c) & valid)
        union = np.sum(((pred == c) | (labels == c)) & valid)
        if union:
            ious.append(inter / union)
    metrics = task.summarize(stats)
    np.testing.assert_allclose(metrics["mean_iou"], np.mean(ious), rtol=1e-6)
    np.testing.assert_allclose(metrics["accuracy"], np.mean((pred == labels)[valid]), rtol=1e-6)


def test_regression_task_and_steps_for_other_models():
    pred = jnp.array([[1.0], [2.0], [4.0]])
    batch = {
        "image": np.zeros((3, 1, 1, 1), np.float32),
        "label": np.array([[0.0], [2.0], [1.0]], np.float32),
    }
    metrics = regression_task("mae").summarize(jax.device_get(regression_task("mae").statistics(pred, batch)))
    np.testing.assert_allclose(
        [metrics["mse"], metrics["mae"], metrics["loss"]], [10 / 3, 4 / 3, 4 / 3], rtol=1e-6
    )
    # Segmentation and regression models train through the same step factory.
    x = np.random.default_rng(0).normal(size=(2, 5, 5, 1)).astype(np.float32)
    for model, task, label in [
        (
            TinySegmenter(num_classes=3),
            make_task("segmentation", num_classes=3),
            np.zeros((2, 5, 5), np.int32),
        ),
        (TinyRegressor(), make_task("regression"), np.ones((2, 1), np.float32)),
    ]:
        tx = optax.sgd(0.1)
        state = create_train_state(model, tx, jax.random.PRNGKey(0), x[:1])
        _, m = jax.jit(make_train_step(model, task, tx))(state, {"image": x, "label": label})
        assert np.isfinite(float(m["loss"]))


def test_bfloat16_model_keeps_float32_params_and_loss():
    images, labels = bright_dark_arrays(8, size=6)
    model = TinyCNN(
        num_classes=2, dtype=jnp.bfloat16, use_batch_norm=False
    )  # flax BatchNorm is not strict-promotion safe in bf16
    tx = optax.sgd(0.1)
    state = create_train_state(model, tx, jax.random.PRNGKey(0), images[:1].astype(np.float32))
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(state.params))
    new, metrics = jax.jit(make_train_step(model, classification_task(2), tx))(
        state, {"image": images, "label": labels}
    )
    assert metrics["loss"].dtype == jnp.float32 and np.isfinite(float(metrics["loss"]))
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(new.params))


def test_argument_errors():
    with pytest.raises(TypeError, match="flax.linen Module"):
        create_train_state(object(), optax.sgd(0.1), jax.random.PRNGKey(0), np.zeros((1, 4, 4, 1)))
    with pytest.raises(ValueError, match="ema_decay"):
        create_train_state(
            TinyCNN(), optax.sgd(0.1), jax.random.PRNGKey(0), np.zeros((1, 4, 4, 1)), ema_decay=1.5
        )
    with pytest.raises(ValueError, match="num_classes"):
        make_task("classification")
    with pytest.raises(ValueError, match="task='detection'"):
        make_task("detection", num_classes=3)
    with pytest.raises(ValueError, match="labels"):
        classification_task(3).loss(
            jnp.zeros((4, 3)), {"image": jnp.zeros((4, 1, 1, 1)), "label": jnp.zeros((5,), jnp.int32)}
        )
