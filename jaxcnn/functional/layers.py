"""Dense (fully connected), flatten and dropout."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from jaxcnn.functional import _arguments as args


def dense(x: Any, kernel: Any, bias: Any = None, *, precision: Any = None) -> jnp.ndarray:
    """Fully connected layer ``x @ kernel + bias`` over the last axis of ``x``.

    Args:
      x: ``(..., in_features)``, floating.
      kernel: ``(in_features, out_features)``, the dtype of ``x`` (Flax's convention).
        PyTorch's ``nn.Linear.weight`` is ``(out_features, in_features)``: pass
        ``kernel = weight.T`` to get the numbers of ``F.linear(x, weight, bias)``.
      bias: optional ``(out_features,)``.
      precision: passed to ``lax.dot_general``.

    Returns:
      ``(..., out_features)`` in the dtype of ``x``.
    """
    op = "dense"
    x = args.as_array(x, "x", op)
    kernel = args.as_array(kernel, "kernel", op)
    if x.ndim < 1:
        raise ValueError(f"{op}: x must have rank >= 1 (..., in_features), got a scalar")
    args.check_rank(kernel, "kernel", op, (2,), "(in_features, out_features)")
    args.check_floating(x, "x", op)
    if x.dtype != kernel.dtype:
        raise TypeError(
            f"{op}: x has dtype {x.dtype} but kernel has dtype {kernel.dtype}; cast one to the "
            f"other (e.g. kernel.astype(x.dtype)) so the compute precision is explicit"
        )
    if x.shape[-1] != kernel.shape[0]:
        raise ValueError(
            f"{op}: x of shape {tuple(x.shape)} has {x.shape[-1]} input features but kernel of "
            f"shape {tuple(kernel.shape)} (in_features, out_features) expects {kernel.shape[0]}; "
            f"a PyTorch Linear weight (out, in) must be transposed: kernel = weight.T"
        )
    y = lax.dot_general(x, kernel, (((x.ndim - 1,), (0,)), ((), ())), precision=precision)
    if bias is not None:
        bias = args.as_array(bias, "bias", op)
        if bias.shape != (kernel.shape[1],):
            raise ValueError(
                f"{op}: bias must have shape ({kernel.shape[1]},) (one per output feature), got "
                f"{tuple(bias.shape)}"
            )
        y = y + bias.astype(y.dtype).reshape((1,) * (y.ndim - 1) + (kernel.shape[1],))
    return y


def _check_axis(axis: Any, ndim: int, name: str, op: str, shape: tuple[int, ...]) -> int:
    if isinstance(axis, bool) or not isinstance(axis, int):
        raise TypeError(f"{op}: {name} must be an int, got {axis!r}")
    if not -ndim <= axis < ndim:
        raise ValueError(f"{op}: {name}={axis} is out of range for x of shape {shape} (rank {ndim})")
    return axis % ndim


def flatten(x: Any, start_axis: int = 1, end_axis: int = -1) -> jnp.ndarray:
    """Merges axes ``start_axis..end_axis`` (inclusive) into one, as ``torch.flatten``.

    ``flatten(x)`` turns ``(N, H, W, C)`` into ``(N, H * W * C)``. The order of the merged
    features follows the layout: an NHWC map flattens as ``(h, w, c)`` and PyTorch's NCHW as
    ``(c, h, w)``, so a dense kernel trained on one layout does not fit the other without
    permuting its input rows.

    Args:
      x: an array of any shape and dtype (a scalar becomes ``(1,)``).
      start_axis: first axis merged (negative counts from the end).
      end_axis: last axis merged, inclusive.

    Returns:
      ``x`` reshaped, e.g. ``(N, H * W * C)``; the same dtype.

    Raises:
      ValueError: an axis is out of range, or ``start_axis`` comes after ``end_axis``.
    """
    op = "flatten"
    x = args.as_array(x, "x", op)
    shape = tuple(x.shape)
    if x.ndim == 0:
        return x.reshape((1,))
    start = _check_axis(start_axis, x.ndim, "start_axis", op, shape)
    end = _check_axis(end_axis, x.ndim, "end_axis", op, shape)
    if start > end:
        raise ValueError(
            f"{op}: start_axis={start_axis} comes after end_axis={end_axis} for x of shape {shape}"
        )
    merged = 1
    for size in shape[start : end + 1]:
        merged *= size
    return x.reshape(shape[:start] + (merged,) + shape[end + 1 :])


def dropout(key: Any, x: Any, rate: float, *, deterministic: bool = False) -> jnp.ndarray:
    """Inverted dropout: zeroes each element with probability ``rate``, scales the rest.

    Args:
      key: a ``jax.random`` key; may be ``None`` when ``deterministic`` or ``rate == 0``.
      x: any shape, floating.
      rate: the DROP probability in ``[0, 1]`` (PyTorch's ``p``; not stax's keep rate).
        Kept values are multiplied by ``1 / (1 - rate)`` so the expectation is unchanged;
        ``rate = 1`` returns zeros. A traced ``rate`` is allowed (not range-checked).
      deterministic: ``True`` (evaluation) returns ``x`` unchanged.

    Returns:
      An array of the shape and dtype of ``x``.
    """
    op = "dropout"
    x = args.as_array(x, "x", op)
    args.check_floating(x, "x", op)
    if not isinstance(deterministic, bool):
        raise TypeError(f"{op}: deterministic must be a Python bool, got {type(deterministic).__name__}")
    traced = isinstance(rate, jax.core.Tracer)
    if not traced:
        if isinstance(rate, (bool, str, bytes)):
            raise TypeError(f"{op}: rate must be a number in [0, 1], got {rate!r}")
        try:
            rate = float(rate)
        except TypeError as err:
            raise TypeError(f"{op}: rate must be a number in [0, 1], got {type(rate).__name__}") from err
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"{op}: rate is the drop probability and must be in [0, 1], got {rate!r}")
    if deterministic or (not traced and rate == 0.0):
        return x
    if not traced and rate == 1.0:
        return jnp.zeros_like(x)
    if key is None:
        raise TypeError(f"{op}: a random key is required when deterministic=False and rate > 0")
    keep_prob = 1.0 - rate
    if traced:
        keep_prob = jnp.asarray(keep_prob, jnp.float32)
    keep = jax.random.bernoulli(key, keep_prob, x.shape)
    if traced:
        # keep_prob = 0 keeps nothing; guard the division so it cannot make 0 * inf = NaN.
        factor = jnp.where(keep_prob > 0, 1.0 / jnp.maximum(keep_prob, 1e-30), 0.0).astype(x.dtype)
        return jnp.where(keep, x * factor, jnp.zeros((), x.dtype))
    return jnp.where(keep, x * jnp.asarray(1.0 / keep_prob, x.dtype), jnp.zeros((), x.dtype))
