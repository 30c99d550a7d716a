"""Weight initialisers: pure functions of a PRNG key and a shape, with PyTorch's definitions.

Every initialiser is ``f(key, shape, dtype=jnp.float32, *, ...) -> array of shape``, usable
directly (``w = kaiming_uniform(key, (3, 3, 16, 32))``) or as a Flax ``kernel_init`` through
``functools.partial``. Fans are read from the kernel's layout:

======================  ===========================  ===================================
layout                  conv kernel                  dense kernel (rank 2)
======================  ===========================  ===================================
``"NHWC"`` (default)    ``(*window, C_in, C_out)``   ``(in, out)`` (Flax, :func:`dense`)
``"NCHW"`` (PyTorch)    ``(C_out, C_in, *window)``   ``(out, in)`` (``nn.Linear.weight``)
======================  ===========================  ===================================

``fan_in = C_in * prod(window)`` and ``fan_out = C_out * prod(window)``; for a grouped conv
the kernel's ``C_in`` is already ``C_in // groups``, as in PyTorch. PyTorch computes the fans
of a transposed-conv weight ``(C_in, C_out // groups, *window)`` as if it were ``(O, I, ...)``;
pass that weight with ``layout="NCHW"`` to get the same numbers.

PyTorch's defaults for ``nn.Conv*d`` and ``nn.Linear``: :func:`torch_default_kernel`
(``kaiming_uniform`` with ``a = sqrt(5)``, i.e. ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``) and
:func:`torch_default_bias` (the same bound, from the kernel's fan-in).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp

from jaxcnn.functional import _arguments as args

MODES = ("fan_in", "fan_out")
# calculate_gain's table (torch.nn.init): the gain that keeps activations' variance.
_UNIT_GAIN = ("linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d",
              "conv_transpose3d", "sigmoid")
NONLINEARITIES = _UNIT_GAIN + ("tanh", "relu", "leaky_relu", "selu")


def calculate_gain(nonlinearity: str, param: float | None = None) -> float:
    """``torch.nn.init.calculate_gain``: 1 (linear, conv, sigmoid), 5/3 (tanh), sqrt(2) (relu),
    ``sqrt(2 / (1 + slope**2))`` (leaky_relu, slope ``param``, default 0.01), 3/4 (selu)."""
    op = "calculate_gain"
    if nonlinearity not in NONLINEARITIES:
        raise ValueError(f"{op}: unknown nonlinearity={nonlinearity!r}; expected one of {NONLINEARITIES}")
    if nonlinearity in _UNIT_GAIN:
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3.0
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "selu":
        return 3.0 / 4.0
    slope = 0.01 if param is None else param
    if isinstance(slope, bool) or not isinstance(slope, (int, float)) or not math.isfinite(slope):
        raise ValueError(f"{op}: the leaky_relu slope must be a finite number, got {param!r}")
    return math.sqrt(2.0 / (1.0 + slope**2))


def _check_shape(shape: Any, op: str) -> tuple[int, ...]:
    if isinstance(shape, int) or not isinstance(shape, Sequence):
        raise TypeError(f"{op}: shape must be a tuple of ints, got {shape!r}")
    if not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape):
        raise ValueError(f"{op}: shape must hold non-negative ints, got {tuple(shape)!r}")
    return tuple(shape)


def compute_fans(shape: Sequence[int], layout: str = "NHWC") -> tuple[int, int]:
    """``(fan_in, fan_out)`` of a dense (rank 2) or conv (rank 3-5) kernel in ``layout``.

    ``compute_fans((3, 3, 16, 32))`` is ``(144, 288)``; ``compute_fans((32, 16, 3, 3), "NCHW")``
    too (``torch.nn.init._calculate_fan_in_and_fan_out``).
    """
    op = "compute_fans"
    shape = _check_shape(shape, op)
    if len(shape) < 2:
        raise ValueError(
            f"{op}: fans need a kernel of rank >= 2 ((in, out) or a conv kernel), got shape {shape}; "
            f"a bias takes its bound from its kernel (torch_default_bias)"
        )
    last = args.channels_last(layout, op)
    if last:
        *window, c_in, c_out = shape
    else:
        c_out, c_in, *window = shape
    receptive = math.prod(window)
    return c_in * receptive, c_out * receptive


def _floating(dtype: Any, op: str) -> Any:
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"{op}: dtype must be a floating dtype, got {jnp.dtype(dtype)}")
    return dtype


def _fan(shape: tuple[int, ...], mode: str, layout: str, op: str) -> int:
    if mode not in MODES:
        raise ValueError(f"{op}: mode={mode!r} must be one of {MODES}")
    fan_in, fan_out = compute_fans(shape, layout)
    fan = fan_in if mode == "fan_in" else fan_out
    if fan == 0:
        raise ValueError(f"{op}: the {mode} of shape {shape} (layout {layout}) is 0; nothing to scale by")
    return fan


def _uniform(key: jax.Array, shape: tuple[int, ...], dtype: Any, bound: float) -> jnp.ndarray:
    return jax.random.uniform(key, shape, dtype, -bound, bound)


def _normal(key: jax.Array, shape: tuple[int, ...], dtype: Any, std: float) -> jnp.ndarray:
    return (std * jax.random.normal(key, shape, dtype)).astype(dtype)


def kaiming_uniform(key: jax.Array, shape: Sequence[int], dtype: Any = jnp.float32, *, a: float = 0.0,
                    mode: str = "fan_in", nonlinearity: str = "leaky_relu", layout: str = "NHWC") -> jnp.ndarray:
    """He uniform, ``torch.nn.init.kaiming_uniform_``: ``U(-b, b)``, ``b = gain * sqrt(3 / fan)``.

    ``gain = calculate_gain(nonlinearity, a)``; ``fan`` is ``mode``'s (see the module docstring).
    """
    op = "kaiming_uniform"
    shape = _check_shape(shape, op)
    std = calculate_gain(nonlinearity, a) / math.sqrt(_fan(shape, mode, layout, op))
    return _uniform(key, shape, _floating(dtype, op), math.sqrt(3.0) * std)


def kaiming_normal(key: jax.Array, shape: Sequence[int], dtype: Any = jnp.float32, *, a: float = 0.0,
                   mode: str = "fan_in", nonlinearity: str = "leaky_relu", layout: str = "NHWC") -> jnp.ndarray:
    """He normal, ``torch.nn.init.kaiming_normal_``: ``N(0, std**2)``, ``std = gain / sqrt(fan)``."""
    op = "kaiming_normal"
    shape = _check_shape(shape, op)
    std = calculate_gain(nonlinearity, a) / math.sqrt(_fan(shape, mode, layout, op))
    return _normal(key, shape, _floating(dtype, op), std)


def _fan_sum(shape: tuple[int, ...], layout: str, op: str) -> int:
    """``fan_in + fan_out`` (Glorot's scale), refused when zero."""
    fan_in, fan_out = compute_fans(shape, layout)
    if fan_in + fan_out == 0:
        raise ValueError(f"{op}: shape {shape} has no fan to scale by")
    return fan_in + fan_out


def xavier_uniform(key: jax.Array, shape: Sequence[int], dtype: Any = jnp.float32, *, gain: float = 1.0,
                   layout: str = "NHWC") -> jnp.ndarray:
    """Glorot uniform, ``torch.nn.init.xavier_uniform_``: ``b = gain * sqrt(6 / (fan_in + fan_out))``."""
    op = "xavier_uniform"
    shape = _check_shape(shape, op)
    fans = _fan_sum(shape, layout, op)
    return _uniform(key, shape, _floating(dtype, op), gain * math.sqrt(6.0 / fans))


def xavier_normal(key: jax.Array, shape: Sequence[int], dtype: Any = jnp.float32, *, gain: float = 1.0,
                  layout: str = "NHWC") -> jnp.ndarray:
    """Glorot normal, ``torch.nn.init.xavier_normal_``: ``std = gain * sqrt(2 / (fan_in + fan_out))``."""
    op = "xavier_normal"
    shape = _check_shape(shape, op)
    fans = _fan_sum(shape, layout, op)
    return _normal(key, shape, _floating(dtype, op), gain * math.sqrt(2.0 / fans))


# The names of the papers' authors, as other libraries spell them.
he_uniform = kaiming_uniform
he_normal = kaiming_normal
glorot_uniform = xavier_uniform
glorot_normal = xavier_normal


def torch_default_kernel(key: jax.Array, shape: Sequence[int], dtype: Any = jnp.float32, *,
                         layout: str = "NHWC") -> jnp.ndarray:
    """PyTorch's default ``nn.Conv*d`` / ``nn.Linear`` weight: ``kaiming_uniform(a=sqrt(5))``,
    which is ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``."""
    return kaiming_uniform(key, shape, dtype, a=math.sqrt(5.0), layout=layout)


def torch_default_bias(key: jax.Array, shape: Sequence[int], dtype: Any = jnp.float32, *,
                       fan_in: int) -> jnp.ndarray:
    """PyTorch's default ``nn.Conv*d`` / ``nn.Linear`` bias: ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``
    with the kernel's ``fan_in`` (``compute_fans(kernel_shape, layout)[0]``); zeros if it is 0."""
    op = "torch_default_bias"
    shape = _check_shape(shape, op)
    if isinstance(fan_in, bool) or not isinstance(fan_in, int) or fan_in < 0:
        raise ValueError(f"{op}: fan_in must be a non-negative int, got {fan_in!r}")
    bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
    return _uniform(key, shape, _floating(dtype, op), bound)
