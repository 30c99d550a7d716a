"""Classic hand-made image filters and :func:`filter2d`, which applies one to an image.

Every kernel is a float32 ``(H, W)`` array meant for cross-correlation (the CNN convention,
no flip): ``filter2d(image, sobel_x())`` is large where the image gets brighter to the right.
The kernels are built on each call, so importing this module does not start a JAX backend.

Example::

    edges = sobel_magnitude(gray)                        # (H, W) -> (H, W) float32
    soft = filter2d(rgb_uint8, gaussian(5, 1.0))         # (H, W, 3) uint8 -> float32
"""

from __future__ import annotations

import math
import operator
from typing import Any

import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxcnn.functional import _arguments as args
from jaxcnn.functional.conv import PADDING_MODES, conv


def _kernel(values: Any) -> jnp.ndarray:
    return jnp.asarray(np.asarray(values, dtype=np.float32))


def _odd_size(value: Any, name: str, op: str) -> int:
    if isinstance(value, bool):
        raise TypeError(f"{op}: {name} must be an odd positive int, got {value!r}")
    try:
        n = operator.index(value)
    except TypeError as err:
        raise TypeError(f"{op}: {name} must be an odd positive int, got {value!r}") from err
    if n < 1 or n % 2 == 0:
        raise ValueError(f"{op}: {name} must be an odd positive int (the kernel has a centre), got {n}")
    return n


def sobel_x() -> jnp.ndarray:
    """Sobel derivative along x (columns), ``(3, 3)``: ``[[-1,0,1],[-2,0,2],[-1,0,1]]``.

    Positive where intensity increases to the right; a step of height 1 gives 4.
    """
    return _kernel([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]])


def sobel_y() -> jnp.ndarray:
    """Sobel derivative along y (rows, downwards), ``(3, 3)``: the transpose of :func:`sobel_x`."""
    return _kernel([[-1, -2, -1], [0, 0, 0], [1, 2, 1]])


def laplacian(neighbours: int = 4) -> jnp.ndarray:
    """Discrete Laplacian, ``(3, 3)``, centre negative (sums to 0).

    ``neighbours=4``: ``[[0,1,0],[1,-4,1],[0,1,0]]``; ``neighbours=8``:
    ``[[1,1,1],[1,-8,1],[1,1,1]]`` (:func:`edge_detector` is its negative).
    """
    if neighbours == 4 and not isinstance(neighbours, bool):
        return _kernel([[0, 1, 0], [1, -4, 1], [0, 1, 0]])
    if neighbours == 8 and not isinstance(neighbours, bool):
        return _kernel([[1, 1, 1], [1, -8, 1], [1, 1, 1]])
    raise ValueError(f"laplacian: neighbours must be 4 or 8, got {neighbours!r}")


def box_blur(n: int = 3) -> jnp.ndarray:
    """Mean filter, ``(n, n)`` of ``1 / n**2`` (sums to 1); ``n`` odd and positive."""
    n = _odd_size(n, "n", "box_blur")
    return _kernel(np.full((n, n), 1.0 / (n * n)))


def gaussian(size: int, sigma: float) -> jnp.ndarray:
    """Gaussian blur, ``(size, size)``, normalised to sum 1.

    ``g[i, j] = exp(-((i - c)**2 + (j - c)**2) / (2 * sigma**2)) / Z`` with ``c = size // 2``.

    Args:
      size: odd positive int; ``2 * ceil(3 * sigma) + 1`` covers +-3 sigma.
      sigma: standard deviation in pixels, > 0.
    """
    op = "gaussian"
    size = _odd_size(size, "size", op)
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float, np.integer, np.floating)):
        raise TypeError(f"{op}: sigma must be a positive number, got {sigma!r}")
    if not (math.isfinite(sigma) and sigma > 0):
        raise ValueError(f"{op}: sigma must be > 0 (and finite), got {sigma!r}")
    d = np.arange(size, dtype=np.float64) - size // 2
    g1 = np.exp(-(d**2) / (2.0 * float(sigma) ** 2))
    g = np.outer(g1, g1)  # separable: exp(-(a+b)) = exp(-a) exp(-b)
    return _kernel(g / g.sum())


def sharpen() -> jnp.ndarray:
    """Sharpening, ``(3, 3)``: ``[[0,-1,0],[-1,5,-1],[0,-1,0]]`` = identity - ``laplacian(4)``."""
    return _kernel([[0, -1, 0], [-1, 5, -1], [0, -1, 0]])


def horizontal_lines() -> jnp.ndarray:
    """Responds to bright one-pixel horizontal lines, ``(3, 3)``: ``[[-1,-1,-1],[2,2,2],[-1,-1,-1]]``."""
    return _kernel([[-1, -1, -1], [2, 2, 2], [-1, -1, -1]])


def vertical_lines() -> jnp.ndarray:
    """Responds to bright one-pixel vertical lines, ``(3, 3)``: the transpose of :func:`horizontal_lines`."""
    return _kernel([[-1, 2, -1], [-1, 2, -1], [-1, 2, -1]])


def edge_detector() -> jnp.ndarray:
    """Isotropic edge (outline) filter, ``(3, 3)``: ``[[-1,-1,-1],[-1,8,-1],[-1,-1,-1]]``.

    Sums to 0, so flat regions give 0; it is ``-laplacian(8)``.
    """
    return _kernel([[-1, -1, -1], [-1, 8, -1], [-1, -1, -1]])


