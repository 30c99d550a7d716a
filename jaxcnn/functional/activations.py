"""Elementwise activations and (log-)softmax, with PyTorch's defaults.

Each returns an array of the shape and dtype of ``x``. ``relu`` accepts integer inputs; the
others need a floating ``x``.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from jaxcnn.functional import _arguments as args


def _floating(x: Any, op: str) -> jnp.ndarray:
    x = args.as_array(x, "x", op)
    args.check_floating(x, "x", op)
    return x


def relu(x: Any) -> jnp.ndarray:
    """``max(x, 0)``; its gradient at 0 is 0, as in PyTorch.

    Args:
      x: an array of any shape, floating or integer dtype.

    Returns:
      ``max(x, 0)``, the shape and dtype of ``x``.

    Raises:
      TypeError: ``x`` is not numeric (e.g. bool).
    """
    x = args.as_array(x, "x", "relu")
    if not (jnp.issubdtype(x.dtype, jnp.floating) or jnp.issubdtype(x.dtype, jnp.integer)):
        raise TypeError(f"relu: x must have a numeric dtype, got {x.dtype} (shape {tuple(x.shape)})")
    return jax.nn.relu(x)


def leaky_relu(x: Any, negative_slope: float = 0.01) -> jnp.ndarray:
    """``x`` for ``x >= 0``, ``negative_slope * x`` otherwise (PyTorch's default 0.01).

    Args:
      x: a floating array of any shape.
      negative_slope: the slope for negative inputs, a Python number.

    Returns:
      An array of the shape and dtype of ``x``.

    Raises:
      TypeError: ``x`` is not floating, or ``negative_slope`` is not a number.
    """
    op = "leaky_relu"
    x = _floating(x, op)
    if isinstance(negative_slope, bool) or not isinstance(negative_slope, (int, float)):
        raise TypeError(f"{op}: negative_slope must be a Python number, got {type(negative_slope).__name__}")
    return jnp.where(x >= 0, x, x * jnp.asarray(negative_slope, x.dtype))


def gelu(x: Any, approximate: bool = False) -> jnp.ndarray:
    """Gaussian error linear unit ``x * Phi(x)``.

    ``approximate=False`` (default, PyTorch's ``approximate='none'``) uses the exact erf;
    ``True`` is the tanh approximation (PyTorch's ``approximate='tanh'``). Note that
    ``jax.nn.gelu`` defaults to the approximation.

    Args:
      x: a floating array of any shape.
      approximate: ``True`` for the tanh approximation.

    Returns:
      An array of the shape and dtype of ``x``.

    Raises:
      TypeError: ``x`` is not floating, or ``approximate`` is not a bool.
    """
    op = "gelu"
    x = _floating(x, op)
    if not isinstance(approximate, bool):
        raise TypeError(f"{op}: approximate must be a bool, got {approximate!r}")
    return jax.nn.gelu(x, approximate=approximate)


def sigmoid(x: Any) -> jnp.ndarray:
    """``1 / (1 + exp(-x))``.

    Args:
      x: a floating array of any shape.

    Returns:
      Values in ``(0, 1)``, the shape and dtype of ``x``.

    Raises:
      TypeError: ``x`` is not floating.
    """
    return jax.nn.sigmoid(_floating(x, "sigmoid"))


def tanh(x: Any) -> jnp.ndarray:
    """Hyperbolic tangent.

    Args:
      x: a floating array of any shape.

    Returns:
      Values in ``(-1, 1)``, the shape and dtype of ``x``.

    Raises:
      TypeError: ``x`` is not floating.
    """
    return jnp.tanh(_floating(x, "tanh"))


def _axis(axis: Any, x: jnp.ndarray, op: str) -> int:
    if isinstance(axis, bool) or not isinstance(axis, int):
        raise TypeError(f"{op}: axis must be an int, got {axis!r}")
    if not -x.ndim <= axis < x.ndim:
        raise ValueError(f"{op}: axis={axis} is out of range for x of shape {tuple(x.shape)} (rank {x.ndim})")
    return axis


def softmax(x: Any, axis: int = -1) -> jnp.ndarray:
    """``exp(x) / sum(exp(x))`` along ``axis`` (use ``axis=1`` for NCHW class maps).

    Args:
      x: a floating array, e.g. logits ``(N, K)`` or ``(N, H, W, K)``.
      axis: the class axis.

    Returns:
      Probabilities summing to 1 along ``axis``, the shape and dtype of ``x``.

    Raises:
      TypeError: ``x`` is not floating, or ``axis`` is not an int.
      ValueError: ``axis`` is out of range for ``x``.
    """
    op = "softmax"
    x = _floating(x, op)
    return jax.nn.softmax(x, axis=_axis(axis, x, op))


def log_softmax(x: Any, axis: int = -1) -> jnp.ndarray:
    """``x - logsumexp(x)`` along ``axis``, computed stably.

    Args:
      x: a floating array, e.g. logits ``(N, K)`` or ``(N, H, W, K)``.
      axis: the class axis.

    Returns:
      Log-probabilities, the shape and dtype of ``x``.

    Raises:
      TypeError: ``x`` is not floating, or ``axis`` is not an int.
      ValueError: ``axis`` is out of range for ``x``.
    """
    op = "log_softmax"
    x = _floating(x, op)
    return jax.nn.log_softmax(x, axis=_axis(axis, x, op))
