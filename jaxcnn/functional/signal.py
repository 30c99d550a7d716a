"""Signal-processing 2D convolution and cross-correlation, matching ``scipy.signal``.

A neural network's "convolution" (:func:`jaxcnn.functional.conv`, ``torch.nn.Conv2d``,
``flax.linen.Conv``) is a *cross-correlation*: the kernel slides over the image unflipped,

    correlate2d(x, h)[m, n] = sum_i sum_j x[m + i, n + j] * h[i, j]       (valid part)

whereas the textbook convolution flips the kernel in both axes,

    convolve2d(x, h)[m, n] = sum_i sum_j x[i, j] * h[m - i, n - j]

so ``convolve2d(x, h, mode) == correlate2d(x, h[::-1, ::-1], mode)`` for the 'full' and
'valid' modes (for 'same' the two differ by scipy's centring when a kernel size is even; see
:func:`correlate2d`). For a learned kernel the flip does not matter — the network learns the
flipped weights — which is why deep learning libraries skip it.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from jaxcnn.functional import _arguments as args
from jaxcnn.functional.conv import conv

MODES = ("full", "same", "valid")


def _prepare(image: Any, kernel: Any, mode: str, op: str) -> tuple[jnp.ndarray, jnp.ndarray, bool]:
    """Validates; returns the image as ``(N, H, W)``, the kernel, both in one float dtype, and
    whether the image came without a batch axis."""
    if mode not in MODES:
        raise ValueError(f"{op}: unknown mode={mode!r}; expected one of {MODES}")
    image = args.as_array(image, "image", op)
    kernel = args.as_array(kernel, "kernel", op)
    args.check_rank(image, "image", op, (2, 3), "(H, W) or a batch (N, H, W)")
    args.check_rank(kernel, "kernel", op, (2,), "(kh, kw)")
    args.check_nonempty(image, "image", op)
    args.check_nonempty(kernel, "kernel", op)
    floats = []
    for name, a in (("image", image), ("kernel", kernel)):
        if jnp.issubdtype(a.dtype, jnp.floating):
            floats.append(a.dtype)
        elif not (jnp.issubdtype(a.dtype, jnp.integer) or a.dtype == jnp.bool_):
            raise TypeError(
                f"{op}: {name} must have an integer or floating dtype, got {a.dtype} (shape {tuple(a.shape)})"
            )
    # Integers are computed in float32; mixed float widths use JAX's standard promotion,
    # explicitly, so the op also works under jax_numpy_dtype_promotion="strict".
    dtype = jnp.dtype(jnp.float32)
    if floats:
        with jax.numpy_dtype_promotion("standard"):
            dtype = jnp.promote_types(*floats) if len(floats) == 2 else floats[0]
    unbatched = image.ndim == 2
    if unbatched:
        image = image[None]
    return image.astype(dtype), kernel.astype(dtype), unbatched


def _correlate_full_slice(
    image: jnp.ndarray, kernel: jnp.ndarray, mode: str, same_start: tuple[int, int], op: str
) -> jnp.ndarray:
    """Cross-correlates ``(N, H, W)`` with ``(kh, kw)`` and returns the part of the 'full'
    output that ``mode`` selects; ``same_start`` is where 'same' begins inside 'full'."""
    in_sizes = image.shape[1:]
    k_sizes = kernel.shape
    if mode == "valid" and not (
        all(s >= k for s, k in zip(in_sizes, k_sizes)) or all(k >= s for s, k in zip(in_sizes, k_sizes))
    ):
        raise ValueError(
            f"{op}: for mode='valid' one of image and kernel must be at least as large as the "
            f"other in every dimension, got image {tuple(in_sizes)} and kernel {tuple(k_sizes)}"
        )
    pads = []
    for axis, (size, k) in enumerate(zip(in_sizes, k_sizes)):
        if mode == "full":
            start, length = 0, size + k - 1
        elif mode == "same":
            start, length = same_start[axis], size
        else:  # 'valid': the positions where the smaller input lies wholly inside the larger
            start, length = min(size, k) - 1, abs(size - k) + 1
        # 'full' index m is the correlation with the image zero-padded by k - 1 on the left;
        # starting at `start` means padding k - 1 - start instead, and the right padding
        # then fixes the length.
        lo = k - 1 - start
        hi = length + k - 1 - size - lo
        pads.append((lo, hi))
    y = conv(
        image[..., None],
        kernel[:, :, None, None],
        padding=tuple(pads),
        precision=lax.Precision.HIGHEST,
    )
    return y[..., 0]


def correlate2d(image: Any, kernel: Any, mode: str = "full") -> jnp.ndarray:
    """2D cross-correlation (no kernel flip), as ``scipy.signal.correlate2d`` with zero fill.

    This is what a CNN layer computes: ``correlate2d(x, h, 'valid')`` equals
    ``jaxcnn.functional.conv(x[None, :, :, None], h[:, :, None, None])[0, :, :, 0]``.

    Args:
      image: ``(H, W)``, or a batch ``(N, H, W)`` all correlated with the same kernel; any
        integer, bool or floating dtype.
      kernel: ``(kh, kw)``; any integer, bool or floating dtype.
      mode: ``'full'`` (every overlap, ``(H + kh - 1, W + kw - 1)``), ``'same'`` (``(H, W)``,
        centred on 'full' as scipy does: it starts at ``kh // 2, kw // 2`` inside 'full', so
        for an even kernel the window's anchor is at index ``kh // 2``), or ``'valid'``
        (no zero padding, ``(|H - kh| + 1, |W - kw| + 1)``; one input must be at least as
        large as the other in every dimension).

    Returns:
      ``(H_out, W_out)`` (or ``(N, H_out, W_out)``) in the inputs' floating dtype (standard
      promotion between two float dtypes), float32 when both are integers.

    Example (the classic lecture example)::

      image = [[1,1,1,0,0], [0,1,1,1,0], [0,0,1,1,1], [0,0,1,1,0], [0,1,1,0,0]]
      correlate2d(image, [[1,0,1], [0,1,0], [1,0,1]], 'valid')
      # [[4, 3, 4], [2, 4, 3], [2, 3, 4]]
    """
    op = "correlate2d"
    x, h, unbatched = _prepare(image, kernel, mode, op)
    kh, kw = h.shape
    y = _correlate_full_slice(x, h, mode, (kh // 2, kw // 2), op)
    return y[0] if unbatched else y


def convolve2d(image: Any, kernel: Any, mode: str = "full") -> jnp.ndarray:
    """2D convolution ``y[m, n] = sum_i sum_j x[i, j] h[m - i, n - j]``, as ``scipy.signal.convolve2d``.

    The kernel is flipped in both axes, unlike a CNN layer (a cross-correlation, see
    :func:`correlate2d`): ``convolve2d(x, h, mode) == correlate2d(x, h[::-1, ::-1], mode)`` for
    'full' and 'valid'. Convolution is commutative in 'full' mode.

    Args:
      image: ``(H, W)``, or a batch ``(N, H, W)`` all convolved with the same kernel; any
        integer, bool or floating dtype.
      kernel: ``(kh, kw)``; any integer, bool or floating dtype.
      mode: ``'full'`` (``(H + kh - 1, W + kw - 1)``), ``'same'`` (``(H, W)``, centred on 'full'
        as scipy does: it starts at ``(kh - 1) // 2, (kw - 1) // 2`` inside 'full') or
        ``'valid'`` (``(|H - kh| + 1, |W - kw| + 1)``; one input must be at least as large as the
        other in every dimension).

    Returns:
      ``(H_out, W_out)`` (or ``(N, H_out, W_out)``) in the inputs' floating dtype, float32 when
      both are integers.
    """
    op = "convolve2d"
    x, h, unbatched = _prepare(image, kernel, mode, op)
    kh, kw = h.shape
    # Convolution is correlation with the flipped kernel; flipping moves the 'same' anchor
    # from k // 2 to (k - 1) // 2, which is scipy's centring of 'same' inside 'full'.
    y = _correlate_full_slice(x, h[::-1, ::-1], mode, ((kh - 1) // 2, (kw - 1) // 2), op)
    return y[0] if unbatched else y
