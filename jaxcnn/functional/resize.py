"""Resizing (up- or down-sampling) of 1D/2D/3D batches, as ``torch.nn.functional.interpolate``.

The source positions and weights are computed once, in NumPy at trace time, with PyTorch's
float32 arithmetic, so nearest-neighbour picks the same pixels as PyTorch and linear modes
agree with it to rounding.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxcnn.functional import _arguments as args
from jaxcnn.functional.pooling import adaptive_avg_pool

# A linear method's name and the spatial rank it is limited to (None: any), as in PyTorch;
# "bicubic" is PyTorch's 2-D cubic convolution (Keys, A = -0.75).
_LINEAR = {"linear": None, "bilinear": 2, "trilinear": 3}
_CUBIC = {"bicubic": 2}
_RANK = {**_LINEAR, **_CUBIC}
METHODS = ("nearest", "nearest-exact", "area") + tuple(_LINEAR) + tuple(_CUBIC)
CUBIC_A = -0.75


def _scale_factors(scale_factor: Any, n: int, op: str) -> tuple[float, ...]:
    if isinstance(scale_factor, bool):
        raise TypeError(f"{op}: scale_factor must be a number or {n} numbers, got {scale_factor!r}")
    if isinstance(scale_factor, (int, float)):
        values = (float(scale_factor),) * n
    elif isinstance(scale_factor, Sequence) and not isinstance(scale_factor, str):
        if len(scale_factor) != n:
            raise ValueError(
                f"{op}: scale_factor={tuple(scale_factor)!r} has {len(scale_factor)} entries but the "
                f"input has {n} spatial dimension(s)"
            )
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in scale_factor):
            raise TypeError(f"{op}: scale_factor must contain numbers, got {tuple(scale_factor)!r}")
        values = tuple(float(v) for v in scale_factor)
    else:
        raise TypeError(f"{op}: scale_factor must be a number or {n} numbers, got {scale_factor!r}")
    if not all(math.isfinite(v) and v > 0 for v in values):
        raise ValueError(f"{op}: scale_factor must be positive and finite, got {values}")
    return values


def _nearest_index(size: int, out: int, scale: float | None, exact: bool) -> np.ndarray:
    """PyTorch's nearest source index for each output cell, in its float32 arithmetic."""
    dst = np.arange(out)
    ratio = np.float32(1.0 / scale) if scale is not None else np.float32(size) / np.float32(out)
    if exact:
        # (dst + 0.5) * scale is evaluated in double, then rounded to float for floorf.
        src = np.floor(((dst + 0.5) * np.float64(ratio)).astype(np.float32))
    elif out == size:
        return dst
    elif out == 2 * size:
        return dst >> 1
    else:
        src = np.floor(dst.astype(np.float32) * ratio)
    return np.minimum(src.astype(np.int64), size - 1)


def _source_positions(size: int, out: int, scale: float | None, align_corners: bool, dtype: np.dtype) -> np.ndarray:
    """PyTorch's source coordinate of each of the ``out`` output cells on one axis, unclamped."""
    dst = np.arange(out)
    if align_corners:
        ratio = dtype.type(size - 1) / dtype.type(out - 1) if out > 1 else dtype.type(0)
        return (np.float64(ratio) * dst).astype(dtype)
    ratio = dtype.type(1.0 / scale) if scale is not None else dtype.type(size) / dtype.type(out)
    # PyTorch's compiled `ratio * (dst + 0.5) - 0.5` is one fused multiply-add: exact product,
    # one rounding. Double precision reproduces it bit for bit.
    return (np.float64(ratio) * (dst + 0.5) - 0.5).astype(dtype)


