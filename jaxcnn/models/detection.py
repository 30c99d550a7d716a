"""Two-stage detectors of the R-CNN family, small enough to train on a CPU, with static shapes.

Three steps of the same idea, sharing one box head and one loss:

- :class:`RCNN` (Girshick et al. 2014): proposals from a fixed multi-scale sliding-window grid
  (the stand-in for selective search); each window is cut from the *image* and resized
  (``roi_align`` on the pixels, i.e. crop-and-warp) and classified by a small CNN. It runs the
  CNN once per window: slow by design, that is the lesson.
- :class:`FastRCNN` (Girshick 2015): the same windows, but the features are computed once per
  image and each window is pooled from them (``roi_pool`` or ``roi_align``).
- :class:`FasterRCNN` (Ren et al. 2015): a region proposal network on anchors (objectness +
  deltas) replaces the fixed windows; its top-k boxes after NMS are pooled with RoI Align.

Each model returns raw outputs (``proposals``, ``proposal_valid``, ``class_logits``,
``box_deltas``; Faster R-CNN also ``anchors``, ``objectness``, ``rpn_deltas``). Given
``gt_boxes``/``gt_valid`` (training), the ground-truth boxes are appended to the proposals,
as torchvision does. :func:`detect` turns outputs into fixed-size per-image detections
(``boxes``, ``scores``, ``classes``, ``valid``) after a score threshold and per-class NMS;
:func:`roi_head_loss` and :func:`rpn_loss` are the training losses, pure functions of the
outputs, the targets and a PRNG key (for the balanced sampling).

Classes: the model's class 0 is background and class ``c + 1`` is dataset class ``c``;
:func:`detect` returns dataset classes (``0 .. num_classes - 1``). Images are ``(N, H, W, C)``
floats; boxes ``(x1, y1, x2, y2)`` in pixels.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxcnn import functional as F
from jaxcnn import nn as jnn
from jaxcnn.models import _checks

# torchvision's defaults (torchvision.models.detection.FasterRCNN / RoIHeads / RPN)
BOX_WEIGHTS = (10.0, 10.0, 5.0, 5.0)  # RoI head box coder
SMOOTH_L1_BETA = 1.0 / 9.0


# --------------------------------------------------------------------------- building blocks

_POOLED_CONVS = 2  # Backbone: a 2x2 max pool follows each of the first two convs only


def sliding_window_proposals(
    image_size: int | tuple[int, int],
    window_sizes: Sequence[int] = (16, 24, 32, 48),
    aspect_ratios: Sequence[float] = (1.0,),
    overlap: float = 0.5,
) -> np.ndarray:
    """A fixed multi-scale grid of windows: R-CNN's stand-in for selective search.

    For each size ``s`` and ratio ``r`` (height / width) a window ``s / sqrt(r)`` wide and
    ``s * sqrt(r)`` high slides over the image with a step of ``(1 - overlap)`` times its
    side, the last one flush with the far edge.

    Returns:
      ``(P, 4)`` float32 NumPy boxes, by size, ratio, then row-major position.
    """
    h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"sliding_window_proposals: overlap must be in [0, 1), got {overlap}")
    boxes = []
    for size in window_sizes:
        for ratio in aspect_ratios:
            bw, bh = min(size / math.sqrt(ratio), w), min(size * math.sqrt(ratio), h)

            def starts(extent, side):
                step = max(1.0, (1.0 - overlap) * side)
                values = np.arange(0.0, extent - side + 1e-6, step)
                return np.unique(np.append(values, extent - side))

            ys, xs = np.meshgrid(starts(h, bh), starts(w, bw), indexing="ij")
            y, x = ys.reshape(-1), xs.reshape(-1)
            boxes.append(np.stack([x, y, x + bw, y + bh], axis=1))
    return np.concatenate(boxes).astype(np.float32)


class Backbone(nn.Module):
    """Stride-4 feature extractor: [Conv 3x3 + ReLU, MaxPool 2] x 2, Conv 3x3 + ReLU.

    Returns the last map ``(N, H / 4, W / 4, features[-1])``, or with ``levels=True`` a dict
    from stride to the last map at that stride: ``{1: conv0, 2: conv1, 4: conv2}`` for three
    convs (:func:`backbone_strides` lists the keys).
    """

    features: Sequence[int] = (16, 32, 64)

    @nn.compact
    def __call__(self, x: jax.Array, *, levels: bool = False) -> jax.Array | dict[int, jax.Array]:
        maps, stride = {}, 1
        for i, f in enumerate(self.features):
            x = F.relu(jnn.Conv(f, 3, padding="SAME", name=f"conv{i}")(x))
            maps[stride] = x
            if i < _POOLED_CONVS:
                x, stride = jnn.MaxPool(2)(x), stride * 2
        maps[stride] = x
        return maps if levels else x


def backbone_strides(num_convs: int) -> tuple[int, ...]:
    """The strides of the maps :class:`Backbone` with ``num_convs`` convs returns with ``levels=True``."""
    return tuple(2**i for i in range(min(num_convs, _POOLED_CONVS) + 1))


class BoxHead(nn.Module):
    """torchvision's TwoMLPHead + FastRCNNPredictor: flatten, 2 x (Dense + ReLU), then class
    logits ``(K, num_classes + 1)`` and per-class deltas ``(K, num_classes + 1, 4)``."""

    num_classes: int
    hidden: int = 128

    @nn.compact
    def __call__(self, pooled: jax.Array) -> tuple[jax.Array, jax.Array]:
        x = pooled.reshape(pooled.shape[0], -1)
        x = F.relu(jnn.Dense(self.hidden, name="fc6")(x))
        x = F.relu(jnn.Dense(self.hidden, name="fc7")(x))
        logits = jnn.Dense(self.num_classes + 1, name="cls_score")(x)
        deltas = jnn.Dense((self.num_classes + 1) * 4, name="bbox_pred")(x)
        return logits, deltas.reshape(x.shape[0], self.num_classes + 1, 4)


def _pool_per_image(pool: Any, feats: jax.Array, proposals: jax.Array) -> jax.Array:
    """``pool(features (1, H, W, C), [boxes (P, 4)])`` mapped over the images:
    ``(N, H, W, C), (N, P, 4) -> (N * P, ...)``. One image at a time, the RoI ops need no
    ``(N * P, H, W, C)`` gather of the feature maps."""
    pooled = jax.vmap(lambda f, b: pool(f[None], [b]))(feats, proposals)
    return pooled.reshape(-1, *pooled.shape[2:])


def _check_roi_strides(strides: Sequence[int], num_convs: int, model: str) -> None:
    available = backbone_strides(num_convs)
    if not strides or any(s not in available for s in strides) or len(set(strides)) != len(strides):
        raise ValueError(
            f"{model}: roi_strides={tuple(strides)!r} must be distinct strides of the backbone's maps "
            f"{available} (features has {num_convs} convs)"
        )


def _pool_levels(pool: Any, maps: dict[int, jax.Array], strides: Sequence[int], proposals, image_height):
    """Each proposal pooled from the backbone map of every stride in ``strides``, the results
    concatenated along channels: ``(N * P, out, out, sum of C)``. ``pool(f, b, scale)``."""
    pooled = []
    for stride in strides:
        scale = maps[stride].shape[1] / image_height
        pooled.append(_pool_per_image(functools.partial(pool, scale=scale), maps[stride], proposals))
    return jnp.concatenate(pooled, axis=-1)


def _with_ground_truth(n, proposals, valid, gt_boxes, gt_valid):
    proposals = jnp.broadcast_to(proposals, (n, *proposals.shape[1:]))
    valid = jnp.broadcast_to(valid, proposals.shape[:2])
    if gt_boxes is None:
        return proposals, valid
    gt_boxes = jnp.asarray(gt_boxes, proposals.dtype)
    gt_valid = jnp.ones(gt_boxes.shape[:2], bool) if gt_valid is None else jnp.asarray(gt_valid, bool)
    return jnp.concatenate([proposals, gt_boxes], axis=1), jnp.concatenate([valid, gt_valid], axis=1)


def _head(outputs: dict, logits: jax.Array, deltas: jax.Array, n: int) -> dict:
    p = outputs["proposals"].shape[1]
    return {**outputs, "class_logits": logits.reshape(n, p, -1), "box_deltas": deltas.reshape(n, p, -1, 4)}


def _check(images: Any, gt_boxes: Any, gt_valid: Any, model: str) -> jax.Array:
    images = _checks.inputs(images, model)
    if gt_boxes is not None:
        shape = jnp.shape(gt_boxes)
        if len(shape) != 3 or shape[0] != images.shape[0] or shape[2] != 4:
            raise ValueError(f"{model}: gt_boxes must be (N={images.shape[0]}, G, 4), got {shape}")
        if gt_valid is not None and jnp.shape(gt_valid) != shape[:2]:
            raise ValueError(f"{model}: gt_valid must be {shape[:2]}, got {jnp.shape(gt_valid)}")
    return images


# --------------------------------------------------------------------------- the detectors


class RCNN(nn.Module):
    """R-CNN: warp each sliding window of the image to ``crop_size`` and classify it with a CNN.

    ``__call__(images (N, H, W, C), gt_boxes=None, gt_valid=None) -> outputs`` (module doc).
    """

    num_classes: int = 10
    window_sizes: Sequence[int] = (16, 24, 32, 48)
    aspect_ratios: Sequence[float] = (1.0,)
    overlap: float = 0.5
    crop_size: int = 16
    features: Sequence[int] = (16, 32)
    hidden: int = 128

    def __post_init__(self):
        _checks.positive_int(self.num_classes, "num_classes", "RCNN")
        _checks.positive_int(self.crop_size, "crop_size", "RCNN")
        super().__post_init__()

    @nn.compact
    def __call__(
        self, images: jax.Array, gt_boxes: Any = None, gt_valid: Any = None, train: bool = False
    ) -> dict:
        del train  # no dropout or BatchNorm: taken so the zoo's model.apply(..., train=...) fits
        images = _check(images, gt_boxes, gt_valid, "RCNN")
        n, h, w, _ = images.shape
        windows = jnp.asarray(
            sliding_window_proposals((h, w), self.window_sizes, self.aspect_ratios, self.overlap)
        )
        proposals, valid = _with_ground_truth(
            n, windows[None], jnp.ones((1, windows.shape[0]), bool), gt_boxes, gt_valid
        )
        proposals = jax.lax.stop_gradient(proposals)
        crops = _pool_per_image(
            lambda f, b: F.roi_align(f, b, self.crop_size, 1.0, 2, True), images, proposals
        )
        x = crops
        for i, f in enumerate(self.features):
            x = jnn.MaxPool(2)(F.relu(jnn.Conv(f, 3, padding="SAME", name=f"conv{i}")(x)))
        logits, deltas = BoxHead(self.num_classes, self.hidden, name="box_head")(x)
        return _head({"proposals": proposals, "proposal_valid": valid}, logits, deltas, n)


class FastRCNN(nn.Module):
    """Fast R-CNN: features once per image, then ``roi_pool`` (or ``roi_align``) per window.

    ``pooling="align"`` (default) pools with RoI Align (``sampling_ratio=2``), two matrix
    products per image; ``"pool"`` is the paper's RoI max pooling, whose masked maxima touch
    ``P x H x out x W x C`` values per image here, several times slower to train on a CPU.
    ``roi_strides``: the backbone maps pooled, concatenated along channels (as :class:`FasterRCNN`).
    """

    num_classes: int = 10
    window_sizes: Sequence[int] = (16, 24, 32, 48)
    aspect_ratios: Sequence[float] = (1.0,)
    overlap: float = 0.5
    pooling: str = "align"
    pool_size: int = 7
    features: Sequence[int] = (16, 32, 64)
    hidden: int = 128
    roi_strides: Sequence[int] = (4,)

    def __post_init__(self):
        _checks.positive_int(self.num_classes, "num_classes", "FastRCNN")
        _checks.choice(self.pooling, "pooling", "FastRCNN", ("pool", "align"))
        _check_roi_strides(self.roi_strides, len(self.features), "FastRCNN")
        super().__post_init__()

    @nn.compact
    def __call__(
        self, images: jax.Array, gt_boxes: Any = None, gt_valid: Any = None, train: bool = False
    ) -> dict:
        del train  # no dropout or BatchNorm: taken so the zoo's model.apply(..., train=...) fits
        images = _check(images, gt_boxes, gt_valid, "FastRCNN")
        n, h, w, _ = images.shape
        maps = Backbone(self.features, name="backbone")(images, levels=True)
        windows = jnp.asarray(
            sliding_window_proposals((h, w), self.window_sizes, self.aspect_ratios, self.overlap)
        )
        proposals, valid = _with_ground_truth(
            n, windows[None], jnp.ones((1, windows.shape[0]), bool), gt_boxes, gt_valid
        )
        proposals = jax.lax.stop_gradient(proposals)
        if self.pooling == "pool":
            pool = lambda f, b, scale: F.roi_pool(f, b, self.pool_size, scale)  # noqa: E731
        else:
            pool = lambda f, b, scale: F.roi_align(f, b, self.pool_size, scale, 2)  # noqa: E731
        pooled = _pool_levels(pool, maps, self.roi_strides, proposals, h)
        logits, deltas = BoxHead(self.num_classes, self.hidden, name="box_head")(pooled)
        return _head({"proposals": proposals, "proposal_valid": valid}, logits, deltas, n)


def rpn_proposals(
    anchors: jax.Array,
    objectness: jax.Array,
    rpn_deltas: jax.Array,
    image_size: tuple[int, int],
    *,
    pre_nms_top_n: int = 300,
    post_nms_top_n: int = 32,
    nms_threshold: float = 0.7,
    min_size: float = 1e-3,
) -> tuple[jax.Array, jax.Array]:
    """RPN boxes of one image: decode, clip, keep the ``pre_nms_top_n`` best, NMS, keep
    ``post_nms_top_n`` (torchvision ``RegionProposalNetwork.filter_proposals``, static sizes).

    Args:
      anchors: ``(A, 4)``; objectness: ``(A,)`` logits; rpn_deltas: ``(A, 4)``.

    Returns:
      ``(boxes (post_nms_top_n, 4), valid (post_nms_top_n,))``; gradients are stopped, as
      torchvision detaches proposals.
    """
    objectness, rpn_deltas = jax.lax.stop_gradient(objectness), jax.lax.stop_gradient(rpn_deltas)
    boxes = F.clip_boxes_to_image(F.decode_boxes(rpn_deltas, anchors), image_size)
    k = min(pre_nms_top_n, anchors.shape[0])
    scores, top = jax.lax.top_k(objectness, k)
    boxes = boxes[top]
    big = ((boxes[:, 2] - boxes[:, 0]) >= min_size) & ((boxes[:, 3] - boxes[:, 1]) >= min_size)
    # Too-small boxes sink below every real score, so they are visited last and dropped.
    keep, valid = F.nms(
        boxes, jnp.where(big, scores, jnp.finfo(scores.dtype).min), nms_threshold, post_nms_top_n
    )
    valid = valid & big[jnp.clip(keep, 0)]
    return jnp.where(valid[:, None], boxes[jnp.clip(keep, 0)], 0.0), valid


class FasterRCNN(nn.Module):
    """Faster R-CNN: backbone, RPN on anchors, top-k + NMS proposals, RoI Align box head.

    Anchors: ``anchor_sizes x aspect_ratios`` per feature-map cell (torchvision's
    ``AnchorGenerator``). Proposals: ``pre_nms_top_n`` best anchors, NMS at
    ``rpn_nms_threshold`` (torchvision: 0.7), ``post_nms_top_n`` kept. The head pools
    ``pool_size`` x ``pool_size`` with RoI Align (``sampling_ratio=2``, as torchvision's
    MultiScaleRoIAlign).

    ``roi_strides``: the backbone maps the head pools every proposal from, their pooled features
    concatenated along channels (hypercolumn-style, as HyperNet / ION, rather than one FPN level
    per box size). ``(4,)`` is the last map; ``(2, 4)`` adds the stride-2 map, whose finer grid
    places the edges of small and thin objects (boxes a few pixels wide) that a stride-4 cell
    blurs.
    """

    num_classes: int = 10
    anchor_sizes: Sequence[float] = (12.0, 24.0, 48.0)
    aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0)
    pre_nms_top_n: int = 300
    post_nms_top_n: int = 32
    rpn_nms_threshold: float = 0.7
    pool_size: int = 7
    features: Sequence[int] = (16, 32, 64)
    hidden: int = 128
    roi_strides: Sequence[int] = (4,)

    def __post_init__(self):
        _checks.positive_int(self.num_classes, "num_classes", "FasterRCNN")
        _checks.positive_int(self.post_nms_top_n, "post_nms_top_n", "FasterRCNN")
        _checks.positive_int(self.pre_nms_top_n, "pre_nms_top_n", "FasterRCNN")
        _check_roi_strides(self.roi_strides, len(self.features), "FasterRCNN")
        super().__post_init__()

    @nn.compact
    def __call__(
        self, images: jax.Array, gt_boxes: Any = None, gt_valid: Any = None, train: bool = False
    ) -> dict:
        del train  # no dropout or BatchNorm: taken so the zoo's model.apply(..., train=...) fits
        images = _check(images, gt_boxes, gt_valid, "FasterRCNN")
        n, h, w, _ = images.shape
        maps = Backbone(self.features, name="backbone")(images, levels=True)
        feats = maps[max(maps)]
        fh, fw = feats.shape[1:3]
        a = len(self.anchor_sizes) * len(self.aspect_ratios)
        anchors = jnp.asarray(
            F.anchors_for_feature_maps((h, w), [(fh, fw)], [self.anchor_sizes], [self.aspect_ratios])
        )
        t = F.relu(jnn.Conv(feats.shape[-1], 3, padding="SAME", name="rpn_conv")(feats))
        # (N, fh, fw, A) -> (N, fh * fw * A): the anchors' order (cell-major, then anchor)
        objectness = jnn.Conv(a, 1, name="rpn_cls_logits")(t).reshape(n, -1)
        rpn_deltas = jnn.Conv(a * 4, 1, name="rpn_bbox_pred")(t).reshape(n, -1, 4)
        proposals, valid = jax.vmap(
            lambda o, d: rpn_proposals(
                anchors,
                o,
                d,
                (h, w),
                pre_nms_top_n=self.pre_nms_top_n,
                post_nms_top_n=self.post_nms_top_n,
                nms_threshold=self.rpn_nms_threshold,
            )
        )(objectness, rpn_deltas)
        proposals, valid = _with_ground_truth(n, proposals, valid, gt_boxes, gt_valid)
        pool = lambda f, b, scale: F.roi_align(f, b, self.pool_size, scale, 2)  # noqa: E731
        pooled = _pool_levels(pool, maps, self.roi_strides, proposals, h)
        logits, deltas = BoxHead(self.num_classes, self.hidden, name="box_head")(pooled)
        outputs = {
            "proposals": proposals,
            "proposal_valid": valid,
            "anchors": anchors,
            "objectness": objectness,
            "rpn_deltas": rpn_deltas,
        }
        return _head(outputs, logits, deltas, n)


# --------------------------------------------------------------------------- inference


def detect(
    outputs: dict,
    image_size: tuple[int, int],
    *,
    score_threshold: float = 0.05,
    nms_threshold: float = 0.5,
    max_detections: int = 20,
    pre_nms_top_k: int = 200,
) -> dict[str, jax.Array]:
    """Per-image detections from raw outputs (torchvision ``RoIHeads.postprocess_detections``).

    Class probabilities by softmax; each proposal's class-specific box decoded (weights
    ``(10, 10, 5, 5)``) and clipped; candidates with score ``> score_threshold`` and sides
    ``>= 1e-2``; the ``pre_nms_top_k`` best candidates (a static bound the dynamic version
    does not need) go through per-class NMS; the ``max_detections`` best are returned.

    Returns:
      A dict with ``"boxes"`` ``(N, M, 4)``, ``"scores"`` ``(N, M)``, ``"classes"`` ``(N, M)``
      int32 (dataset classes) and ``"valid"`` ``(N, M)`` bool, with ``M = max_detections``;
      invalid rows are zeros.
    """
    probs = jax.nn.softmax(outputs["class_logits"], axis=-1)[..., 1:]  # (N, P, C)
    n, p, c = probs.shape

    def one(probs, deltas, proposals, proposal_valid):
        safe = jnp.where(
            proposal_valid[:, None], proposals, jnp.asarray([0.0, 0.0, 1.0, 1.0], proposals.dtype)
        )
        boxes = F.decode_boxes(deltas[:, 1:].reshape(p, c * 4), safe, BOX_WEIGHTS).reshape(p * c, 4)
        boxes = F.clip_boxes_to_image(boxes, image_size)
        scores = probs.reshape(-1)
        classes = jnp.tile(jnp.arange(c, dtype=jnp.int32), p)
        ok = (
            jnp.repeat(proposal_valid, c)
            & (scores > score_threshold)
            & ((boxes[:, 2] - boxes[:, 0]) >= 1e-2)
            & ((boxes[:, 3] - boxes[:, 1]) >= 1e-2)
        )
        k = min(pre_nms_top_k, p * c)
        top_scores, top = jax.lax.top_k(jnp.where(ok, scores, -1.0), k)
        keep, valid = F.batched_nms(boxes[top], top_scores, classes[top], nms_threshold, max_detections)
        index = top[jnp.clip(keep, 0)]
        valid = valid & ok[index]
        return {
            "boxes": jnp.where(valid[:, None], boxes[index], 0.0),
            "scores": jnp.where(valid, scores[index], 0.0),
            "classes": jnp.where(valid, classes[index], 0),
            "valid": valid,
        }

    return jax.vmap(one)(probs, outputs["box_deltas"], outputs["proposals"], outputs["proposal_valid"])


# --------------------------------------------------------------------------- training


def smooth_l1(x: jax.Array, beta: float = SMOOTH_L1_BETA) -> jax.Array:
    """Elementwise Huber-like loss: ``0.5 x^2 / beta`` where ``|x| < beta``, else ``|x| - beta/2``."""
    ax = jnp.abs(x)
    return jnp.where(ax < beta, 0.5 * ax**2 / beta, ax - 0.5 * beta)


def match_boxes(
    boxes: jax.Array,
    box_valid: jax.Array,
    gt_boxes: jax.Array,
    gt_valid: jax.Array,
    fg_iou: float,
    bg_iou: float,
    allow_low_quality_matches: bool = False,
) -> tuple[jax.Array, jax.Array]:
    """torchvision's ``Matcher`` for one image, static shapes.

    Args:
      boxes: ``(P, 4)`` anchors or proposals, ``box_valid: (P,)``.
      gt_boxes: ``(G, 4)``, ``gt_valid: (G,)``.

    Returns:
      ``(matched (P,) int32, label (P,) int32)``: the index of each box's best ground truth
      and ``1`` (IoU >= fg_iou), ``0`` (IoU < bg_iou, or no ground truth) or ``-1``
      (between, or an invalid box: never sampled). With ``allow_low_quality_matches`` each
      ground truth's best boxes (ties included) are positives too.
    """
    inter_union = F.box_iou(gt_boxes, boxes) if gt_boxes.shape[0] else jnp.zeros((0, boxes.shape[0]))
    iou = jnp.where(gt_valid[:, None] & box_valid[None, :], jnp.nan_to_num(inter_union, nan=0.0), -1.0)
    if iou.shape[0] == 0:
        best = jnp.full((boxes.shape[0],), -1.0)
        matched = jnp.zeros((boxes.shape[0],), jnp.int32)
    else:
        best, matched = iou.max(axis=0), iou.argmax(axis=0).astype(jnp.int32)
    label = jnp.where(best >= fg_iou, 1, jnp.where(best < bg_iou, 0, -1))
    if allow_low_quality_matches and iou.shape[0]:
        highest = iou.max(axis=1, keepdims=True)
        is_best = ((iou == highest) & gt_valid[:, None] & (highest > 0)).any(axis=0)
        label = jnp.where(is_best, 1, label)
    return matched, jnp.where(box_valid, label, -1).astype(jnp.int32)


def sample_balanced(
    key: jax.Array, label: jax.Array, num_samples: int, positive_fraction: float
) -> tuple[jax.Array, jax.Array]:
    """torchvision's ``BalancedPositiveNegativeSampler`` for one image, as masks.

    ``min(int(num_samples * positive_fraction), #positives)`` positives and
    ``min(num_samples - that, #negatives)`` negatives, drawn uniformly without replacement.

    Returns:
      ``(positive (P,) bool, negative (P,) bool)``.
    """
    priority = jax.random.uniform(key, label.shape)

    def rank_within(members):
        order = jnp.argsort(jnp.where(members, priority, 2.0))
        return jnp.zeros(label.shape, jnp.int32).at[order].set(jnp.arange(label.shape[0], dtype=jnp.int32))

    pos, neg = label == 1, label == 0
    num_pos = jnp.minimum(int(num_samples * positive_fraction), pos.sum())
    num_neg = jnp.minimum(num_samples - num_pos, neg.sum())
    return pos & (rank_within(pos) < num_pos), neg & (rank_within(neg) < num_neg)


def _safe(boxes: jax.Array, use: jax.Array) -> jax.Array:
    """Boxes where ``use``, a unit box elsewhere: keeps log / division finite where masked out."""
    return jnp.where(use[..., None], boxes, jnp.asarray([0.0, 0.0, 1.0, 1.0], boxes.dtype))


def roi_head_loss(
    outputs: dict,
    gt_boxes: jax.Array,
    gt_classes: jax.Array,
    gt_valid: jax.Array,
    key: jax.Array,
    *,
    fg_iou: float = 0.5,
    bg_iou: float = 0.5,
    batch_size_per_image: int = 512,
    positive_fraction: float = 0.25,
) -> dict[str, jax.Array]:
    """Fast R-CNN loss (torchvision ``fastrcnn_loss`` with ``RoIHeads`` defaults).

    Proposals are matched (IoU >= 0.5 foreground, < 0.5 background), and
    ``batch_size_per_image`` of them sampled with 25 % positives; the loss is the softmax
    cross-entropy over the sampled proposals (mean) plus smooth L1 (beta 1/9) between the
    true class's deltas and the targets encoded with weights ``(10, 10, 5, 5)``, summed over
    sampled positives and divided by the number sampled. Static shapes: the head runs on all
    proposals and the loss weights them by the sample masks.

    Args:
      outputs: a detector's outputs (run with ``gt_boxes`` so the ground truth is among
        the proposals). gt_boxes ``(N, G, 4)``, gt_classes ``(N, G)`` dataset classes,
        gt_valid ``(N, G)`` bool. key: PRNG key for the sampling.

    Returns:
      ``{"loss", "classification", "box_regression"}`` scalars.
    """
    proposals, valid = outputs["proposals"], outputs["proposal_valid"]
    n = proposals.shape[0]

    def one(key, proposals, valid, gt_boxes, gt_classes, gt_valid):
        matched, label = match_boxes(proposals, valid, gt_boxes, gt_valid, fg_iou, bg_iou)
        pos, neg = sample_balanced(key, label, batch_size_per_image, positive_fraction)
        target_class = jnp.where(pos, gt_classes[matched] + 1, 0)
        targets = F.encode_boxes(_safe(gt_boxes[matched], pos), _safe(proposals, pos), BOX_WEIGHTS)
        return pos, pos | neg, target_class, targets

    pos, sampled, target_class, targets = jax.vmap(one)(
        jax.random.split(key, n), proposals, valid, gt_boxes, gt_classes, jnp.asarray(gt_valid, bool)
    )
    count = jnp.maximum(sampled.sum(), 1).astype(jnp.float32)
    log_probs = jax.nn.log_softmax(outputs["class_logits"], axis=-1)
    nll = -jnp.take_along_axis(log_probs, target_class[..., None], axis=-1)[..., 0]
    classification = jnp.sum(jnp.where(sampled, nll, 0.0)) / count
    deltas = jnp.take_along_axis(outputs["box_deltas"], target_class[..., None, None], axis=2)[:, :, 0]
    box = jnp.sum(jnp.where(pos[..., None], smooth_l1(deltas - targets), 0.0)) / count
    return {"loss": classification + box, "classification": classification, "box_regression": box}


def rpn_loss(
    outputs: dict,
    gt_boxes: jax.Array,
    gt_valid: jax.Array,
    key: jax.Array,
    *,
    fg_iou: float = 0.7,
    bg_iou: float = 0.3,
    batch_size_per_image: int = 256,
    positive_fraction: float = 0.5,
) -> dict[str, jax.Array]:
    """Region proposal network loss (torchvision ``RegionProposalNetwork`` defaults).

    Anchors with IoU >= 0.7 (or the best for a ground truth) are positives, < 0.3 negatives;
    256 per image sampled, half positive at most; binary cross-entropy on the objectness
    (mean over sampled) plus smooth L1 (beta 1/9) on the deltas (weights 1) of sampled
    positives, summed and divided by the number sampled.

    Returns:
      ``{"loss", "objectness", "rpn_box_regression"}`` scalars.
    """
    anchors = outputs["anchors"]
    n = outputs["objectness"].shape[0]
    anchor_valid = jnp.ones(anchors.shape[:1], bool)

    def one(key, gt_boxes, gt_valid):
        matched, label = match_boxes(anchors, anchor_valid, gt_boxes, gt_valid, fg_iou, bg_iou, True)
        pos, neg = sample_balanced(key, label, batch_size_per_image, positive_fraction)
        targets = F.encode_boxes(_safe(gt_boxes[matched], pos), _safe(anchors, pos))
        return pos, pos | neg, targets

    pos, sampled, targets = jax.vmap(one)(jax.random.split(key, n), gt_boxes, jnp.asarray(gt_valid, bool))
    count = jnp.maximum(sampled.sum(), 1).astype(jnp.float32)
    logits = outputs["objectness"]
    bce = jnp.maximum(logits, 0) - logits * pos.astype(logits.dtype) + jnp.log1p(jnp.exp(-jnp.abs(logits)))
    objectness = jnp.sum(jnp.where(sampled, bce, 0.0)) / count
    box = jnp.sum(jnp.where(pos[..., None], smooth_l1(outputs["rpn_deltas"] - targets), 0.0)) / count
    return {"loss": objectness + box, "objectness": objectness, "rpn_box_regression": box}


def detection_loss(
    outputs: dict, gt_boxes: jax.Array, gt_classes: jax.Array, gt_valid: jax.Array, key: jax.Array
) -> dict[str, jax.Array]:
    """The training loss of any of the three detectors: the RoI head's, plus the RPN's for
    Faster R-CNN (outputs with ``"objectness"``); ``"loss"`` is the sum."""
    head_key, rpn_key = jax.random.split(key)
    losses = roi_head_loss(outputs, gt_boxes, gt_classes, gt_valid, head_key)
    if "objectness" in outputs:
        rpn = rpn_loss(outputs, gt_boxes, gt_valid, rpn_key)
        losses = {
            **losses,
            **{k: v for k, v in rpn.items() if k != "loss"},
            "loss": losses["loss"] + rpn["loss"],
        }
    return losses