def filter2d(
    image: Any,
    kernel: Any,
    *,
    padding_mode: str = "reflect",
    pad_value: float = 0.0,
) -> jnp.ndarray:
    """Cross-correlates each channel of an image with one 2D kernel; output has the input's size.

    Every channel is filtered independently (a depthwise :func:`jaxcnn.functional.conv` with
    ``groups = C``); the border is padded by ``kh // 2``, ``kw // 2`` on each side.

    Args:
      image: grayscale ``(H, W)``, colour ``(H, W, C)`` or a batch ``(N, H, W, C)`` (channels
        last), any integer, bool or floating dtype.
      kernel: ``(kh, kw)`` with odd sizes (so it has a centre), any real dtype.
      padding_mode: how the border is filled — ``"reflect"`` (mirror without repeating the
        edge pixel: ``d c b | a b c d | c b a``; scipy.ndimage's ``'mirror'``), ``"replicate"``
        (repeat the edge; ``'nearest'``), ``"circular"`` (wrap around; ``'wrap'``), ``"zeros"``
        or ``"constant"`` (fill with ``pad_value``; ``'constant'`` with ``cval``).
      pad_value: fill value for ``"constant"``, in the image's units.

    Returns:
      The image's shape; float32 for integer/bool images, otherwise the image's float dtype
      (the kernel is cast to it).
    """
    op = "filter2d"
    image = args.as_array(image, "image", op)
    kernel = args.as_array(kernel, "kernel", op)
    args.check_rank(image, "image", op, (2, 3, 4), "(H, W), (H, W, C) or (N, H, W, C)")
    args.check_rank(kernel, "kernel", op, (2,), "a 2D (kh, kw) kernel; it is applied to every channel")
    args.check_nonempty(image, "image", op)
    if kernel.shape[0] % 2 == 0 or kernel.shape[1] % 2 == 0:
        raise ValueError(
            f"{op}: kernel sizes must be odd so the output is centred, got kernel shape "
            f"{tuple(kernel.shape)}; for even kernels use jaxcnn.functional.correlate2d or conv"
        )
    if padding_mode not in PADDING_MODES:
        raise ValueError(f"{op}: unknown padding_mode={padding_mode!r}; expected one of {PADDING_MODES}")
    if isinstance(pad_value, (str, bytes, bool)) or pad_value is None or np.ndim(pad_value) != 0:
        raise TypeError(f"{op}: pad_value must be a real scalar, got {pad_value!r}")
    for name, a in (("image", image), ("kernel", kernel)):
        if not (
            jnp.issubdtype(a.dtype, jnp.floating)
            or jnp.issubdtype(a.dtype, jnp.integer)
            or a.dtype == jnp.bool_
        ):
            raise TypeError(f"{op}: {name} must have an integer or floating dtype, got {a.dtype}")
    dtype = image.dtype if jnp.issubdtype(image.dtype, jnp.floating) else jnp.dtype(jnp.float32)

    rank = image.ndim
    x = image.astype(dtype)
    if rank == 2:
        x = x[None, :, :, None]
    elif rank == 3:
        x = x[None]
    kh, kw = kernel.shape
    height, width = x.shape[1:3]
    if padding_mode == "reflect" and (kh // 2 >= height or kw // 2 >= width):
        raise ValueError(
            f"{op}: padding_mode='reflect' needs the image larger than half the kernel: image "
            f"shape {tuple(image.shape)}, kernel shape {tuple(kernel.shape)}; use another padding_mode"
        )
    if padding_mode == "circular" and (kh // 2 > height or kw // 2 > width):
        raise ValueError(
            f"{op}: padding_mode='circular' needs the image at least half the kernel size: image "
            f"shape {tuple(image.shape)}, kernel shape {tuple(kernel.shape)}"
        )
    channels = x.shape[-1]
    # Depthwise: kernel (kh, kw, 1, C), one copy of the filter per channel.
    k = jnp.broadcast_to(kernel.astype(dtype)[:, :, None, None], (kh, kw, 1, channels))
    y = conv(
        x,
        k,
        padding=((kh // 2, kh // 2), (kw // 2, kw // 2)),
        groups=channels,
        padding_mode=padding_mode,
        pad_value=pad_value,
        precision=lax.Precision.HIGHEST,
    )
    if rank == 2:
        return y[0, :, :, 0]
    if rank == 3:
        return y[0]
    return y


def sobel_magnitude(image: Any, *, padding_mode: str = "reflect") -> jnp.ndarray:
    """Edge strength ``sqrt(gx**2 + gy**2)`` from the Sobel derivatives :func:`sobel_x`, :func:`sobel_y`.

    Args:
      image: as :func:`filter2d` (``(H, W)``, ``(H, W, C)`` per channel, or ``(N, H, W, C)``).
      padding_mode: as :func:`filter2d`; the default ``"reflect"`` gives no false edge at the
        border.

    Returns:
      The image's shape, float (float32 for integer images). Threshold it for a binary edge map,
      e.g. ``sobel_magnitude(img) > 0.5 * sobel_magnitude(img).max()``. Note the gradient of
      ``sqrt`` is undefined where both derivatives are 0.
    """
    gx = filter2d(image, sobel_x(), padding_mode=padding_mode)
    gy = filter2d(image, sobel_y(), padding_mode=padding_mode)
    return jnp.sqrt(gx * gx + gy * gy)