def _linear_weights(
    size: int, out: int, scale: float | None, align_corners: bool, dtype: Any
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """PyTorch's ``(index0, index1, weight0, weight1)`` for linear interpolation on one axis."""
    dtype = np.dtype(dtype)
    # Linear clamps the source position at 0 (with align_corners it is never negative).
    src = np.maximum(_source_positions(size, out, scale, align_corners, dtype), dtype.type(0))
    index0 = np.minimum(np.floor(src).astype(np.int64), size - 1)
    lam = np.clip(src - index0.astype(dtype), dtype.type(0), dtype.type(1)).astype(dtype)
    index1 = index0 + (index0 < size - 1)
    return index0, index1, (dtype.type(1) - lam).astype(dtype), lam


def _cubic_weights(
    size: int, out: int, scale: float | None, align_corners: bool, dtype: Any
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """PyTorch's four source indices and weights per output cell for bicubic on one axis.

    The source position is not clamped (unlike linear); the taps ``floor(src) - 1 .. + 2`` are
    clamped to the border, i.e. the edge cells are repeated.
    """
    dtype = np.dtype(dtype)
    src = _source_positions(size, out, scale, align_corners, dtype)
    floor = np.floor(src)
    t = (src - floor).astype(np.float64)
    a = CUBIC_A

    def near(d):  # |d| <= 1
        return ((a + 2) * d - (a + 3)) * d * d + 1

    def far(d):  # 1 < |d| < 2
        return ((a * d - 5 * a) * d + 8 * a) * d - 4 * a

    weights = [far(t + 1), near(t), near(1 - t), far(2 - t)]
    start = floor.astype(np.int64) - 1
    indices = [np.clip(start + k, 0, size - 1) for k in range(4)]
    return indices, [w.astype(dtype) for w in weights]


def _take(x: jnp.ndarray, index: np.ndarray, axis: int) -> jnp.ndarray:
    size = x.shape[axis]
    if index.shape[0] == size and np.array_equal(index, np.arange(size)):
        return x
    repeat = index.shape[0] // size
    if (
        repeat > 1
        and index.shape[0] == repeat * size
        and np.array_equal(index, np.arange(size * repeat) // repeat)
    ):
        # Integer nearest upsampling: a broadcast, whose gradient is a sum, not a scatter-add.
        y = jnp.expand_dims(x, axis + 1)
        y = jnp.broadcast_to(y, x.shape[: axis + 1] + (repeat,) + x.shape[axis + 1 :])
        return y.reshape(x.shape[:axis] + (size * repeat,) + x.shape[axis + 1 :])
    return jnp.take(x, jnp.asarray(index, jnp.int32), axis=axis, mode="clip")


def upsample(
    x: Any,
    scale_factor: Any = None,
    size: Any = None,
    *,
    method: str = "nearest",
    align_corners: bool = False,
    recompute_scale_factor: bool = False,
    layout: str = "NHWC",
) -> jnp.ndarray:
    """Resizes the spatial axes of a batch; ``torch.nn.functional.interpolate`` with ``mode=method``.

    Args:
      x: ``(N, *spatial, C)`` for ``layout="NHWC"`` (default) or ``(N, C, *spatial)`` for
        ``"NCHW"``, with 1, 2 or 3 spatial axes.
      scale_factor: a positive number or one per spatial axis; the output size is
        ``floor(in * scale_factor)`` and, as in PyTorch, the source positions use
        ``1 / scale_factor`` (not ``in / out``) unless ``recompute_scale_factor``.
      size: the output size, an int or one int per spatial axis. Give exactly one of
        ``size`` and ``scale_factor``.
      method: ``"nearest"`` (PyTorch's: source ``floor(dst * in / out)``), ``"nearest-exact"``
        (``floor((dst + 0.5) * in / out)``, like Pillow/scikit-image), ``"linear"`` (any rank;
        ``"bilinear"`` for 2 and ``"trilinear"`` for 3 spatial axes are the same, rank-checked)
        , ``"bicubic"`` (2 spatial axes; PyTorch's cubic convolution with ``A = -0.75``, the
        four taps clamped at the border, so results may overshoot the input's range) or
        ``"area"`` (:func:`adaptive_avg_pool`).
      align_corners: linear and bicubic methods only: map the corner cells' centres onto each other
        (source ``dst * (in - 1) / (out - 1)``) instead of the corners' edges
        (``(dst + 0.5) * in / out - 0.5``, clamped at 0).
      layout: ``"NHWC"`` or ``"NCHW"``.

    Returns:
      ``(N, *out, C)`` (NHWC) or ``(N, C, *out)`` (NCHW) in ``x``'s dtype. Nearest and area
      accept any dtype that fits (nearest: any; area: floating); linear and bicubic need
      floating ``x`` and compute bfloat16/float16 in float32.

    Example: ``upsample(x, 2)`` doubles H and W of an ``(N, H, W, C)`` batch by repeating.
    """
    op = "upsample"
    x = args.as_array(x, "x", op)
    args.check_rank(x, "x", op, (3, 4, 5), "batch, 1-3 spatial axes and channels")
    n = x.ndim - 2
    last = args.channels_last(layout, op, n)
    if not isinstance(method, str) or method not in METHODS:
        raise ValueError(f"{op}: unknown method={method!r}; expected one of {METHODS}")
    if method in _RANK and _RANK[method] not in (None, n):
        raise ValueError(
            f"{op}: method={method!r} is for {_RANK[method]} spatial dimension(s) but x of shape "
            f"{tuple(x.shape)} has {n}; use method='linear', which fits any rank"
        )
    for name, flag in (("align_corners", align_corners), ("recompute_scale_factor", recompute_scale_factor)):
        if not isinstance(flag, bool):
            raise TypeError(f"{op}: {name} must be a bool, got {flag!r}")
    if align_corners and method not in _RANK:
        raise ValueError(
            f"{op}: align_corners=True only applies to linear and bicubic methods, not method={method!r}"
        )
    if method in _RANK or method == "area":
        args.check_floating(x, "x", op)

    axes = tuple(range(1, n + 1)) if last else tuple(range(2, n + 2))
    in_sizes = tuple(x.shape[a] for a in axes)
    if any(s < 1 for s in in_sizes):
        raise ValueError(f"{op}: x has an empty spatial axis, shape {tuple(x.shape)}")
    if (size is None) == (scale_factor is None):
        raise ValueError(
            f"{op}: give exactly one of size and scale_factor, "
            f"got size={size!r}, scale_factor={scale_factor!r}"
        )
    if size is not None:
        out_sizes = args.as_tuple(size, n, "size", op, broadcast_one=False)
        scales: tuple[float | None, ...] = (None,) * n
    else:
        factors = _scale_factors(scale_factor, n, op)
        out_sizes = tuple(math.floor(s * f) for s, f in zip(in_sizes, factors))
        if any(o < 1 for o in out_sizes):
            raise ValueError(
                f"{op}: scale_factor={factors} shrinks spatial size {in_sizes} to {out_sizes}; every "
                f"output size must be >= 1"
            )
        scales = (None,) * n if recompute_scale_factor else factors

    if method == "area":
        return adaptive_avg_pool(x, out_sizes, layout=layout)
    return _resize(x, axes, out_sizes, scales, method, align_corners)


# Jitted with its static plan, so an eager call compiles once instead of op by op.
@functools.partial(jax.jit, static_argnums=(1, 2, 3, 4, 5))
def _resize(
    x: jnp.ndarray,
    axes: tuple[int, ...],
    out_sizes: tuple[int, ...],
    scales: tuple[float | None, ...],
    method: str,
    align_corners: bool,
) -> jnp.ndarray:
    in_sizes = tuple(x.shape[a] for a in axes)
    if method in ("nearest", "nearest-exact"):
        for axis, s, o, scale in zip(axes, in_sizes, out_sizes, scales):
            x = _take(x, _nearest_index(s, o, scale, method == "nearest-exact"), axis)
        return x

    dtype = x.dtype
    compute = jnp.float32 if jnp.finfo(dtype).bits < 32 else dtype
    y = x.astype(compute)
    # Innermost axis first, the order PyTorch's separable CPU kernel combines them in.
    for j in reversed(range(len(axes))):
        axis, s, o = axes[j], in_sizes[j], out_sizes[j]
        if s == o and (scales[j] is None or align_corners):
            continue
        if method in _CUBIC:
            indices, weights = _cubic_weights(s, o, scales[j], align_corners, np.dtype(compute))
        else:
            i0, i1, w0, w1 = _linear_weights(s, o, scales[j], align_corners, np.dtype(compute))
            indices, weights = [i0, i1], [w0, w1]
        shape = tuple(o if a == axis else 1 for a in range(y.ndim))
        terms = [_take(y, i, axis) * jnp.asarray(w.reshape(shape)) for i, w in zip(indices, weights)]
        y = functools.reduce(lambda p, q: p + q, terms)
    return y.astype(dtype)
