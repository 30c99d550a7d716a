"""Max/min pooling kernels for XLA:CPU.

- ``stride == window``, no padding, no dilation (the 2x2 pooling of most CNNs): the spatial
  axes are cut into tiles by a reshape, the forward pass is a running extremum over the tile
  offsets and the gradient a one-hot select at each tile's winner (:func:`tiled_extremum`),
  instead of the ``reduce_window`` select-and-scatter XLA:CPU runs slowly.
- any other undilated window: the strided-slice scan of
  :func:`jaxcnn.functional.pooling._sliced_pool` (the reference program of dilated windows).

Ties and NaNs: the first maximum in row-major window order takes the gradient, as in the
reference program and PyTorch.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxcnn.functional.pooling import _first_tangent, _reduce_extremum, _sliced_pool, _spatial_axes


def extremum_pool_kernel(g, is_max: bool) -> Callable[[jnp.ndarray], jnp.ndarray] | None:
    """The kernel ``x -> y`` for max (``is_max``) or min pooling of geometry ``g``
    (:class:`jaxcnn.functional.pooling._Geometry`), or ``None`` to keep the reference."""
    if any(d != 1 for d in g.dilation):
        return None  # the reference is already the sliced scan
    no_padding = all(p == (0, 0) for p in g.pads) and not any(g.extra)
    if g.window == g.stride and no_padding:
        return lambda x: tiled_extremum(x, g.window, g.last, is_max)
    return lambda x: _sliced_pool(x, g, is_max, False)


def tile(x: jnp.ndarray, window: tuple[int, ...], last: bool) -> tuple[jnp.ndarray, tuple[int, ...]]:
    """Crops each spatial axis to a multiple of its window and splits it into ``(out, window)``.

    Returns the reshaped array and the positions of the window axes.
    """
    n = len(window)
    spatial = _spatial_axes(n, last)
    limits = list(x.shape)
    for axis, k in zip(spatial, window):
        limits[axis] -= limits[axis] % k
    if tuple(limits) != x.shape:
        x = lax.slice(x, (0,) * x.ndim, limits)
    split: list[int] = []
    window_axes = []
    for axis, size in enumerate(x.shape):
        if axis in spatial:
            k = window[spatial.index(axis)]
            split += [size // k, k]
            window_axes.append(len(split) - 1)
        else:
            split.append(size)
    return x.reshape(split), tuple(window_axes)


def window_scan(tiles: jnp.ndarray, axes: tuple[int, ...], is_max: bool) -> jnp.ndarray:
    """The extremum over the window ``axes`` (kept, size 1), NaN propagating.

    A running max/min over one slice per window offset (``value > best or isnan(value)``,
    PyTorch's loop vectorised over windows): elementwise selects that XLA fuses into one
    loop, faster on CPU than a reduction over the window axes of the tiled array.
    """
    best = None
    for offset in np.ndindex(*(tiles.shape[a] for a in axes)):
        value = tiles
        for axis, o in zip(axes, offset):
            value = lax.slice_in_dim(value, o, o + 1, axis=axis)
        if best is None:
            best = value
            continue
        update = value > best if is_max else value < best
        if jnp.issubdtype(tiles.dtype, jnp.floating):
            update = update | jnp.isnan(value)
        best = jnp.where(update, value, best)
    return best


@functools.partial(jax.custom_jvp, nondiff_argnums=(1, 2, 3))
def tiled_extremum(x: jnp.ndarray, window: tuple[int, ...], last: bool, is_max: bool) -> jnp.ndarray:
    """Max/min pooling with ``stride == window`` and no padding or dilation.

    The spatial axes are cropped to a multiple of the window and split into
    ``(out, window)`` by a reshape; :func:`window_scan` then runs over the window axes
    (differentiated, a reduction does: see the JVP below). The gradient is a one-hot
    select at each window's winner (:func:`_first_tangent`), broadcast over the tiles: no
    ``reduce_window`` select-and-scatter (slow on XLA:CPU) and no zero-interleaving pads
    (what differentiating strided slices gives).
    """
    tiles, axes = tile(x, window, last)
    return jnp.squeeze(window_scan(tiles, axes, is_max), axes)


@tiled_extremum.defjvp
def _tiled_extremum_jvp(window, last, is_max, primals, tangents):
    (x,), (t,) = primals, tangents
    tiles, axes = tile(x, window, last)
    # Differentiated, the pooled map is a reduction rather than the scan, and so is the
    # winner search. XLA computes a reduction once, while it copies the scan's selects (and
    # recomputes them from the 4x larger input) into every consumer of the pooled map: the
    # next layer's kernel-gradient transpose, the winner search, the gradient's select
    # (docs/cpu_backend.md has the train-step measurements of both choices).
    best = _reduce_extremum(tiles, axes, is_max, keepdims=True)
    tangent_tiles, _ = tile(t, window, last)
    return jnp.squeeze(best, axes), _first_tangent(tiles, tangent_tiles, axes, is_max, best)


