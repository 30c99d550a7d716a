"""The classic introductory CNN and LeNet-5."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcnn import functional as F
from jaxcnn import nn as jnn
from jaxcnn.models import _checks


class SimpleCNN(nn.Module):
    """Conv(32, 3x3)+ReLU, MaxPool 2x2/2, Conv(64, 3x3)+ReLU, MaxPool 2x2/2, Flatten,
    Dense(1024)+ReLU, [Dropout], Dense(num_classes).

    Input ``(N, H, W, C)`` (28x28x1 for MNIST: 1,668,490 parameters with 10 classes);
    output logits ``(N, num_classes)``. ``num_classes=1`` makes it a scalar regressor.

    Args:
      num_classes: output logits per example.
      dropout_rate: drop probability before the last layer when ``train=True`` (0: none);
        draws from the ``"dropout"`` RNG stream.
      dtype: the compute dtype (e.g. ``jnp.bfloat16``); parameters stay float32.

    Raises:
      ValueError: ``num_classes`` is not a positive int or ``dropout_rate`` not in [0, 1).
    """

    num_classes: int = 10
    dropout_rate: float = 0.0
    axis_name: Any = None  # the data-parallel axis under shard_map/pmap, for Dropout's example index
    dtype: Any = None

    def __post_init__(self):
        _checks.positive_int(self.num_classes, "num_classes", "SimpleCNN")
        _checks.rate(self.dropout_rate, "dropout_rate", "SimpleCNN")
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = _checks.inputs(x, "SimpleCNN")
        x = jnn.Conv(32, 3, dtype=self.dtype, name="conv1")(x)
        x = jnn.MaxPool(2)(F.relu(x))
        x = jnn.Conv(64, 3, dtype=self.dtype, name="conv2")(x)
        x = jnn.MaxPool(2)(F.relu(x))
        x = F.flatten(x)
        x = F.relu(jnn.Dense(1024, dtype=self.dtype, name="fc1")(x))
        x = jnn.Dropout(self.dropout_rate, axis_name=self.axis_name)(x, train=train)
        return jnn.Dense(self.num_classes, dtype=self.dtype, name="fc2")(x).astype(jnp.float32)


class LeNet5(nn.Module):
    """LeCun et al. (1998): 6 maps 5x5, pool, 16 maps 5x5, pool, 120, 84, ``num_classes``.

    On 28x28 inputs the first conv pads by 2, as the original network saw 32x32 images;
    61,706 parameters with 10 classes. ``activation="tanh"`` and ``pool="avg"`` give the
    original's flavour; the defaults (ReLU, max pooling) train faster.
    """

    num_classes: int = 10
    activation: str = "relu"
    pool: str = "max"
    dtype: Any = None

    def __post_init__(self):
        _checks.positive_int(self.num_classes, "num_classes", "LeNet5")
        _checks.choice(self.activation, "activation", "LeNet5", ("relu", "tanh"))
        _checks.choice(self.pool, "pool", "LeNet5", ("max", "avg"))
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = _checks.inputs(x, "LeNet5")
        act = {"relu": F.relu, "tanh": F.tanh}.get(self.activation)
        if act is None:
            raise ValueError(f"LeNet5: activation must be 'relu' or 'tanh', got {self.activation!r}")
        pool = {"max": jnn.MaxPool, "avg": jnn.AvgPool}.get(self.pool)
        if pool is None:
            raise ValueError(f"LeNet5: pool must be 'max' or 'avg', got {self.pool!r}")
        pad = 2 if x.ndim == 4 and x.shape[1] == 28 else 0
        x = act(jnn.Conv(6, 5, padding=pad, dtype=self.dtype, name="conv1")(x))
        x = pool(2)(x)
        x = act(jnn.Conv(16, 5, dtype=self.dtype, name="conv2")(x))
        x = pool(2)(x)
        x = F.flatten(x)
        x = act(jnn.Dense(120, dtype=self.dtype, name="fc1")(x))
        x = act(jnn.Dense(84, dtype=self.dtype, name="fc2")(x))
        return jnn.Dense(self.num_classes, dtype=self.dtype, name="fc3")(x).astype(jnp.float32)


class SignalRegressor(nn.Module):
    """A small 1D CNN for regression on signals: ``(N, L, C) -> (N, num_outputs)``.

    ``len(features)`` blocks of Conv1d(k) + BatchNorm + ReLU + MaxPool(2), then global
    average pooling and a dense head.
    """

    num_outputs: int = 1
    features: tuple[int, ...] = (16, 32, 64)
    kernel_size: int = 5
    dtype: Any = None

    def __post_init__(self):
        _checks.positive_int(self.num_outputs, "num_outputs", "SignalRegressor")
        _checks.positive_ints(self.features, "features", "SignalRegressor")
        _checks.positive_int(self.kernel_size, "kernel_size", "SignalRegressor")
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = _checks.inputs(x, "SignalRegressor", rank=3, meaning="(N, L, C) signals")
        for i, f in enumerate(self.features):
            x = jnn.Conv(f, self.kernel_size, padding="SAME", use_bias=False, dtype=self.dtype, name=f"conv{i + 1}")(x)
            x = F.relu(jnn.BatchNorm(dtype=self.dtype, name=f"bn{i + 1}")(x, train=train))
            if x.shape[1] >= 2:
                x = jnn.MaxPool(2)(x)
        x = F.global_avg_pool(x)
        return jnn.Dense(self.num_outputs, dtype=self.dtype, name="head")(x).astype(jnp.float32)


class AllConvNet(nn.Module):
    """An all-convolutional MNIST classifier with batch norm: strided convs replace pooling.

    Springenberg et al. (2015) replace max pooling by strided convolutions; this compact
    28x28 layout with batch norm and dropout is the one widely used for 99.6%+ on MNIST::

        [Conv 3x3 (valid), BN, ReLU] x 2, Conv 5x5/2 (same), BN, ReLU, Dropout   28 -> 12, 32 maps
        [Conv 3x3 (valid), BN, ReLU] x 2, Conv 5x5/2 (same), BN, ReLU, Dropout   12 -> 4,  64 maps
        Conv 4x4 (valid), BN, ReLU, Flatten, Dropout, Dense(num_classes)           4 -> 1, 128 maps

    Input ``(N, 28, 28, C)`` (other sizes work if the last conv sees at least 4x4); output
    logits ``(N, num_classes)``. Convs have no bias (the batch norm that follows has one):
    325,994 parameters with 10 classes and one input channel. ``width`` scales every
    conv's channel count (32, 64, 128 at ``width=32``).
    """

    num_classes: int = 10
    width: int = 32
    dropout_rate: float = 0.4
    axis_name: Any = None
    dtype: Any = None

    def __post_init__(self):
        _checks.positive_int(self.num_classes, "num_classes", "AllConvNet")
        _checks.positive_int(self.width, "width", "AllConvNet")
        _checks.rate(self.dropout_rate, "dropout_rate", "AllConvNet")
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = _checks.inputs(x, "AllConvNet")
        layers = (
            (1, 3, 1, "VALID"), (1, 3, 1, "VALID"), (1, 5, 2, "SAME"),
            (2, 3, 1, "VALID"), (2, 3, 1, "VALID"), (2, 5, 2, "SAME"),
            (4, 4, 1, "VALID"),
        )
        for i, (multiple, size, stride, padding) in enumerate(layers, start=1):
            x = jnn.Conv(
                self.width * multiple, size, stride=stride, padding=padding, use_bias=False,
                dtype=self.dtype, name=f"conv{i}",
            )(x)
            x = F.relu(jnn.BatchNorm(axis_name=self.axis_name, dtype=self.dtype, name=f"bn{i}")(x, train=train))
            if stride == 2 or i == len(layers):
                x = jnn.Dropout(self.dropout_rate, axis_name=self.axis_name)(x, train=train)
        x = F.flatten(x)
        return jnn.Dense(self.num_classes, dtype=self.dtype, name="head")(x).astype(jnp.float32)
