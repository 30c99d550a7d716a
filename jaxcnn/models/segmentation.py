"""Segmentation networks: U-Net and FCN on a ResNet backbone. Output ``(N, H, W, num_classes)``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcnn import functional as F
from jaxcnn import nn as jnn
from jaxcnn.models import _checks
from jaxcnn.models.resnet import BasicBlock, Bottleneck, ResNet

_BACKBONES = {
    "resnet18": ((2, 2, 2, 2), BasicBlock),
    "resnet34": ((3, 4, 6, 3), BasicBlock),
    "resnet50": ((3, 4, 6, 3), Bottleneck),
}


class DoubleConv(nn.Module):
    """(Conv 3x3 + BatchNorm + ReLU) twice, size-preserving."""

    features: int
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        for i in (1, 2):
            x = jnn.Conv(self.features, 3, padding=1, use_bias=False, dtype=self.dtype, name=f"conv{i}")(x)
            x = F.relu(jnn.BatchNorm(dtype=self.dtype, name=f"bn{i}")(x, train=train))
        return x


class UNet(nn.Module):
    """U-Net (Ronneberger et al., 2015) with size-preserving convs: ``(N, H, W, C) ->
    (N, H, W, num_classes)`` logits.

    ``features`` are the widths of the encoder levels (the last one is the bottleneck).
    ``decoder="transpose"`` upsamples with 2x2/2 transposed convs; ``"upsample"`` with
    bilinear upsampling followed by a 3x3 conv. Inputs whose sides are not multiples of
    ``2 ** (len(features) - 1)`` are zero-padded at the bottom/right and the output cropped
    back, so any size works.

    Args:
      num_classes: logits per pixel.
      features: encoder widths, at least two levels.
      decoder: ``"transpose"`` or ``"upsample"``.
      dtype: the compute dtype (e.g. ``jnp.bfloat16``); parameters stay float32.

    Raises:
      ValueError: a non-positive ``num_classes`` or width, fewer than two levels, or an
        unknown ``decoder``.
    """

    num_classes: int
    features: Sequence[int] = (32, 64, 128, 256)
    decoder: str = "transpose"
    dtype: Any = None

    def __post_init__(self):
        _checks.positive_int(self.num_classes, "num_classes", "UNet")
        _checks.positive_ints(self.features, "features", "UNet", minimum_length=2)
        _checks.choice(self.decoder, "decoder", "UNet", ("transpose", "upsample"))
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = _checks.inputs(x, "UNet")
        height, width = x.shape[1:3]
        multiple = 2 ** (len(self.features) - 1)
        pad_h, pad_w = -height % multiple, -width % multiple
        if pad_h or pad_w:
            x = jnp.pad(x, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)))
        skips = []
        for i, f in enumerate(self.features[:-1]):
            x = DoubleConv(f, dtype=self.dtype, name=f"down{i + 1}")(x, train=train)
            skips.append(x)
            x = jnn.MaxPool(2)(x)
        x = DoubleConv(self.features[-1], dtype=self.dtype, name="bottleneck")(x, train=train)
        for i in reversed(range(len(skips))):
            f = self.features[i]
            if self.decoder == "transpose":
                x = jnn.ConvTranspose(f, 2, stride=2, dtype=self.dtype, name=f"up{i + 1}_transpose")(x)
            else:
                x = F.upsample(x, scale_factor=2, method="bilinear")
                x = jnn.Conv(f, 3, padding=1, dtype=self.dtype, name=f"up{i + 1}_conv")(x)
            x = jnp.concatenate([skips[i], x.astype(skips[i].dtype)], axis=-1)
            x = DoubleConv(f, dtype=self.dtype, name=f"up{i + 1}")(x, train=train)
        x = jnn.Conv(self.num_classes, 1, dtype=self.dtype, name="head")(x)
        return x[:, :height, :width, :].astype(jnp.float32)


class FCN(nn.Module):
    """Fully convolutional network (Long et al., 2015) on a ResNet backbone.

    1x1 convs score the last stages' features; ``variant="32s"`` upsamples the deepest score
    map straight to the input size, ``"16s"``/``"8s"`` first add the scores of the stride-16 /
    stride-8 stages (bilinear upsampling, as torchvision's FCN). The backbone's parameters sit
    under ``backbone`` with ResNet's names, so a trained ResNet classifier's weights (without
    ``fc``) initialise it. Output ``(N, H, W, num_classes)`` logits.
    """

    num_classes: int
    backbone: str = "resnet18"
    variant: str = "8s"
    small_input: bool = False
    width: int = 64
    dtype: Any = None

    def __post_init__(self):
        _checks.positive_int(self.num_classes, "num_classes", "FCN")
        _checks.choice(self.backbone, "backbone", "FCN", sorted(_BACKBONES))
        _checks.choice(self.variant, "variant", "FCN", ("32s", "16s", "8s"))
        _checks.positive_int(self.width, "width", "FCN")
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = _checks.inputs(x, "FCN")
        skips = {"32s": 0, "16s": 1, "8s": 2}[self.variant]
        stages, block = _BACKBONES[self.backbone]
        features = ResNet(
            stage_sizes=stages, block=block, width=self.width, small_input=self.small_input, dtype=self.dtype,
            name="backbone",
        )(x, train=train, return_features=True)
        score = jnn.Conv(self.num_classes, 1, dtype=self.dtype, name="score_last")(features[-1])
        for k in range(1, skips + 1):
            skip = features[-1 - k]
            score = F.upsample(score, size=skip.shape[1:3], method="bilinear")
            score = score + jnn.Conv(self.num_classes, 1, dtype=self.dtype, name=f"score_stage{len(features) - k}")(skip)
        return F.upsample(score.astype(jnp.float32), size=x.shape[1:3], method="bilinear")
