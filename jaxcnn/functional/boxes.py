"""Box operations for object detection, with the names and semantics of ``torchvision.ops``.

Boxes are ``(x1, y1, x2, y2)`` with ``x1 <= x2`` and ``y1 <= y2`` (torchvision's ``"xyxy"``),
in pixels. Every op runs under ``jit`` with static shapes. Two of torchvision's results have a
data-dependent size, and are given a fixed one here:

- ``nms`` / ``batched_nms`` return ``(indices, valid)``: ``max_output_size`` indices, the kept
  ones first in decreasing score order, the rest padded with ``-1``, and a boolean mask that is
  True exactly where the index is real. jit cannot return an array whose length depends on the
  data; the mask lets a caller ``jnp.where`` the padding away (``-1`` indexes the *last*
  element in JAX, so never index with a padded slot without masking it).
- ``roi_align`` with ``sampling_ratio <= 0`` (torchvision's adaptive grid,
  ``ceil(roi_height / output_height)`` samples per bin) samples every box on a grid of a static
  size and masks the samples each box does not use, see ``roi_align``.

Validation runs in Python before XLA: a wrong rank, a last axis that is not 4, mismatched
counts, bad thresholds or output sizes raise ``ValueError``. When the boxes are concrete (not
traced by ``jit``), non-finite values and ``x2 < x1`` / ``y2 < y1`` are rejected too; under
``jit`` they cannot be inspected and are the caller's contract.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxcnn.functional import _arguments as args

BOX_FORMATS = ("xyxy", "xywh", "cxcywh")
# torchvision's BoxCoder clamp of dw / dh before exp: a box grows at most 1000/16 = 62.5x.
BBOX_XFORM_CLIP = math.log(1000.0 / 16)


# --------------------------------------------------------------------------- validation


def _is_concrete(x: Any) -> bool:
    return not isinstance(x, jax.core.Tracer)


def _boxes(boxes: Any, name: str, op: str, *, fmt: str = "xyxy", batched: bool = False) -> jnp.ndarray:
    """Checks a ``(N, 4)`` (or ``(..., 4)`` if ``batched``) box array; values when concrete."""
    x = args.as_array(boxes, name, op)
    if batched:
        if x.ndim < 1 or x.shape[-1] != 4:
            raise ValueError(f"{op}: {name} must have shape (..., 4), got {tuple(x.shape)}")
    elif x.ndim != 2 or x.shape[-1] != 4:
        raise ValueError(f"{op}: {name} must have shape (N, 4), got {tuple(x.shape)} (rank {x.ndim})")
    if not (jnp.issubdtype(x.dtype, jnp.floating) or jnp.issubdtype(x.dtype, jnp.integer)):
        raise TypeError(f"{op}: {name} must be a real array, got dtype {x.dtype}")
    if _is_concrete(x) and x.size:
        values = np.asarray(x)
        if not np.all(np.isfinite(values)):
            raise ValueError(f"{op}: {name} has non-finite values (shape {tuple(x.shape)})")
        if fmt == "xyxy":
            bad = (values[..., 2] < values[..., 0]) | (values[..., 3] < values[..., 1])
            what = "x2 < x1 or y2 < y1"
        else:
            bad = (values[..., 2] < 0) | (values[..., 3] < 0)
            what = "a negative width or height"
        if np.any(bad):
            first = tuple(int(i) for i in np.argwhere(bad)[0])
            raise ValueError(
                f"{op}: {name} (shape {tuple(x.shape)}) has {what} at index {first}: "
                f"{values[first].tolist()}; boxes are ({_FMT_FIELDS[fmt]})"
            )
    return x


_FMT_FIELDS = {"xyxy": "x1, y1, x2, y2", "xywh": "x, y, w, h", "cxcywh": "cx, cy, w, h"}


def _float(x: jnp.ndarray) -> jnp.ndarray:
    return x if jnp.issubdtype(x.dtype, jnp.floating) else x.astype(jnp.float32)


def _scores(scores: Any, n: int, op: str) -> jnp.ndarray:
    s = args.as_array(scores, "scores", op)
    if s.ndim != 1 or s.shape[0] != n:
        raise ValueError(f"{op}: scores must have shape ({n},) to match boxes (N={n}), got {tuple(s.shape)}")
    args.check_floating(s, "scores", op)
    if _is_concrete(s) and s.size and not np.all(np.isfinite(np.asarray(s))):
        raise ValueError(f"{op}: scores has non-finite values")
    return s


def _threshold(value: Any, name: str, op: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise TypeError(f"{op}: {name} must be a number in [0, 1], got {value!r}")
    if not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{op}: {name} must be in [0, 1], got {value}")
    return float(value)


def _count(value: Any, name: str, op: str, default: int) -> int:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{op}: {name} must be an int, got {value!r}")
    if value < 0:
        raise ValueError(f"{op}: {name} must be >= 0, got {value}")
    return int(value)


# --------------------------------------------------------------------------- geometry


def box_convert(boxes: Any, in_fmt: str, out_fmt: str) -> jnp.ndarray:
    """Converts ``boxes: (..., 4)`` between ``"xyxy"``, ``"xywh"`` and ``"cxcywh"`` (torchvision).

    ``xywh`` is the top-left corner and size (COCO's ``bbox``), ``cxcywh`` the centre and size.
    """
    op = "box_convert"
    for name, fmt in (("in_fmt", in_fmt), ("out_fmt", out_fmt)):
        if fmt not in BOX_FORMATS:
            raise ValueError(f"{op}: {name}={fmt!r} is not one of {BOX_FORMATS}")
    x = _float(_boxes(boxes, "boxes", op, fmt=in_fmt, batched=True))
    a, b, c, d = x[..., 0], x[..., 1], x[..., 2], x[..., 3]
    if in_fmt == "xywh":
        a, b, c, d = a, b, a + c, b + d
    elif in_fmt == "cxcywh":
        a, b, c, d = a - 0.5 * c, b - 0.5 * d, a + 0.5 * c, b + 0.5 * d
    if out_fmt == "xywh":
        a, b, c, d = a, b, c - a, d - b
    elif out_fmt == "cxcywh":
        a, b, c, d = (a + c) / 2, (b + d) / 2, c - a, d - b
    return jnp.stack([a, b, c, d], axis=-1)


def box_area(boxes: Any) -> jnp.ndarray:
    """``boxes: (..., 4)`` xyxy -> ``(...)`` areas ``(x2 - x1) * (y2 - y1)``."""
    x = _boxes(boxes, "boxes", "box_area", batched=True)
    return (x[..., 2] - x[..., 0]) * (x[..., 3] - x[..., 1])


def _intersection_union(b1: jnp.ndarray, b2: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
    area1 = (b1[:, 2] - b1[:, 0]) * (b1[:, 3] - b1[:, 1])
    area2 = (b2[:, 2] - b2[:, 0]) * (b2[:, 3] - b2[:, 1])
    lt = jnp.maximum(b1[:, None, :2], b2[None, :, :2])
    rb = jnp.minimum(b1[:, None, 2:], b2[None, :, 2:])
    wh = jnp.clip(rb - lt, 0)
    inter = wh[..., 0] * wh[..., 1]
    return inter, area1[:, None] + area2[None, :] - inter


def box_iou(boxes1: Any, boxes2: Any) -> jnp.ndarray:
    """Intersection over union, ``(N, 4), (M, 4) -> (N, M)`` (torchvision ``box_iou``).

    As in torchvision, two zero-area boxes that do not overlap give ``0 / 0 = nan``.
    """
    b1 = _float(_boxes(boxes1, "boxes1", "box_iou"))
    b2 = _float(_boxes(boxes2, "boxes2", "box_iou"))
    inter, union = _intersection_union(b1, b2)
    return inter / union


def generalized_box_iou(boxes1: Any, boxes2: Any) -> jnp.ndarray:
    """Generalized IoU (Rezatofighi et al. 2019), ``(N, 4), (M, 4) -> (N, M)``, in ``[-1, 1]``.

    ``giou = iou - (area(C) - union) / area(C)`` with ``C`` the smallest box enclosing both.
    """
    b1 = _float(_boxes(boxes1, "boxes1", "generalized_box_iou"))
    b2 = _float(_boxes(boxes2, "boxes2", "generalized_box_iou"))
    inter, union = _intersection_union(b1, b2)
    iou = inter / union
    lt = jnp.minimum(b1[:, None, :2], b2[None, :, :2])
    rb = jnp.maximum(b1[:, None, 2:], b2[None, :, 2:])
    wh = jnp.clip(rb - lt, 0)
    enclosing = wh[..., 0] * wh[..., 1]
    return iou - (enclosing - union) / enclosing


def clip_boxes_to_image(boxes: Any, size: Sequence[int]) -> jnp.ndarray:
    """Clips ``boxes: (..., 4)`` to an image of ``size = (height, width)`` (torchvision)."""
    x = _float(_boxes(boxes, "boxes", "clip_boxes_to_image", batched=True))
    if len(size) != 2:
        raise ValueError(f"clip_boxes_to_image: size must be (height, width), got {size!r}")
    h, w = size
    xs = jnp.clip(x[..., 0::2], 0, w)
    ys = jnp.clip(x[..., 1::2], 0, h)
    return jnp.stack([xs[..., 0], ys[..., 0], xs[..., 1], ys[..., 1]], axis=-1)


# --------------------------------------------------------------------------- NMS


def _greedy_nms(
    boxes: jnp.ndarray, scores: jnp.ndarray, groups: jnp.ndarray | None, iou_threshold: float, size: int
) -> tuple[jnp.ndarray, jnp.ndarray]:
    n = boxes.shape[0]
    if n == 0 or size == 0:
        return jnp.full((size,), -1, jnp.int32), jnp.zeros((size,), bool)
    # Highest score first; ties keep their input order (a stable sort), as torchvision's CPU kernel.
    order = jnp.argsort(scores, descending=True, stable=True)
    b = _float(boxes)[order]
    inter, union = _intersection_union(b, b)
    overlaps = (inter / union) > iou_threshold
    if groups is not None:
        g = groups[order]
        overlaps = overlaps & (g[:, None] == g[None, :])
    later = jnp.arange(n)[None, :] > jnp.arange(n)[:, None]
    overlaps = overlaps & later

    def visit(i, suppressed):
        # Box i (in score order) is kept iff no earlier kept box suppressed it; if kept, it
        # suppresses the later boxes it overlaps.
        return suppressed | (overlaps[i] & ~suppressed[i])

    suppressed = lax.fori_loop(0, n, visit, jnp.zeros((n,), bool))
    (positions,) = jnp.nonzero(~suppressed, size=size, fill_value=-1)
    valid = positions >= 0
    indices = jnp.where(valid, order[jnp.clip(positions, 0)], -1).astype(jnp.int32)
    return indices, valid


def nms(
    boxes: Any, scores: Any, iou_threshold: float, max_output_size: int | None = None
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Greedy non-maximum suppression (torchvision ``nms``) with a static output size.

    Boxes are visited by decreasing score (ties in input order); a box is kept unless a kept
    box overlaps it with IoU ``> iou_threshold``.

    Args:
      boxes: ``(N, 4)`` xyxy; ``N = 0`` is allowed.
      scores: ``(N,)`` floating.
      iou_threshold: in ``[0, 1]``.
      max_output_size: length of the result (default ``N``); only the first
        ``max_output_size`` kept boxes are returned.

    Returns:
      ``(indices, valid)``: ``indices: (max_output_size,) int32`` into ``boxes``, the kept boxes
      by decreasing score then ``-1`` padding; ``valid: (max_output_size,) bool``, True where
      ``indices`` is a real box. ``indices[valid]`` is torchvision's result (truncated).
    """
    op = "nms"
    b = _boxes(boxes, "boxes", op)
    s = _scores(scores, b.shape[0], op)
    thr = _threshold(iou_threshold, "iou_threshold", op)
    size = _count(max_output_size, "max_output_size", op, b.shape[0])
    return _greedy_nms(b, s, None, thr, size)


def batched_nms(
    boxes: Any, scores: Any, idxs: Any, iou_threshold: float, max_output_size: int | None = None
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """NMS within each category: boxes with different ``idxs`` never suppress each other.

    torchvision ``batched_nms``; same arguments as ``nms`` plus ``idxs: (N,)`` integer
    categories, and the same ``(indices, valid)`` result (all categories together, by
    decreasing score).
    """
    op = "batched_nms"
    b = _boxes(boxes, "boxes", op)
    s = _scores(scores, b.shape[0], op)
    g = args.as_array(idxs, "idxs", op)
    if g.ndim != 1 or g.shape[0] != b.shape[0]:
        raise ValueError(f"{op}: idxs must have shape ({b.shape[0]},) to match boxes, got {tuple(g.shape)}")
    if not jnp.issubdtype(g.dtype, jnp.integer):
        raise TypeError(f"{op}: idxs must be integer categories, got dtype {g.dtype}")
    thr = _threshold(iou_threshold, "iou_threshold", op)
    size = _count(max_output_size, "max_output_size", op, b.shape[0])
    return _greedy_nms(b, s, g, thr, size)


# --------------------------------------------------------------------------- RoI pooling


def _rois(boxes: Any, batch: int, op: str) -> jnp.ndarray:
    """``(K, 5)`` rows ``(batch_index, x1, y1, x2, y2)``, or a list of ``(L_i, 4)`` per image."""
    if isinstance(boxes, (list, tuple)):
        if len(boxes) != batch:
            raise ValueError(f"{op}: boxes is a list of {len(boxes)} arrays but input has {batch} images")
        parts = []
        for i, per_image in enumerate(boxes):
            b = _float(_boxes(per_image, f"boxes[{i}]", op))
            parts.append(jnp.concatenate([jnp.full((b.shape[0], 1), i, b.dtype), b], axis=1))
        return jnp.concatenate(parts, axis=0) if parts else jnp.zeros((0, 5), jnp.float32)
    r = args.as_array(boxes, "boxes", op)
    if r.ndim != 2 or r.shape[1] != 5:
        raise ValueError(
            f"{op}: boxes must be (K, 5) rows (batch_index, x1, y1, x2, y2) or a list of (L, 4) "
            f"arrays, got shape {tuple(r.shape)}"
        )
    r = _float(r)
    _boxes(r[:, 1:], "boxes[:, 1:]", op)
    if _is_concrete(r) and r.size:
        index = np.asarray(r[:, 0])
        if np.any((index < 0) | (index >= batch) | (index != np.floor(index))):
            raise ValueError(f"{op}: boxes[:, 0] must hold batch indices in [0, {batch}), got {index}")
    return r


def _feature_map(input: Any, layout: str, op: str) -> jnp.ndarray:
    """The input as ``(N, H, W, C)``."""
    x = args.as_array(input, "input", op)
    last = args.channels_last(layout, op, 2)
    args.check_rank(x, "input", op, (4,), "(N, H, W, C)" if last else "(N, C, H, W)")
    args.check_floating(x, "input", op)
    return x if last else jnp.transpose(x, (0, 2, 3, 1))


def _output(y: jnp.ndarray, layout: str) -> jnp.ndarray:
    """``(K, oh, ow, C)`` to the caller's layout."""
    return y if args.channels_last(layout, "roi") else jnp.transpose(y, (0, 3, 1, 2))


def _grid_axis(
    start: jnp.ndarray, length: jnp.ndarray, out: int, size: int, grid: jnp.ndarray, max_grid: int, dtype: Any
) -> jnp.ndarray:
    """Interpolation matrix ``(K, out, size)`` of one axis: row ``p`` averages bin ``p``'s samples.

    torchvision's bilinear sampling is separable: the out-of-map test and the clamping act on
    each coordinate alone and the weight is a product, so a bin's average over its
    ``grid_y x grid_x`` samples is ``A_y @ feature @ A_x.T``.
    """
    bin_size = length / out  # (K,)
    p = jnp.arange(out, dtype=dtype)[None, :, None]
    i = jnp.arange(max_grid, dtype=dtype)[None, None, :]
    g = jnp.maximum(grid, 1).astype(dtype)[:, None, None]
    coord = start[:, None, None] + p * bin_size[:, None, None] + (i + 0.5) * bin_size[:, None, None] / g
    used = (jnp.arange(max_grid)[None, None, :] < grid[:, None, None]) & (coord >= -1.0) & (coord <= size)
    coord = jnp.maximum(coord, 0.0)
    low = jnp.floor(coord).astype(jnp.int32)
    at_edge = low >= size - 1
    low = jnp.where(at_edge, size - 1, low)
    high = jnp.where(at_edge, size - 1, low + 1)
    frac = jnp.where(at_edge, 0.0, coord - low.astype(dtype))
    weight = used.astype(dtype) / g
    columns = jnp.arange(size)[None, None, None, :]
    at_low = (low[..., None] == columns).astype(dtype)
    at_high = (high[..., None] == columns).astype(dtype)
    matrix = (weight * (1.0 - frac))[..., None] * at_low + (weight * frac)[..., None] * at_high
    return matrix.sum(axis=2)


def roi_align(
    input: Any,
    boxes: Any,
    output_size: Any,
    spatial_scale: float = 1.0,
    sampling_ratio: int = -1,
    aligned: bool = False,
    *,
    max_sampling_ratio: int | None = None,
    layout: str = "NHWC",
) -> jnp.ndarray:
    """RoI Align (He et al. 2017, Mask R-CNN): torchvision ``roi_align``, bilinear and averaged.

    Each box, scaled by ``spatial_scale`` (and shifted by -0.5 pixel if ``aligned``), is split
    into ``output_size`` bins; each bin averages ``grid_h x grid_w`` bilinear samples at the
    centres of a regular sub-grid. Samples further than one pixel outside the map count as 0;
    without ``aligned`` a box is at least 1x1.

    Args:
      input: ``(N, H, W, C)`` (``layout="NHWC"``) or ``(N, C, H, W)`` (``"NCHW"``), floating.
      boxes: ``(K, 5)`` rows ``(batch_index, x1, y1, x2, y2)`` in input-image pixels, or a
        list of ``N`` arrays ``(L_i, 4)`` (image ``i``'s boxes), as torchvision.
      output_size: ``int`` or ``(out_h, out_w)``, each >= 1.
      spatial_scale: feature-map pixels per image pixel (``1 / stride``).
      sampling_ratio: samples per bin side; ``<= 0`` is torchvision's adaptive
        ``ceil(roi_size / output_size)`` per box. That count depends on the data, so the
        samples are laid on a static grid of ``max_sampling_ratio`` per side and the unused
        ones masked. With concrete boxes the grid is the largest count the boxes need (exact).
        Under ``jit`` it is ``max_sampling_ratio`` or, by default, ``ceil(H / out_h)`` (and
        ``ceil(W / out_w)``): exact for every box inside the feature map; a larger box samples
        that many points per bin side instead of more.
      aligned: shift the box by -0.5 pixel so that sample positions are pixel centres.
      max_sampling_ratio: the static bound above (only for ``sampling_ratio <= 0``).
      layout: of ``input`` and of the result.

    Returns:
      ``(K, out_h, out_w, C)`` for ``"NHWC"``, ``(K, C, out_h, out_w)`` for ``"NCHW"``.
      Differentiable with respect to ``input`` (and the box coordinates).
    """
    op = "roi_align"
    x = _feature_map(input, layout, op)
    n, h, w, c = x.shape
    oh, ow = args.as_tuple(output_size, 2, "output_size", op)
    rois = _rois(boxes, n, op)
    if isinstance(sampling_ratio, bool) or not isinstance(sampling_ratio, (int, np.integer)):
        raise TypeError(f"{op}: sampling_ratio must be an int, got {sampling_ratio!r}")
    if isinstance(spatial_scale, bool) or not isinstance(spatial_scale, numbers.Real) or not spatial_scale > 0:
        raise ValueError(f"{op}: spatial_scale must be a positive number, got {spatial_scale!r}")
    if max_sampling_ratio is not None and (
        isinstance(max_sampling_ratio, bool)
        or not isinstance(max_sampling_ratio, int)
        or max_sampling_ratio < 1
    ):
        raise ValueError(f"{op}: max_sampling_ratio must be an int >= 1, got {max_sampling_ratio!r}")
    k = rois.shape[0]
    dtype = x.dtype
    if k == 0:
        return _output(jnp.zeros((0, oh, ow, c), dtype), layout)
    rois = rois.astype(dtype)
    offset = 0.5 if aligned else 0.0
    coords = rois[:, 1:] * spatial_scale - offset
    start_x, start_y = coords[:, 0], coords[:, 1]
    roi_w, roi_h = coords[:, 2] - coords[:, 0], coords[:, 3] - coords[:, 1]
    if not aligned:
        roi_w, roi_h = jnp.maximum(roi_w, 1.0), jnp.maximum(roi_h, 1.0)
    if sampling_ratio > 0:
        grid_h = grid_w = jnp.full((k,), sampling_ratio, jnp.int32)
        max_h = max_w = int(sampling_ratio)
    else:
        grid_h = jnp.ceil(roi_h / oh).astype(jnp.int32)
        grid_w = jnp.ceil(roi_w / ow).astype(jnp.int32)
        if _is_concrete(grid_h):
            max_h, max_w = max(int(jnp.max(grid_h)), 1), max(int(jnp.max(grid_w)), 1)
        else:
            max_h = max_sampling_ratio or max(-(-h // oh), 1)
            max_w = max_sampling_ratio or max(-(-w // ow), 1)
            grid_h, grid_w = jnp.minimum(grid_h, max_h), jnp.minimum(grid_w, max_w)
    ay = _grid_axis(start_y, roi_h, oh, h, grid_h, max_h, dtype)  # (K, oh, H)
    ax = _grid_axis(start_x, roi_w, ow, w, grid_w, max_w, dtype)  # (K, ow, W)
    if n == 1:
        # One image (e.g. under a vmap over images): a plain matrix product, no (K, H, W, C) gather.
        rows = jnp.einsum("kph,hwc->kpwc", ay, x[0])
    else:
        rows = jnp.einsum("kph,khwc->kpwc", ay, x[rois[:, 0].astype(jnp.int32)])
    return _output(jnp.einsum("kqw,kpwc->kpqc", ax, rows), layout)


def _round_half_away(v: jnp.ndarray) -> jnp.ndarray:
    # C's round(), which torchvision's roi_pool uses: halves away from zero (jnp.round: to even).
    return jnp.sign(v) * jnp.floor(jnp.abs(v) + 0.5)


def _bin_mask(start: jnp.ndarray, length: jnp.ndarray, out: int, size: int, dtype: Any) -> jnp.ndarray:
    """``(K, out, size)``: which map cells bin ``p`` of each box covers (torchvision roi_pool)."""
    bin_size = length.astype(dtype) / out
    p = jnp.arange(out, dtype=dtype)[None, :]
    lo = jnp.floor(p * bin_size[:, None]).astype(jnp.int32) + start[:, None]
    hi = jnp.ceil((p + 1) * bin_size[:, None]).astype(jnp.int32) + start[:, None]
    lo, hi = jnp.clip(lo, 0, size), jnp.clip(hi, 0, size)
    cells = jnp.arange(size)[None, None, :]
    return (cells >= lo[..., None]) & (cells < hi[..., None])


def roi_pool(
    input: Any, boxes: Any, output_size: Any, spatial_scale: float = 1.0, *, layout: str = "NHWC"
) -> jnp.ndarray:
    """RoI max pooling (Girshick 2015, Fast R-CNN): torchvision ``roi_pool``.

    Box corners are rounded to map cells (``round(x * spatial_scale)``, halves away from
    zero), the box (at least 1x1 cells, both ends included) is split into ``output_size``
    bins of ``floor(p * bin) .. ceil((p + 1) * bin)`` cells, and each bin takes the maximum;
    an empty bin (outside the map) gives 0.

    Args:
      input: ``(N, H, W, C)`` or ``(N, C, H, W)`` by ``layout``.
      boxes: ``(K, 5)`` rows ``(batch_index, x1, y1, x2, y2)`` or a list of ``(L_i, 4)``.
      output_size: ``int`` or ``(out_h, out_w)``.
      spatial_scale: feature-map pixels per image pixel.

    Returns:
      ``(K, out_h, out_w, C)`` (NHWC) or ``(K, C, out_h, out_w)`` (NCHW).
    """
    op = "roi_pool"
    x = _feature_map(input, layout, op)
    n, h, w, c = x.shape
    oh, ow = args.as_tuple(output_size, 2, "output_size", op)
    rois = _rois(boxes, n, op)
    if isinstance(spatial_scale, bool) or not isinstance(spatial_scale, numbers.Real) or not spatial_scale > 0:
        raise ValueError(f"{op}: spatial_scale must be a positive number, got {spatial_scale!r}")
    k = rois.shape[0]
    if k == 0:
        return _output(jnp.zeros((0, oh, ow, c), x.dtype), layout)
    corners = _round_half_away(rois[:, 1:] * spatial_scale).astype(jnp.int32)
    roi_w = jnp.maximum(corners[:, 2] - corners[:, 0] + 1, 1)
    roi_h = jnp.maximum(corners[:, 3] - corners[:, 1] + 1, 1)
    rows = _bin_mask(corners[:, 1], roi_h, oh, h, x.dtype)  # (K, oh, H)
    cols = _bin_mask(corners[:, 0], roi_w, ow, w, x.dtype)  # (K, ow, W)
    # (K, H, W, C), or a broadcast of the only image (no gather)
    per_box = x[:1] if n == 1 else x[rois[:, 0].astype(jnp.int32)]
    low = jnp.asarray(-jnp.inf, x.dtype)
    # Max over the columns of each bin, then over its rows: two masked reductions instead of
    # one (K, oh, ow, H, W, C) intermediate.
    by_col = jnp.max(jnp.where(cols[:, None, :, :, None], per_box[:, :, None, :, :], low), axis=3)
    y = jnp.max(jnp.where(rows[:, :, :, None, None], by_col[:, None, :, :, :], low), axis=2)
    empty = ~(rows.any(-1)[:, :, None] & cols.any(-1)[:, None, :])
    return _output(jnp.where(empty[..., None], jnp.zeros((), x.dtype), y), layout)


# --------------------------------------------------------------------------- box coding


def _weights(weights: Any, op: str) -> tuple[float, float, float, float]:
    if len(weights) != 4 or not all(isinstance(v, (int, float)) and v > 0 for v in weights):
        raise ValueError(f"{op}: weights must be 4 positive numbers (wx, wy, ww, wh), got {weights!r}")
    return tuple(float(v) for v in weights)


def encode_boxes(
    reference_boxes: Any, proposals: Any, weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0)
) -> jnp.ndarray:
    """Regression targets of ``reference_boxes`` relative to ``proposals`` (torchvision BoxCoder).

    ``dx = wx * (gx - px) / pw``, ``dy = wy * (gy - py) / ph``, ``dw = ww * log(gw / pw)``,
    ``dh = wh * log(gh / ph)`` with centres ``(x, y)`` and sizes ``(w, h)`` (no +1).
    torchvision uses ``weights=(1, 1, 1, 1)`` for the RPN and ``(10, 10, 5, 5)`` for the
    R-CNN box head.

    Args:
      reference_boxes: ``(N, 4)`` xyxy, the targets (ground truth).
      proposals: ``(N, 4)`` xyxy, the anchors or proposals, of positive size.

    Returns:
      ``(N, 4)`` deltas ``(dx, dy, dw, dh)``.
    """
    op = "encode_boxes"
    g = _float(_boxes(reference_boxes, "reference_boxes", op))
    p = _float(_boxes(proposals, "proposals", op))
    if g.shape != p.shape:
        raise ValueError(f"{op}: reference_boxes {tuple(g.shape)} and proposals {tuple(p.shape)} differ")
    wx, wy, ww, wh = _weights(weights, op)
    pw, ph = p[:, 2] - p[:, 0], p[:, 3] - p[:, 1]
    px, py = p[:, 0] + 0.5 * pw, p[:, 1] + 0.5 * ph
    gw, gh = g[:, 2] - g[:, 0], g[:, 3] - g[:, 1]
    gx, gy = g[:, 0] + 0.5 * gw, g[:, 1] + 0.5 * gh
    return jnp.stack(
        [wx * (gx - px) / pw, wy * (gy - py) / ph, ww * jnp.log(gw / pw), wh * jnp.log(gh / ph)], axis=1
    )


def decode_boxes(
    rel_codes: Any,
    boxes: Any,
    weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0),
    bbox_xform_clip: float = BBOX_XFORM_CLIP,
) -> jnp.ndarray:
    """Applies deltas to boxes, the inverse of ``encode_boxes`` (torchvision ``decode_single``).

    ``dw`` and ``dh`` (after dividing by their weights) are clamped at ``bbox_xform_clip``
    (``log(1000 / 16)``) before ``exp``, so a box grows at most 62.5-fold.

    Args:
      rel_codes: ``(N, 4 * J)`` deltas, ``J`` sets per box (e.g. one per class).
      boxes: ``(N, 4)`` xyxy reference boxes.

    Returns:
      ``(N, 4 * J)`` xyxy boxes.
    """
    op = "decode_boxes"
    d = args.as_array(rel_codes, "rel_codes", op)
    b = _float(_boxes(boxes, "boxes", op))
    if d.ndim != 2 or d.shape[1] % 4 or d.shape[0] != b.shape[0]:
        raise ValueError(
            f"{op}: rel_codes must be (N, 4 * J) with N = {b.shape[0]} (boxes), got {tuple(d.shape)}"
        )
    args.check_floating(d, "rel_codes", op)
    wx, wy, ww, wh = _weights(weights, op)
    width, height = b[:, 2:3] - b[:, 0:1], b[:, 3:4] - b[:, 1:2]
    cx, cy = b[:, 0:1] + 0.5 * width, b[:, 1:2] + 0.5 * height
    dx, dy = d[:, 0::4] / wx, d[:, 1::4] / wy
    dw = jnp.minimum(d[:, 2::4] / ww, bbox_xform_clip)
    dh = jnp.minimum(d[:, 3::4] / wh, bbox_xform_clip)
    pcx, pcy = dx * width + cx, dy * height + cy
    pw, ph = jnp.exp(dw) * width, jnp.exp(dh) * height
    out = jnp.stack([pcx - 0.5 * pw, pcy - 0.5 * ph, pcx + 0.5 * pw, pcy + 0.5 * ph], axis=2)
    return out.reshape(d.shape)


# --------------------------------------------------------------------------- anchors


def cell_anchors(sizes: Sequence[float], aspect_ratios: Sequence[float]) -> np.ndarray:
    """Zero-centred anchors of one feature map, torchvision ``AnchorGenerator.generate_anchors``.

    ``aspect_ratio = height / width``; for each ratio (outer) and size (inner) the anchor is
    ``(-w/2, -h/2, w/2, h/2)`` with ``h = size * sqrt(ratio)``, ``w = size / sqrt(ratio)``,
    rounded to integers (half to even), in float32.

    Returns:
      ``(len(aspect_ratios) * len(sizes), 4)`` float32 NumPy array (a static constant).
    """
    op = "cell_anchors"
    if not len(sizes) or not all(isinstance(s, (int, float)) and s > 0 for s in sizes):
        raise ValueError(f"{op}: sizes must be positive numbers, got {sizes!r}")
    if not len(aspect_ratios) or not all(isinstance(a, (int, float)) and a > 0 for a in aspect_ratios):
        raise ValueError(f"{op}: aspect_ratios must be positive numbers, got {aspect_ratios!r}")
    scales = np.asarray(sizes, np.float32)
    h_ratios = np.sqrt(np.asarray(aspect_ratios, np.float32))
    w_ratios = np.float32(1) / h_ratios
    ws = (w_ratios[:, None] * scales[None, :]).reshape(-1)
    hs = (h_ratios[:, None] * scales[None, :]).reshape(-1)
    return np.round(np.stack([-ws, -hs, ws, hs], axis=1) / np.float32(2)).astype(np.float32)


def grid_anchors(grid_size: Sequence[int], stride: Sequence[int] | int, anchors: np.ndarray) -> np.ndarray:
    """Anchors at every cell of a ``grid_size = (H, W)`` feature map (torchvision layout).

    Cell ``(i, j)`` shifts each cell anchor by ``(j * stride_w, i * stride_h)``; the result is
    ordered row-major over cells, then by cell anchor: row ``(i * W + j) * A + a``, which
    matches an RPN head output ``(H, W, A, ...)`` reshaped to ``(H * W * A, ...)``.

    Returns:
      ``(H * W * A, 4)`` float32 NumPy array.
    """
    op = "grid_anchors"
    gh, gw = args.as_tuple(tuple(grid_size), 2, "grid_size", op)
    sh, sw = args.as_tuple(stride, 2, "stride", op)
    anchors = np.asarray(anchors, np.float32)
    if anchors.ndim != 2 or anchors.shape[1] != 4:
        raise ValueError(f"{op}: anchors must be (A, 4), got {anchors.shape}")
    shift_y, shift_x = np.meshgrid(
        np.arange(gh, dtype=np.float32) * sh, np.arange(gw, dtype=np.float32) * sw, indexing="ij"
    )
    shifts = np.stack([shift_x, shift_y, shift_x, shift_y], axis=-1).reshape(-1, 1, 4)
    return (shifts + anchors[None]).reshape(-1, 4)


def anchors_for_feature_maps(
    image_size: Sequence[int],
    feature_sizes: Sequence[Sequence[int]],
    sizes: Sequence[Sequence[float]],
    aspect_ratios: Sequence[Sequence[float]],
) -> np.ndarray:
    """All anchors of an image, torchvision ``AnchorGenerator.forward`` for one image.

    Feature map ``m`` of size ``feature_sizes[m]`` gets ``sizes[m] x aspect_ratios[m]``
    anchors per cell with stride ``image_size // feature_size`` (integer division, as
    torchvision); the maps' anchors are concatenated in order.

    Returns:
      ``(sum_m H_m * W_m * A_m, 4)`` float32 NumPy array.
    """
    op = "anchors_for_feature_maps"
    if not (len(feature_sizes) == len(sizes) == len(aspect_ratios)):
        raise ValueError(
            f"{op}: feature_sizes ({len(feature_sizes)}), sizes ({len(sizes)}) and aspect_ratios "
            f"({len(aspect_ratios)}) must have one entry per feature map"
        )
    ih, iw = args.as_tuple(tuple(image_size), 2, "image_size", op)
    out = []
    for fs, s, a in zip(feature_sizes, sizes, aspect_ratios):
        fh, fw = args.as_tuple(tuple(fs), 2, "feature_sizes", op)
        out.append(grid_anchors((fh, fw), (ih // fh, iw // fw), cell_anchors(s, a)))
    return np.concatenate(out, axis=0)
