"""Flax linen modules: thin wrappers that own parameters and state for ``jaxcnn.functional``.

Each module's ``__call__`` creates its parameters and calls the functional op with them, so a
module and its op give the same numbers by construction (tested). Arguments and defaults are
the functional op's. Parameters live in ``params``; batch-norm running statistics in
``batch_stats``. ``dtype`` is the compute dtype (e.g. ``jnp.bfloat16``) and ``param_dtype``
the storage dtype (float32 by default), as in Flax.

Modules that behave differently in training take ``train: bool`` in ``__call__``
(``BatchNorm``, ``Dropout``, ``Sequential``); the others ignore it.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.linen.dtypes import promote_dtype

from jaxcnn import functional as F
from jaxcnn.functional import _arguments as args
from jaxcnn.functional.conv import kernel_shape as conv_kernel_shape

Initializer = Callable[..., jax.Array]


def fan_in_init(scale: float = 1.0, distribution: str = "truncated_normal", *, layout: str = "NHWC") -> Initializer:
    """Variance-scaling init (``scale / fan_in``) for a conv or dense kernel in ``layout``.

    NHWC kernels are ``(*window, I, O)``, NCHW ones ``(O, I, *window)``; the fan is taken on
    the right axes for either. ``scale=1`` is LeCun init (Flax's default), ``2`` He init.
    """
    last = args.channels_last(layout, "fan_in_init")

    def init(key, shape, dtype=jnp.float32):
        in_axis, out_axis = (-2, -1) if last or len(shape) == 2 else (1, 0)
        return nn.initializers.variance_scaling(scale, "fan_in", distribution, in_axis=in_axis, out_axis=out_axis)(
            key, shape, dtype
        )

    return init


def he_fan_out_init(*, layout: str = "NHWC") -> Initializer:
    """Kaiming normal with ``fan_out`` (torchvision's ResNet conv init)."""
    last = args.channels_last(layout, "he_fan_out_init")

    def init(key, shape, dtype=jnp.float32):
        in_axis, out_axis = (-2, -1) if last else (1, 0)
        return nn.initializers.variance_scaling(2.0, "fan_out", "normal", in_axis=in_axis, out_axis=out_axis)(
            key, shape, dtype
        )

    return init


def _channels(x: jax.Array, layout: str, op: str) -> int:
    if x.ndim < 2:
        raise ValueError(f"{op}: x must have a batch and a channel axis, got shape {tuple(x.shape)}")
    return x.shape[-1] if args.channels_last(layout, op, x.ndim - 2 if x.ndim > 2 else None) else x.shape[1]


class _ConvBase(nn.Module):
    """Fields shared by :class:`Conv` and :class:`ConvTranspose`."""

    features: int
    kernel_size: int | Sequence[int]
    stride: int | Sequence[int] = 1
    dilation: int | Sequence[int] = 1
    groups: int = 1
    use_bias: bool = True
    layout: str = "NHWC"
    dtype: Any = None
    param_dtype: Any = jnp.float32
    kernel_init: Initializer | None = None
    bias_init: Initializer = nn.initializers.zeros
    precision: Any = None


class Conv(_ConvBase):
    """Convolution layer over :func:`jaxcnn.functional.conv` (1D/2D/3D by the input rank).

    Parameters: ``kernel`` ``(*window, C_in // groups, features)`` (NHWC) or
    ``(features, C_in // groups, *window)`` (NCHW), and ``bias`` ``(features,)``.
    Called as ``conv(x)`` with ``x`` ``(N, *spatial, C_in)`` (NHWC) or ``(N, C_in, *spatial)``
    (NCHW), floating; returns ``(N, *spatial_out, features)`` (or NCHW). A bad shape or
    argument raises ``ValueError``/``TypeError`` naming the layer, before initialisation.

    Args:
      features: output channels ``C_out``.
      kernel_size: window, an int (every spatial axis) or one per axis.
      stride: an int or one per axis.
      dilation: an int or one per axis.
      groups: ``C_in`` and ``features`` split into this many groups (``groups=C_in``: depthwise).
      use_bias: add a ``(features,)`` bias.
      layout: ``"NHWC"`` (channels last) or ``"NCHW"`` (PyTorch's order, for inputs and kernel).
      dtype: the compute dtype (e.g. ``jnp.bfloat16``); ``None``: promoted from the inputs.
      param_dtype: the dtype parameters are stored in.
      kernel_init: ``None``: :func:`fan_in_init` (PyTorch's default init) for ``layout``.
      bias_init: initializer of the bias.
      precision: ``lax`` precision of the convolution.
      padding: ``"VALID"``, ``"SAME"``, an int, one per axis or ``(lo, hi)`` pairs.
      padding_mode: ``"zeros"``, ``"constant"``, ``"reflect"``, ``"replicate"`` or ``"circular"``.
      pad_value: the value of ``"constant"`` padding.
    """

    padding: Any = "VALID"
    padding_mode: str = "zeros"
    pad_value: float = 0.0

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        del train
        # The op's own checks, run before the kernel is created (initialising it compiles).
        shape = conv_kernel_shape(x, self.features, self.kernel_size, stride=self.stride, dilation=self.dilation,
                                  groups=self.groups, layout=self.layout, transpose=False, op=f"Conv({self.name})")
        init = self.kernel_init or fan_in_init(layout=self.layout)
        kernel = self.param("kernel", init, shape, self.param_dtype)
        bias = self.param("bias", self.bias_init, (self.features,), self.param_dtype) if self.use_bias else None
        x, kernel, bias = promote_dtype(x, kernel, bias, dtype=self.dtype)
        return F.conv(
            x, kernel, bias, stride=self.stride, padding=self.padding, dilation=self.dilation, groups=self.groups,
            padding_mode=self.padding_mode, pad_value=self.pad_value, layout=self.layout, precision=self.precision,
        )


class ConvTranspose(_ConvBase):
    """Transposed convolution over :func:`jaxcnn.functional.conv_transpose`.

    Parameters: ``kernel`` ``(*window, C_in, features // groups)`` (NHWC) or PyTorch's
    ``(C_in, features // groups, *window)`` (NCHW), and ``bias`` ``(features,)``.
    """

    padding: Any = 0
    output_padding: int | Sequence[int] = 0

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        del train
        shape = conv_kernel_shape(x, self.features, self.kernel_size, stride=self.stride, dilation=self.dilation,
                                  groups=self.groups, layout=self.layout, transpose=True,
                                  op=f"ConvTranspose({self.name})")
        last = args.channels_last(self.layout, "ConvTranspose")
        # The fan-in of a transposed conv is the contribution count of the input channels.
        default = nn.initializers.variance_scaling(
            1.0, "fan_out", "truncated_normal", in_axis=-1 if last else 1, out_axis=-2 if last else 0
        )
        kernel = self.param("kernel", self.kernel_init or default, shape, self.param_dtype)
        bias = self.param("bias", self.bias_init, (self.features,), self.param_dtype) if self.use_bias else None
        x, kernel, bias = promote_dtype(x, kernel, bias, dtype=self.dtype)
        return F.conv_transpose(
            x, kernel, bias, stride=self.stride, padding=self.padding, output_padding=self.output_padding,
            dilation=self.dilation, groups=self.groups, layout=self.layout, precision=self.precision,
        )


class Dense(nn.Module):
    """Fully connected layer over :func:`jaxcnn.functional.dense`: ``kernel`` ``(in, features)``.

    Called as ``dense(x)`` with ``x`` ``(..., in)`` floating; returns ``(..., features)``.

    Args:
      features: output features.
      use_bias: add a ``(features,)`` bias.
      dtype: the compute dtype; ``None``: promoted from the inputs.
      param_dtype: the dtype parameters are stored in.
      kernel_init: initializer of the ``(in, features)`` kernel (Flax's LeCun normal).
      bias_init: initializer of the bias.
      precision: ``lax`` precision of the matmul.
    """

    features: int
    use_bias: bool = True
    dtype: Any = None
    param_dtype: Any = jnp.float32
    kernel_init: Initializer = nn.initializers.lecun_normal()
    bias_init: Initializer = nn.initializers.zeros
    precision: Any = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        del train
        op = f"Dense({self.name})"
        x = jnp.asarray(x)
        if x.ndim < 1:
            raise ValueError(f"{op}: x must have a feature axis, got shape {tuple(x.shape)}")
        args.check_floating(x, "x", op)
        if isinstance(self.features, bool) or not isinstance(self.features, int) or self.features < 1:
            raise ValueError(f"{op}: features must be a positive int, got {self.features!r}")
        kernel = self.param("kernel", self.kernel_init, (x.shape[-1], self.features), self.param_dtype)
        bias = self.param("bias", self.bias_init, (self.features,), self.param_dtype) if self.use_bias else None
        x, kernel, bias = promote_dtype(x, kernel, bias, dtype=self.dtype)
        return F.dense(x, kernel, bias, precision=self.precision)


class BatchNorm(nn.Module):
    """Batch normalisation over :func:`jaxcnn.functional.batch_norm` (PyTorch semantics).

    ``momentum`` is the weight of the new batch statistic (PyTorch's convention, 0.1).
    Running ``mean``/``var`` live in the ``batch_stats`` collection and are updated when
    ``train=True`` and ``batch_stats`` is mutable. ``axis_name`` synchronises the statistics
    across devices (``shard_map``/``pmap``).

    Called as ``bn(x, train)`` with ``x`` ``(N, ..., C)`` (NHWC) or ``(N, C, ...)`` (NCHW):
    batch statistics when ``train``, the running ones otherwise; returns ``x``'s shape.

    Args:
      momentum: weight of the new batch statistic in the running ones.
      eps: added to the variance.
      use_scale: learn a ``(C,)`` scale.
      use_bias: learn a ``(C,)`` shift.
      axis_name: the mapped axis to average statistics over (``None``: this device's batch).
      layout: where the channel axis is, ``"NHWC"`` or ``"NCHW"``.
      dtype: the compute dtype; ``None``: promoted from the inputs.
      param_dtype: the dtype parameters and statistics are stored in.
      scale_init: initializer of the scale.
      bias_init: initializer of the shift.
    """

    momentum: float = 0.1
    eps: float = 1e-5
    use_scale: bool = True
    use_bias: bool = True
    axis_name: Any = None
    layout: str = "NHWC"
    dtype: Any = None
    param_dtype: Any = jnp.float32
    scale_init: Initializer = nn.initializers.ones
    bias_init: Initializer = nn.initializers.zeros

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        op = f"BatchNorm({self.name})"
        x = jnp.asarray(x)
        c = _channels(x, self.layout, op)
        args.check_floating(x, "x", op)
        if isinstance(self.momentum, bool) or not isinstance(self.momentum, (int, float)) or not 0 <= self.momentum <= 1:
            raise ValueError(f"{op}: momentum must be a number in [0, 1] (the new batch's weight), got {self.momentum!r}")
        if isinstance(self.eps, bool) or not isinstance(self.eps, (int, float)) or not self.eps > 0:
            raise ValueError(f"{op}: eps must be a positive number, got {self.eps!r}")
        mean = self.variable("batch_stats", "mean", lambda: jnp.zeros((c,), jnp.float32))
        var = self.variable("batch_stats", "var", lambda: jnp.ones((c,), jnp.float32))
        scale = self.param("scale", self.scale_init, (c,), self.param_dtype) if self.use_scale else None
        bias = self.param("bias", self.bias_init, (c,), self.param_dtype) if self.use_bias else None
        (x,) = promote_dtype(x, dtype=self.dtype)
        if scale is not None:
            scale = scale.astype(x.dtype)
        if bias is not None:
            bias = bias.astype(x.dtype)
        y, new_mean, new_var = F.batch_norm(
            x, scale, bias, mean.value, var.value, train=bool(train), momentum=self.momentum, eps=self.eps,
            axis_name=None if self.is_initializing() else self.axis_name, layout=self.layout,
        )
        if train and not self.is_initializing():
            mean.value, var.value = new_mean, new_var
        return y


class GroupNorm(nn.Module):
    """Group normalisation over :func:`jaxcnn.functional.group_norm`."""

    num_groups: int = 32
    eps: float = 1e-5
    use_scale: bool = True
    use_bias: bool = True
    layout: str = "NHWC"
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        del train
        op = f"GroupNorm({self.name})"
        x = jnp.asarray(x)
        c = _channels(x, self.layout, op)
        args.check_floating(x, "x", op)
        if isinstance(self.num_groups, bool) or not isinstance(self.num_groups, int) or self.num_groups < 1 or c % self.num_groups:
            raise ValueError(
                f"{op}: num_groups must be a positive int dividing the channels C={c}, got {self.num_groups!r} "
                f"(x shape {tuple(x.shape)})"
            )
        scale = self.param("scale", nn.initializers.ones, (c,), self.param_dtype) if self.use_scale else None
        bias = self.param("bias", nn.initializers.zeros, (c,), self.param_dtype) if self.use_bias else None
        x, scale, bias = promote_dtype(x, scale, bias, dtype=self.dtype)
        return F.group_norm(x, self.num_groups, scale, bias, eps=self.eps, layout=self.layout)


class LayerNorm(nn.Module):
    """Layer normalisation over the trailing ``normalized_ndim`` axes (:func:`jaxcnn.functional.layer_norm`)."""

    normalized_ndim: int = 1
    eps: float = 1e-5
    use_scale: bool = True
    use_bias: bool = True
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        del train
        x = jnp.asarray(x)
        if not 1 <= self.normalized_ndim <= x.ndim:
            raise ValueError(f"LayerNorm({self.name}): normalized_ndim={self.normalized_ndim} for x of shape {tuple(x.shape)}")
        shape = tuple(x.shape[x.ndim - self.normalized_ndim :])
        scale = self.param("scale", nn.initializers.ones, shape, self.param_dtype) if self.use_scale else None
        bias = self.param("bias", nn.initializers.zeros, shape, self.param_dtype) if self.use_bias else None
        x, scale, bias = promote_dtype(x, scale, bias, dtype=self.dtype)
        return F.layer_norm(x, scale, bias, normalized_shape=shape, eps=self.eps)


class Dropout(nn.Module):
    """Dropout over :func:`jaxcnn.functional.dropout`; ``rate`` is the drop probability.

    Active only with ``train=True``. Masks are drawn per example from the example's global
    index ``g`` in the batch: example ``g``'s mask is ``F.dropout(fold_in(key, g), x[i], rate)``
    with ``key`` this layer's key of the ``"global_dropout"`` RNG stream (of ``"dropout"`` when
    the caller passes no ``"global_dropout"``). Under ``shard_map``/``pmap`` (``axis_name``
    set, as for BatchNorm) device ``d`` holds examples ``g = d * n + i`` of its ``n``, so every
    data-parallel mode and device count draws the masks of single-device training, as long as
    the key is the same on every device (``jaxcnn.train`` steps pass such a ``"global_dropout"``
    key). ``x``: ``(N, ...)``, leading axis the examples.
    """

    rate: float
    axis_name: Any = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        if isinstance(self.rate, bool) or not isinstance(self.rate, (int, float)) or not 0.0 <= self.rate <= 1.0:
            raise ValueError(
                f"Dropout({self.name}): rate is the drop probability and must be in [0, 1], got {self.rate!r}"
            )
        if not train or self.rate == 0.0:
            return F.dropout(None, x, self.rate, deterministic=True)
        if jnp.ndim(x) < 1:
            raise ValueError(f"Dropout({self.name}): x needs a leading example axis, got shape {jnp.shape(x)}")
        key = self.make_rng("global_dropout" if self.has_rng("global_dropout") else "dropout")
        n = x.shape[0]
        first = 0 if self.axis_name is None else jax.lax.axis_index(self.axis_name) * n
        indices = first + jnp.arange(n, dtype=jnp.int32)
        return jax.vmap(lambda i, row: F.dropout(jax.random.fold_in(key, i), row, self.rate))(indices, x)


class _Pool(nn.Module):
    """Window pooling with the functional op's arguments."""

    window: int | Sequence[int]
    stride: int | Sequence[int] | None = None
    padding: Any = 0
    ceil_mode: bool = False
    layout: str = "NHWC"

    def _op_kwargs(self) -> dict[str, Any]:
        return dict(stride=self.stride, padding=self.padding, ceil_mode=self.ceil_mode, layout=self.layout)


class MaxPool(_Pool):
    """Max pooling (:func:`jaxcnn.functional.max_pool`); ``stride`` defaults to ``window``."""

    dilation: int | Sequence[int] = 1

    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        return F.max_pool(x, self.window, dilation=self.dilation, **self._op_kwargs())


class MinPool(_Pool):
    """Min pooling (:func:`jaxcnn.functional.min_pool`)."""

    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        return F.min_pool(x, self.window, **self._op_kwargs())


class AvgPool(_Pool):
    """Average pooling (:func:`jaxcnn.functional.avg_pool`)."""

    count_include_pad: bool = True
    divisor_override: int | None = None

    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        return F.avg_pool(
            x, self.window, count_include_pad=self.count_include_pad, divisor_override=self.divisor_override,
            **self._op_kwargs(),
        )


class GlobalAvgPool(nn.Module):
    """Mean over all spatial axes: ``(N, *spatial, C) -> (N, C)`` (NHWC)."""

    layout: str = "NHWC"
    keepdims: bool = False

    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        return F.global_avg_pool(x, layout=self.layout, keepdims=self.keepdims)


class GlobalMaxPool(nn.Module):
    """Max over all spatial axes: ``(N, *spatial, C) -> (N, C)`` (NHWC)."""

    layout: str = "NHWC"
    keepdims: bool = False

    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        return F.global_max_pool(x, layout=self.layout, keepdims=self.keepdims)


class Upsample(nn.Module):
    """Resizing by ``scale_factor`` or to ``size`` (:func:`jaxcnn.functional.upsample`)."""

    scale_factor: Any = None
    size: Any = None
    method: str = "nearest"
    align_corners: bool = False
    layout: str = "NHWC"

    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        return F.upsample(
            x, scale_factor=self.scale_factor, size=self.size, method=self.method,
            align_corners=self.align_corners, layout=self.layout,
        )


class Flatten(nn.Module):
    """``(N, ...) -> (N, prod(...))`` (:func:`jaxcnn.functional.flatten`)."""

    start_axis: int = 1

    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        return F.flatten(x, self.start_axis)


def _accepts_train(layer: Callable) -> bool:
    fn = layer.__call__ if isinstance(layer, nn.Module) else layer
    try:
        return "train" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


class Sequential(nn.Module):
    """Applies ``layers`` in order; ``train`` reaches the layers whose ``__call__`` takes it.

    Layers may be modules or plain functions such as ``jaxcnn.functional.relu``::

      Sequential([Conv(32, 3), F.relu, MaxPool(2), Flatten(), Dense(10)])
    """

    layers: Sequence[Callable]

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        if not self.layers:
            raise ValueError("Sequential: layers is empty")
        for i, layer in enumerate(self.layers):
            if not callable(layer):
                raise TypeError(f"Sequential: layers[{i}] must be a module or a function, got {layer!r}")
        for layer in self.layers:
            x = layer(x, train=train) if _accepts_train(layer) else layer(x)
        return x
