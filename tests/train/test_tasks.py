"""Tasks as plugins, the loop's host transfers, and Flax habits on TrainState.

* A task defined here (not in the library) is registered and trained end to end through
  ``train_and_evaluate``; its evaluation metric is checked against NumPy on the saved weights.
* The loop copies the steps' metrics to the host once per log interval, not once per step.
* A train step written as in Flax's examples runs on ``TrainState`` and matches Flax's own
  ``flax.training.train_state.TrainState``.
"""

from __future__ import annotations

import json
import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax.training import train_state as flax_train_state
from tiny_models import TinyCNN, bright_dark_arrays, sources

from jaxcnn.data.sources import ArraySource
from jaxcnn.train import (
    Task,
    TrainState,
    create_train_state,
    default_config,
    load_params,
    read_metrics,
    register_task,
    registered_tasks,
    train_and_evaluate,
)
from jaxcnn.train.tasks import example_weights, model_inputs

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class BrightF1(Task):
    """Is the image bright? One logit per image, outputs as a dict; F1 as the headline metric.

    ``forward`` adds input noise drawn from the task's key in training (as a generative task
    would draw its noise), so the key path is exercised too.
    """

    name = "bright_f1"
    metric_modes = {"loss": "min", "f1": "max"}

    def __init__(self, noise: float):
        self.noise = noise

    def forward(self, apply, batch, key, *, train):
        x = model_inputs(batch)
        if train:
            x = x + self.noise * jax.random.normal(key, x.shape, x.dtype)
        return {"logit": apply(x)[:, 0]}

    def _terms(self, outputs, batch):
        target = batch["label"].astype(jnp.float32)
        return optax.sigmoid_binary_cross_entropy(outputs["logit"], target), target, example_weights(batch)

    def loss(self, outputs, batch):
        bce, _, w = self._terms(outputs, batch)
        return jnp.sum(bce * w) / jnp.maximum(jnp.sum(w), 1.0)

    def statistics(self, outputs, batch):
        bce, target, w = self._terms(outputs, batch)
        predicted = (outputs["logit"] > 0).astype(jnp.float32)
        return {
            "bce_sum": jnp.sum(bce * w),
            "tp": jnp.sum(predicted * target * w),
            "fp": jnp.sum(predicted * (1 - target) * w),
            "fn": jnp.sum((1 - predicted) * target * w),
            "count": jnp.sum(w),
        }

    def metrics(self, statistics):
        return {"precision": statistics["tp"] / jnp.maximum(statistics["tp"] + statistics["fp"], 1.0)}

    def summarize(self, sums):
        tp, fp, fn = (float(sums[k]) for k in ("tp", "fp", "fn"))
        return {"loss": float(sums["bce_sum"]) / max(float(sums["count"]), 1.0), "f1": 2 * tp / max(2 * tp + fp + fn, 1.0)}

    def evaluation_extras(self, context):
        os.makedirs(os.path.join(context.workdir, "plots"), exist_ok=True)
        with open(os.path.join(context.workdir, "plots", "f1.json"), "w") as f:
            json.dump(self.summarize(context.statistics), f)


def _config(**overrides):
    config = default_config()
    config.batch_size = 16
    config.num_steps = 8
    config.log_every_steps = 4
    config.eval_every_steps = 8
    config.checkpoint.every_steps = 8
    config.progress_bar = False
    config.tensorboard = False
    config.plots = False
    config.optimizer.learning_rate = 0.05
    config.update_from_flattened_dict(overrides)
    return config


def test_a_task_defined_outside_the_library_trains_end_to_end(tmp_path):
    register_task("bright_f1", lambda config, num_classes: BrightF1(noise=0.05), replace=True)
    assert "bright_f1" in registered_tasks()
    images, labels = bright_dark_arrays(96, size=8, seed=3)
    train = ArraySource(images[:64], labels[:64], num_classes=2, split="train")
    test = ArraySource(images[64:], labels[64:], num_classes=2, split="test")
    # best_metric is checked against the task's own metric_modes.
    config = _config(task="bright_f1", plots=True, **{"checkpoint.best_metric": "f1"})
    result = train_and_evaluate(config, tmp_path, train_source=train, eval_source=test, model=TinyCNN(num_classes=1))

    assert result["status"] == "completed" and result["step"] == 8
    records = read_metrics(tmp_path)
    train_records = [r for r in records if r["split"] == "train"]
    assert [r["step"] for r in train_records] == [4, 8]
    assert all({"loss", "precision", "grad_norm"} <= set(r) for r in train_records)
    with open(tmp_path / "plots" / "f1.json") as f:
        assert json.load(f)["f1"] == pytest.approx(result["eval_f1"])

    # The evaluation metrics from the saved weights, computed in NumPy (32 test images, no padding).
    params, batch_stats = load_params(os.path.join(tmp_path, "checkpoints"))
    x = images[64:].astype(np.float32) / 255.0
    logits = np.asarray(TinyCNN(num_classes=1).apply({"params": params, "batch_stats": batch_stats}, x))[:, 0]
    y = labels[64:].astype(np.float64)
    bce = np.maximum(logits, 0) - logits * y + np.log1p(np.exp(-np.abs(logits)))
    predicted = logits > 0
    tp, fp, fn = np.sum(predicted & (y == 1)), np.sum(predicted & (y == 0)), np.sum(~predicted & (y == 1))
    np.testing.assert_allclose(result["eval_loss"], bce.mean(), rtol=1e-4)
    assert result["eval_f1"] == pytest.approx(2 * tp / max(2 * tp + fp + fn, 1))


