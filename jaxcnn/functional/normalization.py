"""Batch, layer and group normalisation with PyTorch's semantics.

Statistics are computed in float32 for inputs narrower than 32 bits (bfloat16, float16) and
in the input's own dtype otherwise (float32, float64); the normalised output is cast back to
the input's dtype. Variances are computed in two passes (the mean first, then the mean of
squared deviations), never as ``E[x^2] - E[x]^2``, which cancels catastrophically when the
mean is large compared with the spread.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from jaxcnn.functional import _arguments as args


def _compute_dtype(dtype: Any) -> Any:
    """float32 for 8/16-bit floats, the dtype itself for float32/float64."""
    return jnp.dtype(jnp.float32) if jnp.dtype(dtype).itemsize < 4 else jnp.dtype(dtype)


def _check_number(value: Any, name: str, op: str, *, low: float, high: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        try:
            value = float(value)  # numpy scalars, concrete 0-d arrays
        except (TypeError, jax.errors.ConcretizationTypeError) as err:
            raise TypeError(f"{op}: {name} must be a Python number, got {type(value).__name__}") from err
    value = float(value)
    if not (value >= low and (high is None or value <= high)):
        bounds = f"[{low}, {high}]" if high is not None else f">= {low}"
        raise ValueError(f"{op}: {name} must be in {bounds}, got {value!r}")
    return value


def _check_vector(v: Any, name: str, c: int, x_shape: tuple[int, ...], op: str, what: str) -> jnp.ndarray | None:
    """``None`` or a floating ``(C,)`` array."""
    if v is None:
        return None
    v = args.as_array(v, name, op)
    if v.shape != (c,):
        raise ValueError(
            f"{op}: {name} must have shape ({c},) ({what}), got shape {tuple(v.shape)} "
            f"for x of shape {x_shape}"
        )
    args.check_floating(v, name, op)
    return v


def _channel_shape(ndim: int, channel_axis: int, c: int) -> tuple[int, ...]:
    shape = [1] * ndim
    shape[channel_axis] = c
    return tuple(shape)


# The numeric cores are jitted so that eager calls compile once per shape instead of
# dispatching op by op; inside a caller's jit/vmap/grad they are simply inlined.


def _affine(centred, inv, scale, bias, cshape, cdt):
    if scale is not None:
        inv = inv * scale.astype(cdt)
    y = centred * inv.reshape(cshape)
    if bias is not None:
        y = y + bias.astype(cdt).reshape(cshape)
    return y


@functools.partial(jax.jit, static_argnames=("channel_axis", "momentum", "eps", "axis_name"))
def _batch_norm_train(x, scale, bias, running_mean, running_var, mask, *, channel_axis, momentum, eps, axis_name):
    cdt = _compute_dtype(x.dtype)
    c = x.shape[channel_axis]
    cshape = _channel_shape(x.ndim, channel_axis, c)
    reduce_axes = tuple(a for a in range(x.ndim) if a != channel_axis)
    per_example = math.prod(x.shape[a] for a in reduce_axes[1:])
    xc = x.astype(cdt)
    if mask is None:
        weights = None
        count = jnp.asarray(x.shape[0] * per_example, cdt)
        total = jnp.sum(xc, axis=reduce_axes)
    else:
        weights = mask.astype(cdt).reshape((x.shape[0],) + (1,) * (x.ndim - 1))
        count = jnp.sum(mask.astype(cdt)) * per_example
        total = jnp.sum(xc * weights, axis=reduce_axes)
    if axis_name is not None:
        count, total = lax.psum((count, total), axis_name)
    mean = total / count
    # Second pass: squared deviations from the (global) mean, free of cancellation.
    centred = xc - mean.reshape(cshape)
    squares = centred * centred if weights is None else centred * centred * weights
    sq_dev = jnp.sum(squares, axis=reduce_axes)
    if axis_name is not None:
        sq_dev = lax.psum(sq_dev, axis_name)
    var = sq_dev / count
    y = _affine(centred, lax.rsqrt(var + eps), scale, bias, cshape, cdt)
    new_mean, new_var = running_mean, running_var
    if running_mean is not None:
        old = running_mean.astype(cdt)
        new_mean = lax.stop_gradient((1.0 - momentum) * old + momentum * mean).astype(running_mean.dtype)
    if running_var is not None:
        unbiased = sq_dev / jnp.maximum(count - 1.0, 1.0)
        old = running_var.astype(cdt)
        new_var = lax.stop_gradient((1.0 - momentum) * old + momentum * unbiased).astype(running_var.dtype)
    return y.astype(x.dtype), new_mean, new_var


@functools.partial(jax.jit, static_argnames=("channel_axis", "eps"))
def _batch_norm_eval(x, scale, bias, running_mean, running_var, *, channel_axis, eps):
    cdt = _compute_dtype(x.dtype)
    cshape = _channel_shape(x.ndim, channel_axis, x.shape[channel_axis])
    centred = x.astype(cdt) - running_mean.astype(cdt).reshape(cshape)
    y = _affine(centred, lax.rsqrt(running_var.astype(cdt) + eps), scale, bias, cshape, cdt)
    return y.astype(x.dtype)


def _channel_input(x: Any, layout: str, op: str) -> tuple[jnp.ndarray, int, int]:
    """Validates a per-channel-normalised input: ``(x, channel axis, number of channels)``."""
    x = args.as_array(x, "x", op)
    args.check_floating(x, "x", op)
    args.check_rank(x, "x", op, (2, 3, 4, 5), "(N, C) or batch, 1-3 spatial axes and channels")
    last = args.channels_last(layout, op, x.ndim - 2 if x.ndim > 2 else None)
    channel_axis = x.ndim - 1 if last else 1
    return x, channel_axis, x.shape[channel_axis]


def batch_norm(
    x: Any,
    scale: Any = None,
    bias: Any = None,
    running_mean: Any = None,
    running_var: Any = None,
    *,
    train: bool,
    momentum: float = 0.1,
    eps: float = 1e-5,
    axis_name: Any = None,
    mask: Any = None,
    layout: str = "NHWC",
) -> tuple[jnp.ndarray, jnp.ndarray | None, jnp.ndarray | None]:
    """Batch normalisation, ``torch.nn.functional.batch_norm`` semantics, with running stats.

    Args:
      x: ``(N, C)``, or ``(N, *spatial, C)`` for ``layout="NHWC"`` / ``(N, C, *spatial)`` for
        ``layout="NCHW"`` with 1-3 spatial axes. Statistics are per channel, over the batch
        and all spatial positions.
      scale, bias: optional ``(C,)`` affine parameters (PyTorch's ``weight``/``bias``);
        ``None`` leaves that part of the affine transform out.
      running_mean, running_var: ``(C,)`` running statistics. Required when ``train=False``;
        in training either may be ``None`` (PyTorch's ``track_running_stats=False``), and is
        then returned as ``None``.
      train: ``True`` normalises with the batch mean and the *biased* batch variance and
        updates the running stats; ``False`` normalises with the running stats and returns
        them unchanged. A Python bool (it selects the computation at trace time).
      momentum: the weight of the NEW batch statistic, as in PyTorch:
        ``new = (1 - momentum) * old + momentum * batch_stat``, where the variance entering
        the running average is the *unbiased* one (``n / (n - 1)`` times the biased).
        Flax's ``BatchNorm(momentum=m)`` weighs the OLD value, i.e. corresponds to
        ``1 - m`` here. In ``[0, 1]``.
      eps: added to the variance before the square root, ``>= 0``.
      axis_name: a named axis (``vmap``/``shard_map``/``pmap``) to reduce the statistics over
        (synchronised batch norm). The per-device example count, sum and sum of squared
        deviations from the global mean are ``psum``'d, so the result equals batch norm of
        the concatenated batch even when the devices hold different numbers of valid
        examples (see ``mask``). Costs two all-reduces of ``C + 1`` and ``C`` numbers.
      mask: optional boolean ``(N,)``; examples where it is ``False`` (padding) do not enter
        the statistics (their outputs are still normalised with them). Training only. An
        all-``False`` mask (on every device) gives NaN.
      layout: ``"NHWC"`` (channels last, default) or ``"NCHW"`` (PyTorch parity).

    Returns:
      ``(y, new_running_mean, new_running_var)``: ``y`` has the shape and dtype of ``x``;
      the running stats keep their own dtype and carry no gradient (``stop_gradient``, as
      PyTorch updates them outside autograd).

    Statistics are computed in float32 for bfloat16/float16 ``x`` (float64 for float64).
    With a single value per channel PyTorch refuses to train; here that raises when the
    count is known at trace time, and with ``mask``/``axis_name`` (count known only at run
    time) the unbiased correction ``n / (n - 1)`` is skipped for ``n = 1``.

    Example (PyTorch parity, NCHW)::

      y, rm, rv = batch_norm(x, w, b, rm, rv, train=True, layout="NCHW")
      # == F.batch_norm(x, rm, rv, w, b, training=True, momentum=0.1, eps=1e-5)
    """
    op = "batch_norm"
    x, channel_axis, c = _channel_input(x, layout, op)
    shape = tuple(x.shape)
    scale = _check_vector(scale, "scale", c, shape, op, f"one per channel, layout {layout}")
    bias = _check_vector(bias, "bias", c, shape, op, f"one per channel, layout {layout}")
    running_mean = _check_vector(running_mean, "running_mean", c, shape, op, f"one per channel, layout {layout}")
    running_var = _check_vector(running_var, "running_var", c, shape, op, f"one per channel, layout {layout}")
    if not isinstance(train, bool):
        raise TypeError(f"{op}: train must be a Python bool, got {type(train).__name__}")
    momentum = _check_number(momentum, "momentum", op, low=0.0, high=1.0)
    eps = _check_number(eps, "eps", op, low=0.0)
    if not train and (running_mean is None or running_var is None):
        raise ValueError(f"{op}: train=False normalises with the running stats; running_mean and running_var are required")
    if mask is not None:
        if not train:
            raise ValueError(f"{op}: mask only selects the examples of the batch statistics; it needs train=True")
        mask = args.as_array(mask, "mask", op)
        if mask.dtype != jnp.bool_ or mask.shape != (x.shape[0],):
            raise ValueError(
                f"{op}: mask must be a boolean array of shape ({x.shape[0]},) (one per example of x "
                f"with shape {shape}), got {mask.dtype} of shape {tuple(mask.shape)}"
            )
    args.check_nonempty(x, "x", op)
    if train and mask is None and axis_name is None and x.size // c <= 1:
        raise ValueError(
            f"{op}: training needs more than 1 value per channel, got x of shape {shape} (layout {layout})"
        )

    if not train:
        y = _batch_norm_eval(x, scale, bias, running_mean, running_var, channel_axis=channel_axis, eps=eps)
        return y, running_mean, running_var
    return _batch_norm_train(
        x, scale, bias, running_mean, running_var, mask,
        channel_axis=channel_axis, momentum=momentum, eps=eps, axis_name=axis_name,
    )


def _check_affine(v: Any, name: str, normalized_shape: tuple[int, ...], x: jnp.ndarray, op: str) -> jnp.ndarray | None:
    if v is None:
        return None
    v = args.as_array(v, name, op)
    if tuple(v.shape) != normalized_shape:
        raise ValueError(
            f"{op}: {name} must have shape normalized_shape={normalized_shape}, got "
            f"{tuple(v.shape)} (x shape {tuple(x.shape)})"
        )
    args.check_floating(v, name, op)
    return v


def layer_norm(
    x: Any,
    scale: Any = None,
    bias: Any = None,
    *,
    normalized_shape: int | Sequence[int] | None = None,
    eps: float = 1e-5,
) -> jnp.ndarray:
    """Layer normalisation over the trailing ``normalized_shape`` axes (``F.layer_norm``).

    Args:
      x: ``(*, *normalized_shape)``. For an NHWC feature map ``(N, H, W, C)``,
        ``normalized_shape=(C,)`` normalises each pixel's channels and ``(H, W, C)`` each
        whole example (PyTorch's ``LayerNorm([C, H, W])`` on NCHW).
      scale, bias: optional, of shape ``normalized_shape`` (elementwise affine).
      normalized_shape: an int or a tuple of the trailing sizes of ``x``. When ``None`` it is
        the shape of ``scale`` (or ``bias``) if given, else ``(x.shape[-1],)``.
      eps: added to the (biased) variance, ``>= 0``.

    Returns:
      ``(x - mean) / sqrt(var + eps) * scale + bias`` with the shape and dtype of ``x``;
      statistics in float32 for bfloat16/float16 inputs.
    """
    op = "layer_norm"
    x = args.as_array(x, "x", op)
    args.check_floating(x, "x", op)
    args.check_nonempty(x, "x", op)
    if normalized_shape is None:
        source = scale if scale is not None else bias
        normalized_shape = tuple(jnp.shape(source)) if source is not None else tuple(x.shape[-1:])
    elif isinstance(normalized_shape, int) and not isinstance(normalized_shape, bool):
        normalized_shape = (normalized_shape,)
    elif isinstance(normalized_shape, Sequence) and all(
        isinstance(v, int) and not isinstance(v, bool) for v in normalized_shape
    ):
        normalized_shape = tuple(normalized_shape)
    else:
        raise TypeError(f"{op}: normalized_shape must be an int or a tuple of ints, got {normalized_shape!r}")
    k = len(normalized_shape)
    if k == 0 or k > x.ndim or tuple(x.shape[x.ndim - k :]) != normalized_shape:
        raise ValueError(
            f"{op}: normalized_shape={normalized_shape} must be the trailing sizes of x, got x of "
            f"shape {tuple(x.shape)}"
        )
    scale = _check_affine(scale, "scale", normalized_shape, x, op)
    bias = _check_affine(bias, "bias", normalized_shape, x, op)
    eps = _check_number(eps, "eps", op, low=0.0)
    return _layer_norm(x, scale, bias, k=k, eps=eps)


def group_norm(
    x: Any,
    num_groups: int,
    scale: Any = None,
    bias: Any = None,
    *,
    eps: float = 1e-5,
    layout: str = "NHWC",
) -> jnp.ndarray:
    """Group normalisation (``F.group_norm``): per example, per group of channels.

    The ``C`` channels are split into ``num_groups`` contiguous blocks of ``C // num_groups``
    (channel ``c`` is in group ``c // (C // num_groups)``, as in PyTorch); each block is
    normalised over its channels and all spatial positions with the biased variance.
    ``num_groups=1`` is layer norm over ``(spatial, C)``; ``num_groups=C`` is instance norm.

    Args:
      x: ``(N, C)``, or ``(N, *spatial, C)`` (NHWC) / ``(N, C, *spatial)`` (NCHW) with 1-3
        spatial axes.
      num_groups: a positive int dividing ``C``.
      scale, bias: optional per-channel ``(C,)`` affine parameters.
      eps: added to the variance, ``>= 0``.
      layout: ``"NHWC"`` (default) or ``"NCHW"`` (PyTorch parity).

    Returns:
      The shape and dtype of ``x``; statistics in float32 for bfloat16/float16 inputs.
    """
    op = "group_norm"
    x, channel_axis, c = _channel_input(x, layout, op)
    shape = tuple(x.shape)
    if isinstance(num_groups, bool) or not isinstance(num_groups, int) or num_groups < 1:
        raise ValueError(f"{op}: num_groups must be a positive int, got {num_groups!r}")
    if c % num_groups:
        raise ValueError(
            f"{op}: num_groups={num_groups} must divide the number of channels C={c} "
            f"(x shape {shape}, layout {layout})"
        )
    scale = _check_vector(scale, "scale", c, shape, op, f"one per channel, layout {layout}")
    bias = _check_vector(bias, "bias", c, shape, op, f"one per channel, layout {layout}")
    eps = _check_number(eps, "eps", op, low=0.0)
    args.check_nonempty(x, "x", op)

    return _group_norm(x, scale, bias, num_groups=num_groups, channel_axis=channel_axis, eps=eps)


@functools.partial(jax.jit, static_argnames=("k", "eps"))
def _layer_norm(x, scale, bias, *, k, eps):
    cdt = _compute_dtype(x.dtype)
    axes = tuple(range(x.ndim - k, x.ndim))
    xc = x.astype(cdt)
    mean = jnp.mean(xc, axis=axes, keepdims=True)
    centred = xc - mean
    var = jnp.mean(centred * centred, axis=axes, keepdims=True)
    y = centred * lax.rsqrt(var + eps)
    full = (1,) * (x.ndim - k) + tuple(x.shape[x.ndim - k :])
    if scale is not None:
        y = y * scale.astype(cdt).reshape(full)
    if bias is not None:
        y = y + bias.astype(cdt).reshape(full)
    return y.astype(x.dtype)


@functools.partial(jax.jit, static_argnames=("num_groups", "channel_axis", "eps"))
def _group_norm(x, scale, bias, *, num_groups, channel_axis, eps):
    cdt = _compute_dtype(x.dtype)
    shape = tuple(x.shape)
    c, g = shape[channel_axis], num_groups
    if channel_axis == x.ndim - 1:
        grouped = x.astype(cdt).reshape(shape[:-1] + (g, c // g))
        axes = tuple(range(1, x.ndim - 1)) + (x.ndim,)  # spatial and within-group channel
    else:
        grouped = x.astype(cdt).reshape((shape[0], g, c // g) + shape[2:])
        axes = tuple(range(2, x.ndim + 1))
    mean = jnp.mean(grouped, axis=axes, keepdims=True)
    centred = grouped - mean
    var = jnp.mean(centred * centred, axis=axes, keepdims=True)
    y = (centred * lax.rsqrt(var + eps)).reshape(shape)
    cshape = _channel_shape(x.ndim, channel_axis, c)
    if scale is not None:
        y = y * scale.astype(cdt).reshape(cshape)
    if bias is not None:
        y = y + bias.astype(cdt).reshape(cshape)
    return y.astype(x.dtype)
