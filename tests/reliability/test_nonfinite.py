"""NaN / Inf in the inputs, the loss, the gradients or the state: stop naming the step, save nothing bad.

``tests/train/test_loop.py::test_nan_stops_training_naming_the_step`` covers NaN images at
step 1 (no checkpoint at all). Here the fault appears *after* checkpoints were written, in
each place it can come from, and every checkpoint left behind is read back and checked to
hold only finite numbers:

* a NaN image / an Inf image in the batch of a chosen step;
* finite images so large (3e38) that the logits, hence the loss, overflow;
* a finite loss whose gradient is NaN (a layer with a poisoned backward pass);
* finite loss and gradients but an update that overflows the parameters to Inf (learning
  rate 3e38), which only the check before saving can catch.
"""

from __future__ import annotations

import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from fault_tools import record, run_tiny, synthetic_digits, tiny_config

from jaxcnn.data import ArraySource, epoch_permutation
from jaxcnn.train import Checkpointer, NonFiniteError

BATCH = 16
N_TRAIN = 64


@jax.custom_vjp
def _poison_grad(h, marked):
    return h


def _poison_fwd(h, marked):
    return h, marked


def _poison_bwd(marked, g):
    # Identity forward; the backward pass turns into NaN when the batch was marked.
    return jnp.where(marked, jnp.nan, 1.0).astype(g.dtype) * g, jnp.zeros_like(marked)


_poison_grad.defvjp(_poison_fwd, _poison_bwd)


class PoisonableNet(nn.Module):
    """The tiny model with a layer whose gradient is NaN when the batch holds a marker pixel."""

    num_classes: int = 10
    axis_name: object = None
    dtype: object = None

    @nn.compact
    def __call__(self, x, train: bool = False):
        marked = jnp.any(x == 0.5).astype(jnp.float32)  # a marker pixel anywhere in the batch
        x = _poison_grad(nn.Conv(4, (3, 3))(x), marked)
        x = nn.relu(x)
        return nn.Dense(self.num_classes)(jnp.mean(x, axis=(1, 2)))


def _examples_of_step(step: int, seed: int = 0) -> np.ndarray:
    """Indices of the training examples in the batch of ``step`` (1-based, first epoch)."""
    order = epoch_permutation(N_TRAIN, seed, 0)
    return order[(step - 1) * BATCH : step * BATCH]


def _float_images() -> np.ndarray:
    x, _ = synthetic_digits(N_TRAIN + 32, 8)
    return (x[..., None] / 255.0).astype(np.float32)


def _case(name: str):
    """``(config, train, test, model, fault step or None)`` of one fault."""
    images = _float_images()
    _, labels = synthetic_digits(N_TRAIN + 32, 8)
    config = tiny_config(**{"checkpoint.every_steps": 1})
    model = None
    step = 3
    rows = _examples_of_step(step)
    if name == "NaN in an input image":
        images[rows[5], 2, 3, 0] = np.nan
    elif name == "Inf in an input image":
        images[rows[0], 0, 0, 0] = np.inf
    elif name == "loss overflows to Inf (finite 3e38 inputs)":
        images[rows] = 3e38
    elif name == "NaN gradient with a finite loss":
        images = np.minimum(images, 0.45).astype(np.float32)
        images[rows[2], 4, 4, 0] = 0.5
        model = PoisonableNet()
    elif name == "update overflows the parameters to Inf (learning rate 3e38)":
        config = tiny_config(**{"checkpoint.every_steps": 1, "optimizer.name": "sgd",
                                "optimizer.momentum": 0.0, "optimizer.learning_rate": 3e38})
        images = images * 0 + 50.0
        step = 1
    else:
        raise ValueError(name)
    train = ArraySource(images[:N_TRAIN], labels[:N_TRAIN], num_classes=10, split="train")
    test = ArraySource(images[N_TRAIN:], labels[N_TRAIN:], num_classes=10, split="test")
    return config, train, test, model, step


CASES = [
    "NaN in an input image",
    "Inf in an input image",
    "loss overflows to Inf (finite 3e38 inputs)",
    "NaN gradient with a finite loss",
    "update overflows the parameters to Inf (learning rate 3e38)",
]


@pytest.mark.parametrize("name", CASES)
def test_non_finite_stops_naming_the_step_and_saves_nothing_bad(name, tmp_path):
    config, train, test, model, step = _case(name)
    with pytest.raises(NonFiniteError) as failure:
        run_tiny(tmp_path / "run", config, train=train, test=test, model=model)
    message = str(failure.value)
    named = re.search(r"(?:at|after) step (\d+)", message)
    assert named, message
    assert int(named.group(1)) == step, message
    assert "no checkpoint was written for it" in message
    with Checkpointer(tmp_path / "run" / "checkpoints", read_only=True, async_save=False) as ckpt:
        steps = ckpt.all_steps()
        for saved in steps:
            variables = ckpt.restore_variables(saved)
            for tree in variables.values():
                assert all(np.isfinite(x).all() for x in jax.tree.leaves(tree)), (name, saved)
    assert all(s < step for s in steps), steps
    record(
        f"non-finite training: {name}",
        trials=1,
        detail=f"NonFiniteError: {message[:170]}...; checkpoints left {steps}, all finite",
        test="tests/reliability/test_nonfinite.py",
    )


def test_the_unpoisoned_runs_train_normally(tmp_path):
    """The same data without the fault trains (the faults above are what stops them)."""
    images = np.minimum(_float_images(), 0.45).astype(np.float32)
    _, labels = synthetic_digits(N_TRAIN + 32, 8)
    train = ArraySource(images[:N_TRAIN], labels[:N_TRAIN], num_classes=10)
    test = ArraySource(images[N_TRAIN:], labels[N_TRAIN:], num_classes=10)
    result = run_tiny(tmp_path / "run", tiny_config(num_steps=3), train=train, test=test, model=PoisonableNet())
    assert result["status"] == "completed" and np.isfinite(result["train_loss"])
