"""ResNet-18...152, torchvision-compatible (v1.5: the stride sits in the 3x3 conv).

Parameter names follow torchvision's state dict (``layer1_0/conv1`` for ``layer1.0.conv1``)
so ImageNet weights map one to one (:func:`jaxcnn.models.load_torch_resnet`).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcnn import functional as F
from jaxcnn.backends import cpu as cpu_backend
from jaxcnn import nn as jnn
from jaxcnn.models import _checks

_conv_init = jnn.he_fan_out_init()


class BasicBlock(nn.Module):
    """Two 3x3 convs with a residual; expansion 1."""

    features: int
    stride: int = 1
    axis_name: Any = None
    dtype: Any = None
    expansion = 1

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        conv = partial(jnn.Conv, use_bias=False, kernel_init=_conv_init, dtype=self.dtype)
        norm = partial(jnn.BatchNorm, axis_name=self.axis_name, dtype=self.dtype)
        # Each conv's input written once when the CPU backend is on (see
        # jaxcnn.backends.cpu.materialize; a no-op otherwise): XLA:CPU would otherwise
        # recompute the batch norms, ReLUs and residual additions behind it in the transposes
        # of its kernel gradient.
        x = cpu_backend.materialize(x)
        y = conv(self.features, 3, stride=self.stride, padding=1, name="conv1")(x)
        y = cpu_backend.materialize(F.relu(norm(name="bn1")(y, train=train)))
        y = conv(self.features, 3, padding=1, name="conv2")(y)
        y = norm(name="bn2")(y, train=train)
        if self.stride != 1 or x.shape[-1] != self.features:
            x = conv(self.features, 1, stride=self.stride, name="downsample_conv")(x)
            x = norm(name="downsample_bn")(x, train=train)
        return F.relu(x + y)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (strided, v1.5), 1x1 expand (x4), with a residual."""

    features: int
    stride: int = 1
    axis_name: Any = None
    dtype: Any = None
    expansion = 4

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        conv = partial(jnn.Conv, use_bias=False, kernel_init=_conv_init, dtype=self.dtype)
        norm = partial(jnn.BatchNorm, axis_name=self.axis_name, dtype=self.dtype)
        out = self.features * self.expansion
        x = cpu_backend.materialize(x)  # see BasicBlock
        y = cpu_backend.materialize(F.relu(norm(name="bn1")(conv(self.features, 1, name="conv1")(x), train=train)))
        y = conv(self.features, 3, stride=self.stride, padding=1, name="conv2")(y)
        y = cpu_backend.materialize(F.relu(norm(name="bn2")(y, train=train)))
        y = norm(name="bn3")(conv(out, 1, name="conv3")(y), train=train)
        if self.stride != 1 or x.shape[-1] != out:
            x = conv(out, 1, stride=self.stride, name="downsample_conv")(x)
            x = norm(name="downsample_bn")(x, train=train)
        return F.relu(x + y)


