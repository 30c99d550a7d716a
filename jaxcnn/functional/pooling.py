"""Pooling and unpooling, 1D/2D/3D, on ``lax.reduce_window`` with PyTorch's semantics.

Every op takes ``x`` as ``(N, *spatial, C)`` (``layout="NHWC"``, the default) or
``(N, C, *spatial)`` (``layout="NCHW"``), with 1, 2 or 3 spatial axes. With ``layout="NCHW"``
the same arguments as ``torch.nn.functional.{max,avg}_pool{1,2,3}d`` and friends give the
same numbers, including ``ceil_mode``, ``count_include_pad`` and the tie-breaking of indices
and gradients (the first maximum in row-major window order wins).
"""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxcnn.functional import _arguments as args
from jaxcnn.functional import _backend


class _Geometry(NamedTuple):
    """A pooling window's placement, resolved from the user's arguments (all static)."""

    n: int  # spatial rank
    last: bool  # channels last
    in_sizes: tuple[int, ...]
    window: tuple[int, ...]
    stride: tuple[int, ...]
    dilation: tuple[int, ...]
    pads: tuple[tuple[int, int], ...]  # the user's (lo, hi) padding, "SAME"/"VALID" resolved
    extra: tuple[int, ...]  # padding ceil_mode adds after ``hi``
    out_sizes: tuple[int, ...]


def _spatial_axes(n: int, last: bool) -> tuple[int, ...]:
    return tuple(range(1, n + 1)) if last else tuple(range(2, n + 2))


def _full(n: int, last: bool, spatial: tuple[int, ...], fill: int = 1) -> tuple[int, ...]:
    """A full-rank tuple with ``spatial`` on the spatial axes and ``fill`` on N and C."""
    return (fill, *spatial, fill) if last else (fill, fill, *spatial)


def _check_bool(value: Any, name: str, op: str) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"{op}: {name} must be a bool, got {value!r}")


def _check_input(x: Any, op: str, *, floating: bool) -> jnp.ndarray:
    x = args.as_array(x, "x", op)
    args.check_rank(x, "x", op, (3, 4, 5), "batch, 1-3 spatial axes and channels")
    if floating:
        args.check_floating(x, "x", op)
    elif not (jnp.issubdtype(x.dtype, jnp.floating) or jnp.issubdtype(x.dtype, jnp.integer)):
        raise TypeError(
            f"{op}: x must have a floating or integer dtype, got {x.dtype} (shape {tuple(x.shape)})"
        )
    return x


