"""Preprocessing and augmentation: pure, jit-able functions ``fn(key, batch, **options) -> batch``.

``batch`` is a dict with ``"image"``: ``(N, H, W, C)`` (NHWC, uint8 or float). Geometric
functions move the targets with the pixels: a ``"label"`` of shape ``(N, H, W)`` (per-pixel
classes, nearest-neighbour, background 0 fills) and ``"boxes"`` ``(N, K, 4)`` as
``(x0, y0, x1, y1)`` pixel corners (where supported); other entries (``"mask"``, class labels)
pass through. Every example gets its own random draw. Geometric functions keep the image dtype
(uint8 results are rounded and clipped); :func:`normalize` returns float32.

Options are keywords: bind them with ``functools.partial`` and chain with :func:`compose`::

    augment = compose(
        partial(random_crop, padding=4),
        random_flip,
        partial(normalize, mean=0.1307, std=0.3081),
    )
    batch = jax.jit(augment)(jax.random.fold_in(key, step), batch)   # image: float32 (N, H, W, C)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.ndimage import map_coordinates

from jaxcnn.data._arguments import check_float, check_int

Batch = dict[str, Any]
Augmentation = Callable[[Any, Batch], Batch]


# ----------------------------------------------------------------------------- helpers


def _image(batch: Batch, fn: str) -> jax.Array:
    if not isinstance(batch, dict) or "image" not in batch:
        raise TypeError(f"{fn}: batch must be a dict with an 'image' entry, got {type(batch).__name__}")
    image = jnp.asarray(batch["image"])
    if image.ndim != 4:
        raise ValueError(f"{fn}: batch['image'] must have shape (N, H, W, C), got shape {tuple(image.shape)}")
    return image


def _label_map(batch: Batch, image: jax.Array) -> jax.Array | None:
    """``batch["label"]`` if it is a per-pixel map ``(N, H, W)`` aligned with the image."""
    label = batch.get("label")
    if label is None or jnp.ndim(label) != 3 or tuple(jnp.shape(label)) != tuple(image.shape[:3]):
        return None
    return jnp.asarray(label)


def _boxes(batch: Batch, image: jax.Array, fn: str) -> jax.Array | None:
    boxes = batch.get("boxes")
    if boxes is None:
        return None
    boxes = jnp.asarray(boxes)
    if boxes.ndim != 3 or boxes.shape[0] != image.shape[0] or boxes.shape[2] != 4:
        raise ValueError(f"{fn}: batch['boxes'] must have shape (N, K, 4), got shape {tuple(boxes.shape)}")
    return boxes


def _match_batch_sharding(values: jax.Array, like: jax.Array) -> jax.Array:
    """Per-example ``values`` (leading axis N) sharded along the batch axis like ``like``.

    Under a mesh with explicit axis types, ``vmap`` needs every mapped input sharded the same way;
    random draws come out replicated while the images are split over the data axis. A no-op for
    unsharded inputs and for meshes with automatic axes.
    """
    sharding = jax.typeof(like).sharding
    spec = getattr(sharding, "spec", None)
    axis = spec[0] if spec is not None and len(spec) else None
    if axis is None:
        return values
    target = jax.sharding.NamedSharding(sharding.mesh, jax.sharding.PartitionSpec(axis, *([None] * (values.ndim - 1))))
    return jax.sharding.reshard(values, target)


def _require_key(key: Any, fn: str) -> None:
    if key is None:
        raise TypeError(f"{fn}: key must be a jax.random key, got None")


def _like(values: jax.Array, dtype: jnp.dtype) -> jax.Array:
    """Float values cast back to ``dtype``: rounded and clipped for integer dtypes."""
    if jnp.issubdtype(dtype, jnp.integer):
        info = jnp.iinfo(dtype)
        return jnp.clip(jnp.round(values), info.min, info.max).astype(dtype)
    return values.astype(dtype)


def _per_channel(value: Any, channels: int, name: str, fn: str) -> jax.Array:
    """A scalar or ``(C,)`` statistic as float32 ``(1, 1, 1, C)``."""
    array = jnp.asarray(value, dtype=jnp.float32)
    if array.ndim == 0:
        array = jnp.full((channels,), array, dtype=jnp.float32)
    if array.shape != (channels,):
        raise ValueError(
            f"{fn}: {name} must be a scalar or have shape ({channels},) for {channels} channel(s), "
            f"got shape {tuple(array.shape)}"
        )
    return array.reshape(1, 1, 1, channels)


def _pair(value: Any, name: str, fn: str) -> tuple[int, int]:
    if isinstance(value, Sequence) and not isinstance(value, str):
        if len(value) != 2:
            raise ValueError(f"{fn}: {name} must be an int or (height, width), got {tuple(value)!r}")
        return check_int(value[0], name, fn, minimum=1), check_int(value[1], name, fn, minimum=1)
    size = check_int(value, name, fn, minimum=1)
    return size, size


# ----------------------------------------------------------------------------- photometric
# Each public function checks its arguments in Python, then runs a jitted core: eager calls
# compile once per shape instead of dispatching (and compiling) op by op.


@jax.jit
def _normalize_core(image, mean, std):
    if jnp.issubdtype(image.dtype, jnp.integer):
        x = image.astype(jnp.float32) / 255.0
    else:
        x = image.astype(jnp.float32)
    return (x - mean) / std


def normalize(key: Any, batch: Batch, *, mean: Any = 0.0, std: Any = 1.0) -> Batch:
    """``image`` -> float32 ``(image / 255 - mean) / std`` (integer images) or ``(image - mean) / std``.

    Integer images are taken as ``[0, 255]``, float images as already in ``[0, 1]``. ``mean`` and
    ``std`` are scalars or per-channel ``(C,)``. ``key`` is unused (None is fine); it is there so
    that every function in this module has the same signature.

    Example: MNIST ``mean=0.1307, std=0.3081``; Fashion-MNIST ``mean=0.2860, std=0.3530``.
    """
    del key
    fn = "normalize"
    image = _image(batch, fn)
    channels = image.shape[-1]
    if not isinstance(std, jax.Array) and np.any(np.asarray(std, np.float32) <= 0):
        raise ValueError(f"{fn}: std must be > 0, got {std!r}")
    mean = _per_channel(mean, channels, "mean", fn)
    std = _per_channel(std, channels, "std", fn)
    return {**batch, "image": _normalize_core(image, mean, std)}


# ----------------------------------------------------------------------------- flips and crops


@jax.jit
def _flip_core(image, label, boxes, flip):
    flip = _match_batch_sharding(flip, image)
    image = jnp.where(flip.reshape(-1, 1, 1, 1), image[:, :, ::-1, :], image)
    if label is not None:
        label = jnp.where(flip.reshape(-1, 1, 1), label[:, :, ::-1], label)
    if boxes is not None:
        width = jnp.asarray(image.shape[2], boxes.dtype)
        x0, y0, x1, y1 = (boxes[..., i] for i in range(4))
        mirrored = jnp.stack([width - x1, y0, width - x0, y1], axis=-1)
        boxes = jnp.where(flip.reshape(-1, 1, 1), mirrored, boxes)
    return image, label, boxes


def _with(batch: Batch, image, label, boxes) -> Batch:
    out = {**batch, "image": image}
    if label is not None:
        out["label"] = label
    if boxes is not None:
        out["boxes"] = boxes
    return out


def flip_left_right(batch: Batch, flip: jax.Array) -> Batch:
    """Mirrors the examples where ``flip`` (bool ``(N,)``) is True, with their label maps and boxes."""
    fn = "flip_left_right"
    image = _image(batch, fn)
    flip = jnp.asarray(flip)
    if flip.shape != (image.shape[0],) or flip.dtype != jnp.bool_:
        raise ValueError(f"{fn}: flip must be bool of shape ({image.shape[0]},), got {flip.dtype} {tuple(flip.shape)}")
    label, boxes = _label_map(batch, image), _boxes(batch, image, fn)
    return _with(batch, *_flip_core(image, label, boxes, flip))


@jax.jit
def _bernoulli(key, probability, like):
    return jax.random.bernoulli(key, probability, (like.shape[0],))


def random_flip(key: Any, batch: Batch, *, probability: float = 0.5) -> Batch:
    """Horizontal (left-right) flip of each example with ``probability``; shapes and dtype kept."""
    fn = "random_flip"
    _require_key(key, fn)
    probability = check_float(probability, "probability", fn, minimum=0.0)
    if probability > 1.0:
        raise ValueError(f"{fn}: probability must be in [0, 1], got {probability}")
    image = _image(batch, fn)
    return flip_left_right(batch, _bernoulli(key, probability, image[:, 0, 0, 0]))


@partial(jax.jit, static_argnames=("padding",))
def _crop_core(image, label, boxes, offsets, fill, padding):
    n, h, w, _ = image.shape
    offsets = _match_batch_sharding(jnp.clip(offsets.astype(jnp.int32), 0, 2 * padding), image)

    def cut(x, pad_value):
        pads = [(0, 0), (padding, padding), (padding, padding)] + [(0, 0)] * (x.ndim - 3)
        padded = jnp.pad(x, pads, constant_values=jnp.asarray(pad_value).astype(x.dtype))
        zeros = (0,) * (x.ndim - 3)
        return jax.vmap(
            lambda xi, o: jax.lax.dynamic_slice(xi, (o[0], o[1], *zeros), (h, w, *xi.shape[2:]))
        )(padded, offsets)

    image = cut(image, fill)
    if label is not None:
        label = cut(label, 0)
    if boxes is not None:
        shift = (padding - offsets).astype(boxes.dtype)  # (N, 2) as (dy, dx)
        delta = jnp.stack([shift[:, 1], shift[:, 0], shift[:, 1], shift[:, 0]], axis=-1).reshape(n, 1, 4)
        limit = jnp.asarray([w, h, w, h], boxes.dtype).reshape(1, 1, 4)
        boxes = jnp.clip(boxes + delta, jnp.zeros_like(limit), limit)
    return image, label, boxes


def crop(batch: Batch, offsets: jax.Array, *, padding: int = 0, fill: float = 0.0) -> Batch:
    """Pads by ``padding`` pixels (value ``fill``) on all sides, then cuts an ``H x W`` window per example.

    ``offsets``: int ``(N, 2)`` as ``(row, column)`` of the window's top-left corner in the padded
    image, each in ``[0, 2 * padding]``; ``offsets = padding`` returns the input. Label maps are
    padded with 0; boxes shift by ``padding - offset`` and are clipped to the image.
    """
    fn = "crop"
    image = _image(batch, fn)
    padding = check_int(padding, "padding", fn, minimum=0)
    fill = check_float(fill, "fill", fn)
    n = image.shape[0]
    offsets = jnp.asarray(offsets)
    if offsets.shape != (n, 2) or not jnp.issubdtype(offsets.dtype, jnp.integer):
        raise ValueError(f"{fn}: offsets must be ints of shape ({n}, 2), got {offsets.dtype} {tuple(offsets.shape)}")
    label, boxes = _label_map(batch, image), _boxes(batch, image, fn)
    return _with(batch, *_crop_core(image, label, boxes, offsets, fill, padding))


@partial(jax.jit, static_argnames=("high",))
def _randint(key, like, high):
    return jax.random.randint(key, (like.shape[0], 2), 0, high)


def random_crop(key: Any, batch: Batch, *, padding: int = 4, fill: float = 0.0) -> Batch:
    """Pad-and-crop: zero-pads by ``padding`` and takes a random ``H x W`` window per example.

    Equivalent to a random translation by up to ``padding`` pixels in each direction.
    """
    fn = "random_crop"
    _require_key(key, fn)
    image = _image(batch, fn)
    padding = check_int(padding, "padding", fn, minimum=0)
    offsets = _randint(key, image[:, 0, 0, 0], 2 * padding + 1)
    return crop(batch, offsets, padding=padding, fill=fill)


# ----------------------------------------------------------------------------- affine, resize


@partial(jax.jit, static_argnames=("fill",))  # map_coordinates takes cval as a static value.
def _affine_core(image, label, angle, translation, scale, fill):
    _, h, w, _ = image.shape
    cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
    rows, cols = jnp.meshgrid(jnp.arange(h, dtype=jnp.float32), jnp.arange(w, dtype=jnp.float32), indexing="ij")

    def source_coords(theta_deg, shift, zoom):
        # Output pixel q -> input pixel p = R(-theta) (q - c - t) / s + c, with y pointing down.
        theta = jnp.deg2rad(theta_deg)
        cos, sin = jnp.cos(theta), jnp.sin(theta)
        qy, qx = rows - cy - shift[0], cols - cx - shift[1]
        py = (sin * qx + cos * qy) / zoom + cy
        px = (cos * qx - sin * qy) / zoom + cx
        return py, px

    def warp(x2d, py, px, order, cval):
        return map_coordinates(x2d, [py, px], order=order, mode="constant", cval=cval)

    angle, translation, scale = (_match_batch_sharding(v, image) for v in (angle, translation, scale))
    py, px = jax.vmap(source_coords)(angle, translation, scale)  # each (N, H, W)

    def warp_image(img, py_i, px_i):  # img (H, W, C)
        channels = jnp.moveaxis(img.astype(jnp.float32), -1, 0)
        warped = jax.vmap(lambda ch: warp(ch, py_i, px_i, 1, fill))(channels)
        return jnp.moveaxis(warped, 0, -1)

    out_image = _like(jax.vmap(warp_image)(image, py, px), image.dtype)
    if label is not None:
        warped = jax.vmap(lambda lab, a, b: warp(lab.astype(jnp.float32), a, b, 0, 0.0))(label, py, px)
        label = _like(warped, label.dtype)
    return out_image, label


def affine(batch: Batch, *, angle: jax.Array, translation: jax.Array | None = None,
           scale: jax.Array | None = None, fill: float = 0.0) -> Batch:
    """Rotates, scales and translates each example about the image centre (bilinear sampling).

    Args:
      angle: ``(N,)`` degrees, counter-clockwise as displayed (row 0 at the top).
      translation: ``(N, 2)`` pixels as ``(down, right)``; None for none.
      scale: ``(N,)`` zoom factors (> 1 enlarges); None for 1.
      fill: value outside the input.

    ``angle=0`` (and no translation or scale) returns the input exactly; ``angle=90`` equals
    ``np.rot90(image, 1, axes=(0, 1))`` for square images. Label maps use nearest-neighbour
    sampling and background 0; boxes are not supported (their extent is not an affine invariant).
    """
    fn = "affine"
    image = _image(batch, fn)
    n = image.shape[0]
    if _boxes(batch, image, fn) is not None:
        raise ValueError(f"{fn}: batch has 'boxes', which rotation cannot carry exactly; drop them or "
                         f"use random_flip / random_crop / resize")
    angle = jnp.asarray(angle, jnp.float32)
    if angle.shape != (n,):
        raise ValueError(f"{fn}: angle must have shape ({n},), got {tuple(angle.shape)}")
    translation = jnp.zeros((n, 2), jnp.float32) if translation is None else jnp.asarray(translation, jnp.float32)
    if translation.shape != (n, 2):
        raise ValueError(f"{fn}: translation must have shape ({n}, 2), got {tuple(translation.shape)}")
    scale = jnp.ones((n,), jnp.float32) if scale is None else jnp.asarray(scale, jnp.float32)
    if scale.shape != (n,):
        raise ValueError(f"{fn}: scale must have shape ({n},), got {tuple(scale.shape)}")
    fill = check_float(fill, "fill", fn)
    out_image, label = _affine_core(image, _label_map(batch, image), angle, translation, scale, fill)
    return _with(batch, out_image, label, None)


@jax.jit
def _affine_parameters(key, like, max_rotation, max_translation_hw, low, high):
    n = like.shape[0]
    k_angle, k_shift, k_scale = jax.random.split(key, 3)
    angle = jax.random.uniform(k_angle, (n,), jnp.float32, -max_rotation, max_rotation)
    unit = jax.random.uniform(k_shift, (n, 2), jnp.float32, -1.0, 1.0)
    translation = unit * max_translation_hw.reshape(1, 2)
    scale = jax.random.uniform(k_scale, (n,), jnp.float32, low, high)
    return angle, translation, scale


def random_affine(key: Any, batch: Batch, *, max_rotation: float = 15.0, max_translation: float = 0.1,
                  scale_range: tuple[float, float] = (0.9, 1.1), fill: float = 0.0) -> Batch:
    """A small random :func:`affine` per example.

    Args:
      max_rotation: angles uniform in ``[-max_rotation, max_rotation]`` degrees.
      max_translation: shifts uniform in ``[-max_translation, max_translation]`` times the height
        (rows) and width (columns).
      scale_range: zoom uniform in ``[low, high]``.
      fill: value outside the input.
    """
    fn = "random_affine"
    _require_key(key, fn)
    image = _image(batch, fn)
    max_rotation = check_float(max_rotation, "max_rotation", fn, minimum=0.0)
    max_translation = check_float(max_translation, "max_translation", fn, minimum=0.0)
    if not isinstance(scale_range, Sequence) or len(scale_range) != 2:
        raise TypeError(f"{fn}: scale_range must be (low, high), got {scale_range!r}")
    low = check_float(scale_range[0], "scale_range[0]", fn)
    high = check_float(scale_range[1], "scale_range[1]", fn)
    if not 0 < low <= high:
        raise ValueError(f"{fn}: scale_range must satisfy 0 < low <= high, got {tuple(scale_range)}")
    h, w = image.shape[1:3]
    if _boxes(batch, image, fn) is not None:
        raise ValueError(f"{fn}: batch has 'boxes', which rotation cannot carry exactly")
    shift = jnp.asarray([max_translation * h, max_translation * w], jnp.float32)
    angle, translation, scale = _affine_parameters(key, image[:, 0, 0, 0], max_rotation, shift, low, high)
    return affine(batch, angle=angle, translation=translation, scale=scale, fill=fill)


@partial(jax.jit, static_argnames=("height", "width", "method", "antialias"))
def _resize_core(image, label, boxes, height, width, method, antialias):
    n, h, w, c = image.shape
    resized = jax.image.resize(image.astype(jnp.float32), (n, height, width, c), method=method, antialias=antialias)
    image_out = _like(resized, image.dtype)
    if label is not None:
        label = jax.image.resize(label, (n, height, width), method="nearest")
    if boxes is not None:
        factors = jnp.asarray([width / w, height / h, width / w, height / h], boxes.dtype).reshape(1, 1, 4)
        boxes = boxes * factors
    return image_out, label, boxes


def resize(key: Any, batch: Batch, *, size: int | tuple[int, int], method: str = "bilinear",
           antialias: bool = True) -> Batch:
    """Resizes images to ``size`` = ``(height, width)`` (or one int for both) with ``jax.image.resize``.

    Label maps use ``"nearest"``; boxes are scaled. ``key`` is unused (None is fine).
    """
    del key
    fn = "resize"
    image = _image(batch, fn)
    height, width = _pair(size, "size", fn)
    if not isinstance(method, str):
        raise TypeError(f"{fn}: method must be a string such as 'bilinear', got {method!r}")
    try:
        jax.image.ResizeMethod.from_string(method)
    except ValueError:
        raise ValueError(
            f"{fn}: method={method!r} is not a jax.image.resize method; use 'nearest', 'bilinear', "
            f"'bicubic', 'lanczos3' or 'lanczos5'"
        ) from None
    label, boxes = _label_map(batch, image), _boxes(batch, image, fn)
    return _with(batch, *_resize_core(image, label, boxes, height, width, method, bool(antialias)))


def compose(*functions: Augmentation) -> Augmentation:
    """Chains ``fn(key, batch)`` functions; each gets its own key split from the one given.

    ``key=None`` is accepted when every function ignores its key (normalize, resize).
    """
    for i, f in enumerate(functions):
        if not callable(f):
            raise TypeError(f"compose: argument {i} must be callable, got {type(f).__name__}")

    def composed(key: Any, batch: Batch) -> Batch:
        keys = [None] * len(functions) if key is None else list(jax.random.split(key, len(functions)))
        for k, f in zip(keys, functions):
            batch = f(k, batch)
        return batch

    return composed