def test_the_engine_never_branches_on_a_task_name():
    engine = ["jaxcnn/train/steps.py", "jaxcnn/train/loop.py", "jaxcnn/train/evaluation.py",
              "jaxcnn/train/builders.py", "jaxcnn/train/window.py"]
    pattern = re.compile(r"task(\.name)?\s*[!=]=|==\s*[\"'](classification|segmentation|regression)")
    for path in engine:
        with open(os.path.join(ROOT, path)) as f:
            found = [line.strip() for line in f if pattern.search(line)]
        assert not found, (path, found)


def test_metrics_reach_the_host_once_per_log_interval(tmp_path, monkeypatch):
    """12 steps, a log every 4: 3 metric fetches (one per log interval, not one per step), and no
    implicit device-to-host transfer anywhere in the run."""
    calls = []
    real_device_get = jax.device_get

    def counting_device_get(tree):
        caller = __import__("sys")._getframe(1).f_globals.get("__name__", "")
        calls.append(caller)
        return real_device_get(tree)

    monkeypatch.setattr(jax, "device_get", counting_device_get)
    train, test = sources(64, 16)
    config = _config(num_steps=12, eval_every_steps=12, **{"checkpoint.every_steps": 12})
    with jax.transfer_guard_device_to_host("disallow"):
        result = train_and_evaluate(config, tmp_path, train_source=train, eval_source=test, model=TinyCNN(num_classes=2))
    assert result["step"] == 12
    # The other transfers: one evaluation batch, and the NaN check of the state before the one
    # checkpoint (before, the loop also fetched the metrics of every one of the 12 steps).
    assert calls.count("jaxcnn.train.window") == 3, calls
    assert sorted(calls) == ["jaxcnn.train.evaluation", "jaxcnn.train.loop"] + ["jaxcnn.train.window"] * 3


def test_a_flax_style_train_step_runs_on_train_state():
    """The step of Flax's MNIST example, unchanged, on TrainState == on Flax's own TrainState."""

    @jax.jit
    def train_step(state, batch):
        def loss_fn(params):
            logits = state.apply_fn({"params": params}, batch["image"])
            loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean()
            return loss, logits

        grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
        (loss, logits), grads = grad_fn(state.params)
        state = state.apply_gradients(grads=grads)
        accuracy = jnp.mean(jnp.argmax(logits, -1) == batch["label"])
        return state, loss, accuracy

    images, labels = bright_dark_arrays(16, size=8, seed=5)
    batch = {"image": jnp.asarray(images, jnp.float32) / 255.0, "label": jnp.asarray(labels)}
    model = TinyCNN(num_classes=2, use_batch_norm=False)
    tx = optax.sgd(0.1, momentum=0.9)
    ours = create_train_state(model, tx, jax.random.PRNGKey(0), batch["image"][:1])
    created = TrainState.create(apply_fn=model.apply, params=ours.params, tx=tx)
    flax_state = flax_train_state.TrainState.create(apply_fn=model.apply, params=ours.params, tx=tx)
    for _ in range(3):
        ours, loss, _ = train_step(ours, batch)
        created, created_loss, _ = train_step(created, batch)
        flax_state, flax_loss, _ = train_step(flax_state, batch)
        np.testing.assert_allclose(loss, flax_loss, rtol=1e-6)
        np.testing.assert_allclose(created_loss, flax_loss, rtol=1e-6)
    assert int(ours.step) == int(created.step) == 3
    for got, want in zip(jax.tree.leaves(ours.params), jax.tree.leaves(flax_state.params), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="no optimizer"):
        ours.replace(tx=None).apply_gradients(grads=ours.params)
