"""Tiny linen models and data for the training tests (fast on 2 CPU cores)."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import numpy as np


class TinyCNN(nn.Module):
    """Conv(4, 3x3) + BatchNorm + ReLU, global mean, Dropout, Dense: ``(N, H, W, C) -> (N, K)``."""

    num_classes: int = 2
    dropout_rate: float = 0.0
    use_batch_norm: bool = True
    axis_name: Any = None
    dtype: Any = None

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.Conv(4, (3, 3), dtype=self.dtype)(x)
        if self.use_batch_norm:
            x = nn.BatchNorm(
                use_running_average=not train, axis_name=self.axis_name, momentum=0.9, dtype=self.dtype
            )(x)
        x = nn.relu(x)
        x = jnp.mean(x, axis=(1, 2))
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        return nn.Dense(self.num_classes, dtype=self.dtype)(x).astype(jnp.float32)


class TinySegmenter(nn.Module):
    """Two 3x3 convs: ``(N, H, W, C) -> (N, H, W, K)`` logits."""

    num_classes: int = 3

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.relu(nn.Conv(4, (3, 3))(x))
        return nn.Conv(self.num_classes, (3, 3))(x)


class TinyRegressor(nn.Module):
    """Global mean + Dense: ``(N, H, W, C) -> (N, 1)``."""

    @nn.compact
    def __call__(self, x, train: bool = False):
        return nn.Dense(1)(jnp.mean(x, axis=(1, 2)))


def bright_dark_arrays(n: int, size: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images ``(n, size, size, 1)`` and labels ``(n,)``: 1 when the image is bright."""
    rng = np.random.default_rng(seed)
    labels = (np.arange(n) % 2).astype(np.int32)
    base = np.where(labels[:, None, None, None] == 1, 170, 80)
    noise = rng.integers(-60, 60, (n, size, size, 1))
    images = np.clip(base + noise, 0, 255).astype(np.uint8)
    return images, labels


def sources(n_train: int = 128, n_test: int = 64, size: int = 8):
    """``(train, test)`` ``ArraySource``s of :func:`bright_dark_arrays`."""
    from jaxcnn.data.sources import ArraySource

    x, y = bright_dark_arrays(n_train + n_test, size)
    return (
        ArraySource(x[:n_train], y[:n_train], num_classes=2, split="train"),
        ArraySource(x[n_train:], y[n_train:], num_classes=2, split="test"),
    )
