"""The denoising network of diffusion models: a time- (and class-) conditioned U-Net.

``DiffusionUNet()(x, t, labels)`` maps a noisy batch ``x: (N, H, W, C)`` at integer timesteps
``t: (N,)`` to a prediction of the same shape (the noise, or ``v``; see :mod:`jaxcnn.diffusion`).
The layout follows Ho et al. (2020) at small scale: sinusoidal time embedding and an MLP;
residual blocks of GroupNorm, SiLU and 3x3 convs, the embedding added between the two convs;
stride-2 convs down and nearest-neighbour upsampling plus a conv up, with skip connections;
optional single-head self-attention at the lowest resolution.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcnn import functional as F
from jaxcnn import nn as jnn
from jaxcnn.models import _checks


def timestep_embedding(t: jax.Array, dim: int, max_period: float = 10000.0) -> jax.Array:
    """Sinusoidal embedding of timesteps ``t: (N,)`` -> ``(N, dim)``: ``[cos(t f_k), sin(t f_k)]``,
    ``f_k = max_period^(-k / (dim/2))`` (Vaswani et al. 2017, as in DDPM)."""
    half = dim // 2
    freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
    angles = t.astype(jnp.float32)[:, None] * freqs[None, :]
    emb = jnp.concatenate([jnp.cos(angles), jnp.sin(angles)], axis=-1)
    return jnp.pad(emb, ((0, 0), (0, dim - 2 * half)))


class ResidualBlock(nn.Module):
    """GroupNorm-SiLU-Conv3x3, + Dense(embedding), GroupNorm-SiLU-Conv3x3, plus a (1x1-projected) skip."""

    features: int
    num_groups: int = 8
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array, emb: jax.Array) -> jax.Array:
        h = jax.nn.silu(jnn.GroupNorm(self.num_groups, dtype=self.dtype, name="norm1")(x))
        h = jnn.Conv(self.features, 3, padding=1, dtype=self.dtype, name="conv1")(h)
        h = h + jnn.Dense(self.features, dtype=self.dtype, name="emb")(jax.nn.silu(emb))[:, None, None, :]
        h = jax.nn.silu(jnn.GroupNorm(self.num_groups, dtype=self.dtype, name="norm2")(h))
        # zero-initialised: the block starts as the identity, which keeps deep stacks stable
        h = jnn.Conv(self.features, 3, padding=1, dtype=self.dtype, kernel_init=nn.initializers.zeros, name="conv2")(h)
        if x.shape[-1] != self.features:
            x = jnn.Conv(self.features, 1, dtype=self.dtype, name="skip")(x)
        return x + h


class SelfAttention(nn.Module):
    """Single-head self-attention over the ``H * W`` positions of ``(N, H, W, C)``, residual."""

    num_groups: int = 8
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        n, h, w, c = x.shape
        tokens = jnn.GroupNorm(self.num_groups, dtype=self.dtype, name="norm")(x).reshape(n, h * w, c)
        q, k, v = jnp.split(jnn.Dense(3 * c, dtype=self.dtype, name="qkv")(tokens), 3, axis=-1)
        weights = F.softmax(jnp.einsum("nqc,nkc->nqk", q, k) / math.sqrt(c), axis=-1)
        out = jnn.Dense(c, dtype=self.dtype, kernel_init=nn.initializers.zeros, name="proj")(
            jnp.einsum("nqk,nkc->nqc", weights, v))
        return x + out.reshape(n, h, w, c)


class DiffusionUNet(nn.Module):
    """Time- and optionally class-conditioned U-Net: ``(x (N, H, W, C), t (N,), labels (N,) | None) -> (N, H, W, C')``.

    ``base_features * channel_multipliers[i]`` channels at level ``i`` (resolution ``H / 2^i``),
    ``num_res_blocks`` residual blocks per level, self-attention at the lowest resolution when
    ``attention``. ``out_channels`` defaults to the input's channels. With ``num_classes = K``
    the model embeds labels ``0 .. K-1`` and the null label ``K`` (classifier-free guidance;
    ``labels=None`` means the null label for every example); with ``num_classes=None`` it is
    unconditional and takes no labels. Sides that are not multiples of ``2^(levels - 1)`` are
    zero-padded at the bottom/right and cropped back, so 28x28x1 and 32x32x3 both work.
    The network has no batch statistics and no dropout: ``model.apply(variables, x, t, labels)``.
    """

    base_features: int = 32
    channel_multipliers: Sequence[int] = (1, 2, 2)
    num_res_blocks: int = 1
    attention: bool = True
    num_classes: int | None = None
    out_channels: int | None = None
    num_groups: int = 8
    dtype: Any = None

    def __post_init__(self):
        name = "DiffusionUNet"
        _checks.positive_int(self.base_features, "base_features", name)
        _checks.positive_ints(self.channel_multipliers, "channel_multipliers", name)
        _checks.positive_int(self.num_res_blocks, "num_res_blocks", name)
        _checks.positive_int(self.num_groups, "num_groups", name)
        if self.num_classes is not None:
            _checks.positive_int(self.num_classes, "num_classes", name)
        if self.out_channels is not None:
            _checks.positive_int(self.out_channels, "out_channels", name)
        bad = [self.base_features * m for m in self.channel_multipliers if (self.base_features * m) % self.num_groups]
        if bad:
            raise ValueError(
                f"{name}: num_groups={self.num_groups} must divide every level's channels "
                f"base_features * channel_multipliers = {[self.base_features * m for m in self.channel_multipliers]}"
            )
        super().__post_init__()

    def apply_params(self, params: Any, x: jax.Array, t: jax.Array, labels: jax.Array | None = None) -> jax.Array:
        """``apply({"params": params}, x, t, labels)``: the ``apply_fn`` of :func:`jaxcnn.diffusion.diffusion_loss`."""
        return self.apply({"params": params}, x, t, labels)

    @nn.compact
    def __call__(self, x: jax.Array, t: jax.Array | None = None, labels: jax.Array | None = None,
                 train: bool = False) -> jax.Array:
        del train  # no dropout or batch statistics; accepted for the zoo's calling convention
        name = "DiffusionUNet"
        x = _checks.inputs(x, name)
        n = x.shape[0]
        # t=None (timestep 0) only so that the engine can initialise the model as model.init(key, x).
        t = jnp.zeros((n,), jnp.int32) if t is None else jnp.asarray(t)
        if t.shape != (n,):
            raise ValueError(f"{name}: t must be (N,) = ({n},), got shape {tuple(t.shape)}")
        if self.num_classes is None and labels is not None:
            raise ValueError(f"{name}: labels given but the model is unconditional (num_classes=None)")
        if labels is not None:
            labels = jnp.asarray(labels)
            if labels.shape != (n,) or not jnp.issubdtype(labels.dtype, jnp.integer):
                raise ValueError(f"{name}: labels must be (N,) = ({n},) int, got shape {tuple(labels.shape)} "
                                 f"dtype {labels.dtype}")
        height, width, channels = x.shape[1:]
        multiple = 2 ** (len(self.channel_multipliers) - 1)
        pad_h, pad_w = -height % multiple, -width % multiple
        if pad_h or pad_w:
            x = jnp.pad(x, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)))

        emb_dim = 4 * self.base_features
        emb = timestep_embedding(t, self.base_features)
        emb = jnn.Dense(emb_dim, dtype=self.dtype, name="time_dense1")(emb)
        emb = jnn.Dense(emb_dim, dtype=self.dtype, name="time_dense2")(jax.nn.silu(emb))
        if self.num_classes is not None:
            if labels is None:
                labels = jnp.full((n,), self.num_classes, jnp.int32)
            table = self.param("class_embedding", nn.initializers.normal(1.0), (self.num_classes + 1, emb_dim))
            emb = emb + table[labels].astype(emb.dtype)

        block = lambda f, label: ResidualBlock(f, self.num_groups, self.dtype, name=label)  # noqa: E731
        h = jnn.Conv(self.base_features, 3, padding=1, dtype=self.dtype, name="stem")(x)
        skips = [h]
        levels = len(self.channel_multipliers)
        for i, m in enumerate(self.channel_multipliers):
            for j in range(self.num_res_blocks):
                h = block(self.base_features * m, f"down{i}_block{j}")(h, emb)
                skips.append(h)
            if i < levels - 1:
                h = jnn.Conv(h.shape[-1], 3, stride=2, padding=1, dtype=self.dtype, name=f"down{i}_downsample")(h)
                skips.append(h)
        h = block(h.shape[-1], "middle_block1")(h, emb)
        if self.attention:
            h = SelfAttention(self.num_groups, self.dtype, name="middle_attention")(h)
        h = block(h.shape[-1], "middle_block2")(h, emb)
        for i in reversed(range(levels)):
            for j in range(self.num_res_blocks + 1):
                h = block(self.base_features * self.channel_multipliers[i], f"up{i}_block{j}")(
                    jnp.concatenate([h, skips.pop()], axis=-1), emb)
            if i > 0:
                h = F.upsample(h, scale_factor=2, method="nearest")
                h = jnn.Conv(h.shape[-1], 3, padding=1, dtype=self.dtype, name=f"up{i}_upsample")(h)
        h = jax.nn.silu(jnn.GroupNorm(self.num_groups, dtype=self.dtype, name="out_norm")(h))
        out = jnn.Conv(self.out_channels or channels, 3, padding=1, dtype=self.dtype,
                       kernel_init=nn.initializers.zeros, name="out_conv")(h)
        return out[:, :height, :width, :]