def _geometry(
    x: jnp.ndarray,
    window: Any,
    stride: Any,
    padding: Any,
    dilation: Any,
    ceil_mode: bool,
    layout: str,
    op: str,
) -> _Geometry:
    n = x.ndim - 2
    last = args.channels_last(layout, op, n)
    in_sizes = tuple(x.shape[1:-1] if last else x.shape[2:])
    window = args.as_tuple(window, n, "window", op)
    stride = window if stride is None else args.as_tuple(stride, n, "stride", op)
    dilation = args.as_tuple(dilation, n, "dilation", op)
    _check_bool(ceil_mode, "ceil_mode", op)
    pad = args.explicit_padding(padding, n, op)
    if pad == "VALID":
        pad = ((0, 0),) * n
    elif pad == "SAME":
        pad = args.same_padding(in_sizes, window, stride, dilation)
    else:
        for axis, (k, (lo, hi)) in enumerate(zip(window, pad)):
            if lo > k // 2 or hi > k // 2:
                raise ValueError(
                    f"{op}: padding must be at most half the window on every side (as in PyTorch), "
                    f"got padding {(lo, hi)} for window {k} on spatial axis {axis} "
                    f"(window={window}, padding={pad}, x shape {tuple(x.shape)})"
                )
    extra, out_sizes = [], []
    for axis, (size, k, s, d, (lo, hi)) in enumerate(zip(in_sizes, window, stride, dilation, pad)):
        span = size + lo + hi - (d * (k - 1) + 1)
        out = (-(-span // s) if ceil_mode else span // s) + 1
        # PyTorch drops a last window that would start inside the right padding.
        if ceil_mode and out > 0 and (out - 1) * s >= size + lo:
            out -= 1
        if out < 1:
            raise ValueError(
                f"{op}: window is larger than the padded input on spatial axis {axis}: input "
                f"{size} + padding {(lo, hi)} < dilated window {d * (k - 1) + 1} "
                f"(x shape {tuple(x.shape)}, window={window}, dilation={dilation}, layout={layout!r})"
            )
        out_sizes.append(out)
        extra.append(max(0, (out - 1) * s + d * (k - 1) + 1 - (size + lo + hi)))
    return _Geometry(n, last, in_sizes, window, stride, dilation, pad, tuple(extra), tuple(out_sizes))


# reduce_window's init values are NumPy scalars on purpose: a jnp.array created while tracing
# becomes a tracer under jit + linearize, reduce_window then no longer recognises its monoid and
# second derivatives fail ("Linearization failed to produce known values", JAX 0.10).
def _identity(dtype: Any, is_max: bool) -> np.ndarray:
    """The identity of max (``-inf`` / the smallest int) or of min, as a NumPy scalar of ``dtype``."""
    if jnp.issubdtype(dtype, jnp.floating):
        return np.array(-np.inf if is_max else np.inf, dtype)
    info = jnp.iinfo(dtype)
    return np.array(info.min if is_max else info.max, dtype)


def _reduce_extremum(
    x: jnp.ndarray, axes: tuple[int, ...], is_max: bool, keepdims: bool = False
) -> jnp.ndarray:
    """``x``'s max (or min) over ``axes``; a NaN propagates."""
    return jnp.max(x, axis=axes, keepdims=keepdims) if is_max else jnp.min(x, axis=axes, keepdims=keepdims)


def _first_tangent(
    x: jnp.ndarray, t: jnp.ndarray, axes: tuple[int, ...], is_max: bool, extremum: jnp.ndarray | None = None
) -> jnp.ndarray:
    """The tangent ``t`` at the first extremum of ``x`` over ``axes`` (row-major order).

    ``extremum``: ``x``'s max/min over ``axes`` with ``keepdims``, when already computed. A NaN
    is the extremum (``jnp.max`` propagates it) and the first NaN takes the tangent, as
    ``jnp.argmax`` would. Everything stays in ``x``'s own layout: an index of each cell
    within its window, a masked min of it, and a one-hot select, which XLA fuses into a few
    elementwise loops (moving the window axes last first would cost two transposes of ``x``).
    """
    if extremum is None:
        extremum = _reduce_extremum(x, axes, is_max, keepdims=True)
    hit = x == extremum
    if jnp.issubdtype(x.dtype, jnp.floating):
        hit = hit | (jnp.isnan(x) & jnp.isnan(extremum))
    # Row-major position within the window: sum of iota(axis) * (product of later window sizes).
    position = None
    scale = 1
    for axis in reversed(axes):
        term = lax.broadcasted_iota(jnp.int32, x.shape, axis) * np.int32(scale)
        position = term if position is None else position + term
        scale *= x.shape[axis]
    none = np.int32(scale)  # larger than every position
    first = jnp.min(jnp.where(hit, position, none), axis=axes, keepdims=True)
    return jnp.sum(jnp.where(position == first, t, jnp.zeros_like(t)), axis=axes)


@functools.partial(jax.custom_jvp, nondiff_argnums=(1, 2))
def _choose(x: jnp.ndarray, axes: tuple[int, ...], is_max: bool) -> jnp.ndarray:
    """``jnp.max``/``jnp.min`` over ``axes`` whose gradient goes to the first extremum only.

    ``jnp.max`` shares the gradient among ties; PyTorch, and ``lax.reduce_window`` on CPU,
    give it to the first extremum in row-major order. This keeps every path consistent.
    """
    return _reduce_extremum(x, axes, is_max)


@_choose.defjvp
def _choose_jvp(axes, is_max, primals, tangents):
    (x,), (t,) = primals, tangents
    y = _choose(x, axes, is_max)
    return y, _first_tangent(x, t, axes, is_max, lax.expand_dims(y, axes))


def _reduce_window_extremum(x: jnp.ndarray, g: _Geometry, is_max: bool) -> jnp.ndarray:
    return lax.reduce_window(
        x,
        _identity(x.dtype, is_max),
        lax.max if is_max else lax.min,
        _full(g.n, g.last, g.window),
        _full(g.n, g.last, g.stride),
        _full(g.n, g.last, tuple((lo, hi + e) for (lo, hi), e in zip(g.pads, g.extra)), (0, 0)),
        window_dilation=_full(g.n, g.last, g.dilation),
    )


def _reference_extremum(x: jnp.ndarray, g: _Geometry, is_max: bool) -> jnp.ndarray:
    """The ``lax`` program of max/min pooling: ``reduce_window``, or with window dilation (for
    which JAX has no reverse-mode rule of ``reduce_window``) the scan of :func:`_sliced_pool`."""
    if any(d != 1 for d in g.dilation):
        return _sliced_pool(x, g, is_max, False)
    return _reduce_window_extremum(x, g, is_max)


# The kernels below are jitted with their static geometry: eager calls then run one compiled
# computation instead of dispatching op by op, and under an outer jit they simply inline. The
# backend in force is a static argument too, so a cached trace never outlives a switch.
@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def _extremum_pool(x: jnp.ndarray, g: _Geometry, is_max: bool, backend: Any) -> jnp.ndarray:
    kernel = None if backend is None else backend.extremum_pool(g, is_max)
    return _backend.dispatch(kernel, lambda x: _reference_extremum(x, g, is_max), x)


def max_pool(
    x: Any,
    window: Any,
    stride: Any = None,
    padding: Any = 0,
    *,
    dilation: Any = 1,
    ceil_mode: bool = False,
    layout: str = "NHWC",
) -> jnp.ndarray:
    """Max pooling, 1D/2D/3D by the rank of ``x``; ``torch.nn.functional.max_pool{1,2,3}d``.

    Args:
      x: ``(N, *spatial, C)`` (NHWC) or ``(N, C, *spatial)`` (NCHW), floating or integer.
      window: the window size, an int or one int per spatial axis.
      stride: an int or one int per spatial axis; defaults to ``window``.
      padding: an int, one int per axis, one ``(lo, hi)`` pair per axis (each at most
        ``window // 2``, as in PyTorch), ``"VALID"`` (= 0) or ``"SAME"`` (output
        ``ceil(in / stride)``, the extra padding at the end, exempt from the half-window rule).
      ceil_mode: round the output size up instead of down (PyTorch's ``ceil_mode``); a last
        window that would start inside the right padding is dropped.
      layout: ``"NHWC"`` (channels last, default) or ``"NCHW"`` (channels first).
      dilation: spacing between window elements, an int or one per axis.

    Returns:
      ``x``'s layout and dtype with ``out = floor((in + lo + hi - dilation * (window - 1) - 1)
      / stride) + 1`` (``ceil`` with ``ceil_mode``) per spatial axis. Padding never wins (it is
      ``-inf``). The gradient goes to the first maximum of each window in row-major order.

    Example: ``max_pool(x, 2)`` halves H and W of an ``(N, H, W, C)`` batch.
    """
    op = "max_pool"
    x = _check_input(x, op, floating=False)
    g = _geometry(x, window, stride, padding, dilation, ceil_mode, layout, op)
    return _extremum_pool(x, g, True, _backend.current())


def min_pool(
    x: Any,
    window: Any,
    stride: Any = None,
    padding: Any = 0,
    *,
    dilation: Any = 1,
    ceil_mode: bool = False,
    layout: str = "NHWC",
) -> jnp.ndarray:
    """Min pooling, the mirror of :func:`max_pool` (padding is ``+inf``; equals ``-max_pool(-x)``).

    Args:
      x: ``(N, *spatial, C)`` (NHWC) or ``(N, C, *spatial)`` (NCHW), floating or integer.
      window: the window size, an int or one int per spatial axis.
      stride: an int or one int per spatial axis; defaults to ``window``.
      padding: an int, one int per axis, one ``(lo, hi)`` pair per axis (each at most
        ``window // 2``, as in PyTorch), ``"VALID"`` (= 0) or ``"SAME"`` (output
        ``ceil(in / stride)``, the extra padding at the end, exempt from the half-window rule).
      ceil_mode: round the output size up instead of down (PyTorch's ``ceil_mode``); a last
        window that would start inside the right padding is dropped.
      layout: ``"NHWC"`` (channels last, default) or ``"NCHW"`` (channels first).
      dilation: spacing between window elements.

    Returns:
      Laid out like ``x``, with :func:`max_pool`'s output sizes.
    """
    op = "min_pool"
    x = _check_input(x, op, floating=False)
    g = _geometry(x, window, stride, padding, dilation, ceil_mode, layout, op)
    return _extremum_pool(x, g, False, _backend.current())


def _avg_divisor(g: _Geometry, count_include_pad: bool) -> np.ndarray:
    """PyTorch's per-window divisor as a ``(*out_spatial)`` float64 array.

    With ``count_include_pad`` a window counts the explicit padding it covers but not the extra
    region ``ceil_mode`` adds: ``min(start + k, in + hi) - start``; otherwise only input cells.
    """
    per_axis = []
    for size, k, s, (lo, hi), out in zip(g.in_sizes, g.window, g.stride, g.pads, g.out_sizes):
        start = np.arange(out) * s - lo
        end = np.minimum(start + k, size + hi)
        if count_include_pad:
            per_axis.append(end - start)
        else:
            per_axis.append(np.minimum(end, size) - np.maximum(start, 0))
    divisor = np.ones((), np.float64)
    for counts in per_axis:
        divisor = np.multiply.outer(divisor, counts.astype(np.float64))
    return divisor


def _accumulation_dtype(dtype: Any) -> Any:
    # bfloat16/float16 sums lose digits fast; accumulate in float32 as PyTorch does.
    return jnp.float32 if jnp.finfo(dtype).bits < 32 else dtype


def avg_pool(
    x: Any,
    window: Any,
    stride: Any = None,
    padding: Any = 0,
    *,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
    divisor_override: int | None = None,
    layout: str = "NHWC",
) -> jnp.ndarray:
    """Average pooling, 1D/2D/3D by the rank of ``x``; ``torch.nn.functional.avg_pool{1,2,3}d``.

    Args:
      x: ``(N, *spatial, C)`` (NHWC) or ``(N, C, *spatial)`` (NCHW), floating.
      window: the window size, an int or one int per spatial axis.
      stride: an int or one int per spatial axis; defaults to ``window``.
      padding: an int, one int per axis, one ``(lo, hi)`` pair per axis (each at most
        ``window // 2``, as in PyTorch), ``"VALID"`` (= 0) or ``"SAME"`` (output
        ``ceil(in / stride)``, the extra padding at the end, exempt from the half-window rule).
      ceil_mode: round the output size up instead of down (PyTorch's ``ceil_mode``); a last
        window that would start inside the right padding is dropped.
      layout: ``"NHWC"`` (channels last, default) or ``"NCHW"`` (channels first).
      count_include_pad: divide by the window's size including the zero padding it covers
        (but never the region ``ceil_mode`` adds), as PyTorch; ``False`` divides by the number
        of input cells in the window.
      divisor_override: a positive int to divide every window's sum by instead.

    Returns:
      Laid out like ``x``, with :func:`max_pool`'s output sizes (no dilation). bfloat16 and
      float16 inputs are summed in float32.
    """
    op = "avg_pool"
    x = _check_input(x, op, floating=True)
    _check_bool(count_include_pad, "count_include_pad", op)
    if divisor_override is not None and (
        isinstance(divisor_override, bool) or not isinstance(divisor_override, int) or divisor_override < 1
    ):
        raise ValueError(f"{op}: divisor_override must be None or a positive int, got {divisor_override!r}")
    g = _geometry(x, window, stride, padding, 1, ceil_mode, layout, op)
    return _avg_pool(x, g, count_include_pad, divisor_override)


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def _avg_pool(
    x: jnp.ndarray, g: _Geometry, count_include_pad: bool, divisor_override: int | None
) -> jnp.ndarray:
    acc = x.astype(_accumulation_dtype(x.dtype))
    summed = lax.reduce_window(
        acc,
        np.array(0, acc.dtype),
        lax.add,
        _full(g.n, g.last, g.window),
        _full(g.n, g.last, g.stride),
        _full(g.n, g.last, tuple((lo, hi + e) for (lo, hi), e in zip(g.pads, g.extra)), (0, 0)),
    )
    if divisor_override is not None:
        return (summed / divisor_override).astype(x.dtype)
    divisor = _avg_divisor(g, count_include_pad).reshape(_full(g.n, g.last, g.out_sizes))
    return (summed / jnp.asarray(divisor, acc.dtype)).astype(x.dtype)


def _global_axes(x: Any, layout: str, op: str, floating: bool) -> tuple[jnp.ndarray, bool]:
    x = _check_input(x, op, floating=floating)
    return x, args.channels_last(layout, op, x.ndim - 2)


def global_avg_pool(x: Any, *, keepdims: bool = False, layout: str = "NHWC") -> jnp.ndarray:
    """Mean over all spatial axes.

    Args:
      x: ``(N, *spatial, C)`` (NHWC) or ``(N, C, *spatial)`` (NCHW), floating.
      keepdims: keep the spatial axes with size 1 (PyTorch's ``adaptive_avg_pool2d(x, 1)``).

    Returns:
      ``(N, C)``, or ``(N, 1, .., 1, C)`` / ``(N, C, 1, .., 1)`` with ``keepdims``.
    """
    op = "global_avg_pool"
    x, last = _global_axes(x, layout, op, True)
    _check_bool(keepdims, "keepdims", op)
    return jnp.mean(x, axis=_spatial_axes(x.ndim - 2, last), keepdims=keepdims)


def global_max_pool(x: Any, *, keepdims: bool = False, layout: str = "NHWC") -> jnp.ndarray:
    """Maximum over all spatial axes; the gradient goes to the first maximum (row-major).

    Args:
      x: ``(N, *spatial, C)`` (NHWC) or ``(N, C, *spatial)`` (NCHW), floating or integer.
      keepdims: keep the spatial axes with size 1.

    Returns:
      ``(N, C)``, or ``(N, 1, .., 1, C)`` / ``(N, C, 1, .., 1)`` with ``keepdims``.
    """
    op = "global_max_pool"
    x, last = _global_axes(x, layout, op, False)
    _check_bool(keepdims, "keepdims", op)
    axes = _spatial_axes(x.ndim - 2, last)
    y = _choose(x, axes, True)
    if keepdims:
        y = y.reshape(tuple(1 if a in axes else size for a, size in enumerate(x.shape)))
    return y


def _adaptive_sizes(output_size: Any, in_sizes: tuple[int, ...], op: str) -> tuple[int, ...]:
    n = len(in_sizes)
    if (
        isinstance(output_size, (list, tuple))
        and len(output_size) == n
        and any(v is None for v in output_size)
    ):
        # PyTorch's None keeps that axis's input size.
        output_size = tuple(size if v is None else v for v, size in zip(output_size, in_sizes))
    return args.as_tuple(output_size, n, "output_size", op, broadcast_one=False)


def _adaptive_bins(size: int, out: int) -> tuple[np.ndarray, np.ndarray]:
    """PyTorch's adaptive bins: ``[floor(i * in / out), ceil((i + 1) * in / out))``."""
    i = np.arange(out)
    return (i * size) // out, -((-(i + 1) * size) // out)


def _adaptive_pool(x: jnp.ndarray, output_size: Any, layout: str, op: str, is_max: bool) -> jnp.ndarray:
    n = x.ndim - 2
    last = args.channels_last(layout, op, n)
    in_sizes = tuple(x.shape[1:-1] if last else x.shape[2:])
    out_sizes = _adaptive_sizes(output_size, in_sizes, op)
    for axis, size in enumerate(in_sizes):
        if size < 1:
            raise ValueError(f"{op}: spatial axis {axis} of x is empty (x shape {tuple(x.shape)})")
    return _adaptive_kernel(x, last, out_sizes, is_max)


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def _adaptive_kernel(x: jnp.ndarray, last: bool, out_sizes: tuple[int, ...], is_max: bool) -> jnp.ndarray:
    n = x.ndim - 2
    in_sizes = tuple(x.shape[1:-1] if last else x.shape[2:])
    y = x if is_max else x.astype(_accumulation_dtype(x.dtype))
    counts = np.ones((), np.float64)
    # Innermost axis first, so max's tie-break (first per axis) is row-major overall.
    for j in reversed(range(n)):
        axis = _spatial_axes(n, last)[j]
        size, out = in_sizes[j], out_sizes[j]
        starts, ends = _adaptive_bins(size, out)
        counts = np.multiply.outer((ends - starts).astype(np.float64), counts)
        if size % out == 0:
            k = size // out
            y = y.reshape(y.shape[:axis] + (out, k) + y.shape[axis + 1 :])
        else:
            k = int(np.max(ends - starts))
            index = starts[:, None] + np.arange(k)[None, :]
            valid = index < ends[:, None]
            y = jnp.take(y, np.minimum(index, size - 1).reshape(-1), axis=axis)
            y = y.reshape(y.shape[:axis] + (out, k) + y.shape[axis + 1 :])
            fill = _identity(y.dtype, True) if is_max else np.array(0, y.dtype)
            mask = valid.reshape((1,) * axis + (out, k) + (1,) * (y.ndim - axis - 2))
            y = jnp.where(mask, y, fill)
        y = _choose(y, (axis + 1,), True) if is_max else jnp.sum(y, axis=axis + 1)
    if is_max:
        return y
    divisor = jnp.asarray(counts.reshape(_full(n, last, out_sizes)), y.dtype)
    return (y / divisor).astype(x.dtype)


def adaptive_avg_pool(x: Any, output_size: Any, *, layout: str = "NHWC") -> jnp.ndarray:
    """Average over PyTorch's adaptive bins; ``torch.nn.functional.adaptive_avg_pool{1,2,3}d``.

    Output cell ``i`` of an axis of size ``in`` averages input cells
    ``[floor(i * in / out), ceil((i + 1) * in / out))``; bins may overlap.

    Args:
      x: ``(N, *spatial, C)`` (NHWC) or ``(N, C, *spatial)`` (NCHW), floating.
      output_size: an int or one int (or ``None``, keeping that axis) per spatial axis.

    Returns:
      ``(N, *output_size, C)`` (NHWC) or ``(N, C, *output_size)`` (NCHW).
    """
    op = "adaptive_avg_pool"
    x = _check_input(x, op, floating=True)
    return _adaptive_pool(x, output_size, layout, op, False)


def adaptive_max_pool(x: Any, output_size: Any, *, layout: str = "NHWC") -> jnp.ndarray:
    """Maximum over PyTorch's adaptive bins; ``torch.nn.functional.adaptive_max_pool{1,2,3}d``.

    Args:
      x: ``(N, *spatial, C)`` (NHWC) or ``(N, C, *spatial)`` (NCHW), floating or integer.
      output_size: an int or one int (or ``None``) per spatial axis; bins as in
        :func:`adaptive_avg_pool`.

    Returns:
      ``(N, *output_size, C)`` (NHWC) or ``(N, C, *output_size)`` (NCHW). The gradient goes
      to the first maximum of each bin in row-major order.
    """
    op = "adaptive_max_pool"
    x = _check_input(x, op, floating=False)
    return _adaptive_pool(x, output_size, layout, op, True)


def max_pool_with_indices(
    x: Any,
    window: Any,
    stride: Any = None,
    padding: Any = 0,
    *,
    dilation: Any = 1,
    ceil_mode: bool = False,
    layout: str = "NHWC",
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """:func:`max_pool` that also returns where each maximum came from, for :func:`max_unpool`.

    Same arguments and values as :func:`max_pool` (``F.max_pool2d(..., return_indices=True)``).

    Returns:
      ``(values, indices)``, both laid out like the output of :func:`max_pool`; ``indices``
      are int32 flat positions in each channel's unpadded spatial plane, whatever the layout:
      ``w`` (1D), ``h * W + w`` (2D), ``(d * H + h) * W + w`` (3D). Ties go to the first
      maximum in row-major window order and a NaN wins over numbers (the last NaN), as in
      PyTorch.
    """
    op = "max_pool_with_indices"
    x = _check_input(x, op, floating=False)
    g = _geometry(x, window, stride, padding, dilation, ceil_mode, layout, op)
    return _sliced_pool(x, g, True, True)


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def _sliced_pool(x: jnp.ndarray, g: _Geometry, is_max: bool, with_indices: bool) -> Any:
    """Max/min pooling as a scan over the window's offsets, each a strided slice of padded ``x``.

    This is PyTorch's loop, vectorised over windows: a cell replaces the running extremum only
    if strictly better (or NaN), so the first extremum keeps the index and the gradient.
    """
    n, last = g.n, g.last
    spatial = _spatial_axes(n, last)
    plane_strides = [math.prod(g.in_sizes[j + 1 :]) for j in range(n)]

    low = _identity(x.dtype, is_max)
    widths = [(0, 0)] * x.ndim
    for axis, (lo, hi), e in zip(spatial, g.pads, g.extra):
        widths[axis] = (lo, hi + e)
    padded = jnp.pad(x, widths, constant_values=low)
    out_shape = tuple(
        x.shape[a] if a not in spatial else g.out_sizes[spatial.index(a)] for a in range(x.ndim)
    )

    # Flat index of each window's first cell (may lie in the padding), built from iotas, and
    # PyTorch's starting guess: the first cell of the window inside the input.
    base = jnp.zeros(_full(n, last, g.out_sizes), jnp.int32)
    guess = jnp.zeros(_full(n, last, g.out_sizes), jnp.int32)
    for j in range(n):
        i = np.arange(g.out_sizes[j])
        start = i * g.stride[j] - g.pads[j][0]
        first = np.where(start < 0, start - (start // g.dilation[j]) * g.dilation[j], start)
        shape = _full(n, last, tuple(g.out_sizes[m] if m == j else 1 for m in range(n)))
        base = base + jnp.asarray((start * plane_strides[j]).astype(np.int32).reshape(shape))
        guess = guess + jnp.asarray((first * plane_strides[j]).astype(np.int32).reshape(shape))

    best = jnp.broadcast_to(low, out_shape)
    index = jnp.broadcast_to(guess, out_shape)
    for offset in np.ndindex(*g.window):
        begin = [0] * x.ndim
        end = list(out_shape)
        steps = [1] * x.ndim
        for j, axis in enumerate(spatial):
            begin[axis] = offset[j] * g.dilation[j]
            end[axis] = begin[axis] + (g.out_sizes[j] - 1) * g.stride[j] + 1
            steps[axis] = g.stride[j]
        value = lax.slice(padded, begin, end, steps)
        update = value > best if is_max else value < best
        if jnp.issubdtype(x.dtype, jnp.floating):
            update = update | jnp.isnan(value)
        best = jnp.where(update, value, best)
        if with_indices:
            shift = sum(offset[j] * g.dilation[j] * plane_strides[j] for j in range(n))
            index = jnp.where(update, jnp.broadcast_to(base + jnp.int32(shift), out_shape), index)
    return (best, index) if with_indices else best


def max_unpool(
    x: Any,
    indices: Any,
    window: Any,
    stride: Any = None,
    padding: Any = 0,
    *,
    output_size: Any = None,
    layout: str = "NHWC",
) -> jnp.ndarray:
    """The partial inverse of :func:`max_pool_with_indices`; ``F.max_unpool{1,2,3}d``.

    Every value of ``x`` is written at its index in a zero output; the rest stays zero.

    Args:
      x: pooled values, ``(N, *spatial, C)`` (NHWC) or ``(N, C, *spatial)`` (NCHW).
      indices: integer array of ``x``'s shape from :func:`max_pool_with_indices` (flat
        positions in each channel's output plane). Indices outside the plane are dropped
        (PyTorch raises; an index cannot be checked before it is computed).
      window, stride, padding: those of the pooling; ``stride`` defaults to ``window``,
        ``padding`` is an int, one int per axis or ``(lo, hi)`` pairs.
      output_size: the spatial size to restore, one int per axis (or ``x``'s full shape);
        each must lie strictly within ``default -+ stride``. Defaults to
        ``(in - 1) * stride - lo - hi + window``.

    Returns:
      ``(N, *output_size, C)`` (NHWC) or ``(N, C, *output_size)`` (NCHW), ``x``'s dtype.

    Gradient: as PyTorch's, ``dx = grad_out[indices]`` (a gather), also where overlapping
    windows (e.g. window 3, stride 2) repeat an index, so every duplicate receives it.
    """
    op = "max_unpool"
    x = _check_input(x, op, floating=False)
    indices = args.as_array(indices, "indices", op)
    if not jnp.issubdtype(indices.dtype, jnp.integer):
        raise TypeError(f"{op}: indices must have an integer dtype, got {indices.dtype}")
    if indices.shape != x.shape:
        raise ValueError(
            f"{op}: indices must have x's shape {tuple(x.shape)}, got shape {tuple(indices.shape)}"
        )
    n = x.ndim - 2
    last = args.channels_last(layout, op, n)
    in_sizes = tuple(x.shape[1:-1] if last else x.shape[2:])
    window = args.as_tuple(window, n, "window", op)
    stride = window if stride is None else args.as_tuple(stride, n, "stride", op)
    pad = args.explicit_padding(padding, n, op)
    if isinstance(pad, str):
        if pad != "VALID":
            raise ValueError(f"{op}: padding='SAME' is ambiguous here; pass the pooling's explicit padding")
        pad = ((0, 0),) * n
    default = tuple(
        (size - 1) * s - lo - hi + k for size, s, (lo, hi), k in zip(in_sizes, stride, pad, window)
    )
    if output_size is None:
        sizes = default
    else:
        if isinstance(output_size, (list, tuple)) and len(output_size) == x.ndim:
            output_size = tuple(output_size[1:-1] if last else output_size[2:])
        sizes = args.as_tuple(output_size, n, "output_size", op, broadcast_one=False)
        for axis, (size, d, s) in enumerate(zip(sizes, default, stride)):
            if not d - s < size < d + s:
                raise ValueError(
                    f"{op}: output_size={sizes} is out of range on spatial axis {axis}: must lie "
                    f"strictly between {d - s} and {d + s} (default {default}, x shape {tuple(x.shape)})"
                )
    if any(s < 1 for s in sizes):
        raise ValueError(f"{op}: the output would be empty, size {sizes} (x shape {tuple(x.shape)})")
    return _max_unpool(x, indices, sizes, last)


@functools.partial(jax.jit, static_argnums=(2, 3))
def _max_unpool(x: jnp.ndarray, indices: jnp.ndarray, sizes: tuple[int, ...], last: bool) -> jnp.ndarray:
    return _unpool_scatter(x, indices, sizes, last)


def _scatter_planes(x: jnp.ndarray, indices: jnp.ndarray, sizes: tuple[int, ...], last: bool,
                    accumulate: bool) -> jnp.ndarray:
    if last:
        x, indices = jnp.moveaxis(x, -1, 1), jnp.moveaxis(indices, -1, 1)
    rows = x.shape[0] * x.shape[1]
    plane = math.prod(sizes)
    flat_x = x.reshape(rows, -1)
    flat_i = indices.reshape(rows, -1).astype(jnp.int32)
    # .at[] would wrap negative indices around; send them out of bounds to be dropped.
    flat_i = jnp.where(flat_i < 0, jnp.int32(plane), flat_i)
    row = lax.broadcasted_iota(jnp.int32, flat_i.shape, 0)
    target = jnp.zeros((rows, plane), x.dtype).at[row, flat_i]
    out = target.add(flat_x, mode="drop") if accumulate else target.set(flat_x, mode="drop")
    out = out.reshape(x.shape[:2] + sizes)
    return jnp.moveaxis(out, 1, -1) if last else out


@functools.partial(jax.custom_jvp, nondiff_argnums=(2, 3))
def _unpool_scatter(x: jnp.ndarray, indices: jnp.ndarray, sizes: tuple[int, ...], last: bool) -> jnp.ndarray:
    return _scatter_planes(x, indices, sizes, last, accumulate=False)


@_unpool_scatter.defjvp
def _unpool_scatter_jvp(sizes, last, primals, tangents):
    # Overlapping pooling windows repeat an index. PyTorch's backward of max_unpool gathers:
    # every duplicate receives grad_out[index]. The transpose of this scatter-*add* tangent is
    # exactly that gather, whereas the transpose of the forward's scatter-set would give the
    # gradient to one duplicate only. Without repeats both are the same linear map.
    x, indices = primals
    tx, _ = tangents
    return _unpool_scatter(x, indices, sizes, last), _scatter_planes(tx, indices, sizes, last, accumulate=True)