class ResNet(nn.Module):
    """ResNet classifier: ``(N, H, W, C) -> (N, num_classes)`` logits (float32).

    ``small_input=True`` replaces the 7x7/2 stem and its max pool with a 3x3/1 conv, for
    28-32 px images (CIFAR/MNIST practice). ``return_features=True`` in ``__call__`` returns
    the list of stage outputs (strides 4, 8, 16, 32 with the ImageNet stem) instead of logits,
    for segmentation heads. ``ResNet18`` ... ``ResNet152`` fix ``stage_sizes`` and ``block``
    as torchvision does.

    Args:
      stage_sizes: blocks per stage, e.g. ``(2, 2, 2, 2)`` for ResNet-18.
      block: :class:`BasicBlock` (ResNet-18/34) or :class:`Bottleneck` (ResNet-50 and deeper).
      num_classes: output logits per example.
      width: channels of the first stage (doubled at each later stage).
      small_input: the 3x3/1 stem for small images.
      axis_name: mapped axis over which batch norm averages statistics (``shard_map``/``pmap``).
      dtype: the compute dtype (e.g. ``jnp.bfloat16``); parameters stay float32.

    Raises:
      ValueError: ``stage_sizes``, ``num_classes`` or ``width`` is not positive.
    """

    stage_sizes: Sequence[int]
    block: Any = BasicBlock
    num_classes: int = 1000
    width: int = 64
    small_input: bool = False
    axis_name: Any = None
    dtype: Any = None

    def __post_init__(self):
        _checks.positive_ints(self.stage_sizes, "stage_sizes", "ResNet")
        _checks.positive_int(self.num_classes, "num_classes", "ResNet")
        _checks.positive_int(self.width, "width", "ResNet")
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False, return_features: bool = False):
        x = _checks.inputs(x, "ResNet")
        conv = partial(jnn.Conv, use_bias=False, kernel_init=_conv_init, dtype=self.dtype)
        if self.small_input:
            x = conv(self.width, 3, padding=1, name="conv1")(x)
        else:
            x = conv(self.width, 7, stride=2, padding=3, name="conv1")(x)
        x = F.relu(jnn.BatchNorm(axis_name=self.axis_name, dtype=self.dtype, name="bn1")(x, train=train))
        if not self.small_input:
            x = jnn.MaxPool(3, stride=2, padding=1)(x)
        features = []
        for i, blocks in enumerate(self.stage_sizes):
            for j in range(blocks):
                stride = 2 if i > 0 and j == 0 else 1
                x = self.block(
                    self.width * 2**i, stride=stride, axis_name=self.axis_name, dtype=self.dtype,
                    name=f"layer{i + 1}_{j}",
                )(x, train=train)
            features.append(x)
        if return_features:
            return features
        x = F.global_avg_pool(x)
        return jnn.Dense(self.num_classes, dtype=self.dtype, kernel_init=_torch_linear_init, name="fc")(x).astype(
            jnp.float32
        )


def _torch_linear_init(key, shape, dtype=jnp.float32):
    """PyTorch's default Linear init: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    bound = 1.0 / shape[0] ** 0.5
    return jax.random.uniform(key, shape, dtype, -bound, bound)


# The variants are subclasses, not ``functools.partial``s, so that ``help(ResNet18)`` shows
# their documentation; ``ResNet18(num_classes=10)`` builds exactly what the partial did.


class ResNet18(ResNet):
    """ResNet-18 (He et al., 2016; torchvision's ``resnet18``): BasicBlocks, stages (2, 2, 2, 2).

    ``(N, H, W, C) -> (N, num_classes)`` float32 logits; 11.7 M parameters at 1000 classes.
    Fields as :class:`ResNet`, e.g. ``ResNet18(num_classes=10, small_input=True)`` for 28-32 px
    images. torchvision weights load with :func:`jaxcnn.models.load_torch_resnet`.
    """

    stage_sizes: Sequence[int] = (2, 2, 2, 2)
    block: Any = BasicBlock


class ResNet34(ResNet):
    """ResNet-34 (torchvision's ``resnet34``): BasicBlocks, stages (3, 4, 6, 3). Fields as :class:`ResNet`."""

    stage_sizes: Sequence[int] = (3, 4, 6, 3)
    block: Any = BasicBlock


class ResNet50(ResNet):
    """ResNet-50 (torchvision's ``resnet50``, v1.5): Bottlenecks, stages (3, 4, 6, 3). Fields as :class:`ResNet`."""

    stage_sizes: Sequence[int] = (3, 4, 6, 3)
    block: Any = Bottleneck


class ResNet101(ResNet):
    """ResNet-101 (torchvision's ``resnet101``): Bottlenecks, stages (3, 4, 23, 3). Fields as :class:`ResNet`."""

    stage_sizes: Sequence[int] = (3, 4, 23, 3)
    block: Any = Bottleneck


class ResNet152(ResNet):
    """ResNet-152 (torchvision's ``resnet152``): Bottlenecks, stages (3, 8, 36, 3). Fields as :class:`ResNet`."""

    stage_sizes: Sequence[int] = (3, 8, 36, 3)
    block: Any = Bottleneck
