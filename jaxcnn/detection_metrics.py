"""COCO detection metrics (mAP@[.5:.95], mAP@0.5, mAP@0.75, AR@1/10/100, per object size), host side.

The numbers are those of ``pycocotools.cocoeval.COCOeval`` with ``iouType="bbox"`` (tested
against it to 1e-6): per category, detections are matched greedily by decreasing score to the
unmatched ground truth of highest IoU >= t, for the ten thresholds ``t = .50, .55, ..., .95``;
precision is made monotone and read at 101 recall points ``0, .01, ..., 1``; a ground truth
outside an area range ("small" < 32^2 <= "medium" < 96^2 <= "large", in pixels^2) is ignored
for that range, and so is an unmatched detection outside it; ``maxDets`` keeps each image's
highest-scoring detections per category. Categories without ground truth are left out of the
means. Crowd regions are not modelled (every ground truth is ``iscrowd=0``).

Boxes are ``(x1, y1, x2, y2)`` in pixels, as everywhere in jaxcnn; the COCO JSON format
(``bbox = [x, y, width, height]``) is only used by the reader and writer helpers.

Example::

    result = coco_evaluate(pred_boxes, pred_scores, pred_classes, gt_boxes, gt_classes,
                           pred_valid=valid, gt_valid=gt_mask)
    result.stats["AP"], result.stats["AP50"], result.stats["AR100"]
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

#: The ten IoU thresholds of COCO's mAP, 0.50, 0.55, ..., 0.95.
IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
#: The 101 recall points of COCO's interpolated precision, 0.00, 0.01, ..., 1.00.
RECALL_THRESHOLDS = np.linspace(0.0, 1.0, 101)
AREA_RANGES = {
    "all": (0.0, 1e5**2),
    "small": (0.0, 32.0**2),
    "medium": (32.0**2, 96.0**2),
    "large": (96.0**2, 1e5**2),
}
MAX_DETECTIONS = (1, 10, 100)
# pycocotools' `stats` order: (name, average precision?, IoU threshold, area range, maxDets index)
_SUMMARY = (
    ("AP", True, None, "all", 2),
    ("AP50", True, 0.5, "all", 2),
    ("AP75", True, 0.75, "all", 2),
    ("AP_small", True, None, "small", 2),
    ("AP_medium", True, None, "medium", 2),
    ("AP_large", True, None, "large", 2),
    ("AR1", False, None, "all", 0),
    ("AR10", False, None, "all", 1),
    ("AR100", False, None, "all", 2),
    ("AR_small", False, None, "small", 2),
    ("AR_medium", False, None, "medium", 2),
    ("AR_large", False, None, "large", 2),
)


@dataclasses.dataclass(frozen=True)
class CocoEvaluation:
    """Accumulated COCO evaluation.

    Attributes:
      precision: ``(T=10, R=101, K, A=4, M=3)`` interpolated precision per IoU threshold,
        recall point, category, area range (``AREA_RANGES`` order) and maxDets; -1 where the
        category has no ground truth (pycocotools' ``eval["precision"]``).
      recall: ``(T, K, A, M)`` final recall, -1 likewise.
      category_ids: the ``K`` categories, sorted.
      stats: the twelve summary numbers by name (``"AP"`` is mAP@[.5:.95], ``"AP50"``,
        ``"AP75"``, ``"AP_small"`` ..., ``"AR1"``, ``"AR10"``, ``"AR100"``, ``"AR_small"`` ...),
        in pycocotools' ``stats`` order; -1 where nothing is defined.
    """

    precision: np.ndarray
    recall: np.ndarray
    category_ids: tuple[int, ...]
    max_detections: tuple[int, int, int]
    stats: dict[str, float]


# --------------------------------------------------------------------------- input


def _per_image(value: Any, valid: Any, name: str, trailing: tuple[int, ...]) -> list[np.ndarray]:
    """A padded ``(B, N, *trailing)`` array (with a ``(B, N)`` mask) or a list -> list of arrays."""
    if isinstance(value, np.ndarray) or hasattr(value, "__array__") and not isinstance(value, (list, tuple)):
        value = np.asarray(value)
        if value.ndim != 2 + len(trailing) or value.shape[2:] != trailing:
            raise ValueError(
                f"{name} must have shape (B, N{''.join(', ' + str(t) for t in trailing)}), got {value.shape}"
            )
        items = list(value)
    elif isinstance(value, (list, tuple)):
        items = [np.asarray(v) for v in value]
    else:
        raise TypeError(
            f"{name} must be a (B, N, ...) array or a list of per-image arrays, got {type(value).__name__}"
        )
    if valid is not None:
        masks = [
            np.asarray(v, bool) for v in (valid if isinstance(valid, (list, tuple)) else np.asarray(valid))
        ]
        if len(masks) != len(items):
            raise ValueError(f"{name} has {len(items)} images but its mask has {len(masks)}")
        for i, (item, mask) in enumerate(zip(items, masks)):
            if mask.shape != item.shape[:1]:
                raise ValueError(
                    f"{name}[{i}] has {item.shape[0]} entries but its mask has shape {mask.shape}"
                )
        items = [item[mask] for item, mask in zip(items, masks)]
    for i, item in enumerate(items):
        if item.shape[1:] != trailing:
            raise ValueError(
                f"{name}[{i}] must have shape (n{''.join(', ' + str(t) for t in trailing)}), got {item.shape}"
            )
    return items


def _check_boxes(boxes: list[np.ndarray], name: str) -> list[np.ndarray]:
    out = []
    for i, b in enumerate(boxes):
        b = b.astype(np.float64)
        if not np.all(np.isfinite(b)):
            raise ValueError(f"{name}[{i}] has non-finite values")
        if np.any(b[:, 2] < b[:, 0]) or np.any(b[:, 3] < b[:, 1]):
            raise ValueError(f"{name}[{i}] has a box with x2 < x1 or y2 < y1; boxes are (x1, y1, x2, y2)")
        out.append(b)
    return out


# --------------------------------------------------------------------------- matching


def _iou_xywh(d: np.ndarray, g: np.ndarray) -> np.ndarray:
    """IoU of ``(D, 4)`` and ``(G, 4)`` ``[x, y, w, h]`` boxes, as pycocotools' ``maskUtils.iou``."""
    w = np.minimum(d[:, None, 0] + d[:, None, 2], g[None, :, 0] + g[None, :, 2]) - np.maximum(
        d[:, None, 0], g[None, :, 0]
    )
    h = np.minimum(d[:, None, 1] + d[:, None, 3], g[None, :, 1] + g[None, :, 3]) - np.maximum(
        d[:, None, 1], g[None, :, 1]
    )
    inter = np.where((w > 0) & (h > 0), w * h, 0.0)
    union = (d[:, 2] * d[:, 3])[:, None] + (g[:, 2] * g[:, 3])[None, :] - inter
    return inter / union


def _match(ious: np.ndarray, gt_ignore: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Greedy matching per threshold: ``(matched (T, D) bool, matched_to_ignored (T, D) bool)``.

    ``ious: (D, G)`` with detections by decreasing score and ground truths ignored-last.
    """
    n_det, n_gt = ious.shape
    matched = np.zeros((len(IOU_THRESHOLDS), n_det), bool)
    on_ignored = np.zeros_like(matched)
    for t, threshold in enumerate(IOU_THRESHOLDS):
        taken = np.zeros(n_gt, bool)
        for d in range(n_det):
            best, m = min(threshold, 1 - 1e-10), -1
            for g in range(n_gt):
                if taken[g]:
                    continue
                # a match to a regular ground truth is never traded for an ignored one
                if m > -1 and not gt_ignore[m] and gt_ignore[g]:
                    break
                if ious[d, g] < best:
                    continue
                best, m = ious[d, g], g
            if m > -1:
                matched[t, d], on_ignored[t, d], taken[m] = True, gt_ignore[m], True
    return matched, on_ignored


def coco_evaluate(
    pred_boxes: Any,
    pred_scores: Any,
    pred_classes: Any,
    gt_boxes: Any,
    gt_classes: Any,
    *,
    pred_valid: Any = None,
    gt_valid: Any = None,
    max_detections: Sequence[int] = MAX_DETECTIONS,
) -> CocoEvaluation:
    """COCO bbox evaluation of a set of images (pycocotools ``evaluate(); accumulate(); summarize()``).

    Args:
      pred_boxes: ``(B, N, 4)`` xyxy or a list of ``B`` arrays ``(n_i, 4)``.
      pred_scores: ``(B, N)`` or a list of ``(n_i,)``.
      pred_classes: ``(B, N)`` integer category ids or a list of ``(n_i,)``.
      gt_boxes: ``(B, G, 4)`` xyxy or a list of ``(g_i, 4)``.
      gt_classes: ``(B, G)`` or a list of ``(g_i,)``.
      pred_valid, gt_valid: optional ``(B, N)`` / ``(B, G)`` masks (or lists) of the real
        entries of padded arrays, e.g. the ``valid`` output of a detector or a data mask.
      max_detections: the three maxDets of the recall summaries (COCO: 1, 10, 100); the
        precision summaries use the last.

    Returns:
      A ``CocoEvaluation`` (``.stats`` holds the named summary numbers).
    """
    boxes_d = _check_boxes(_per_image(pred_boxes, pred_valid, "pred_boxes", (4,)), "pred_boxes")
    scores_d = _per_image(pred_scores, pred_valid, "pred_scores", ())
    classes_d = _per_image(pred_classes, pred_valid, "pred_classes", ())
    boxes_g = _check_boxes(_per_image(gt_boxes, gt_valid, "gt_boxes", (4,)), "gt_boxes")
    classes_g = _per_image(gt_classes, gt_valid, "gt_classes", ())
    n_images = len(boxes_g)
    for name, items in (("pred_boxes", boxes_d), ("pred_scores", scores_d), ("pred_classes", classes_d)):
        if len(items) != n_images:
            raise ValueError(f"{name} has {len(items)} images but gt_boxes has {n_images}")
    for i in range(n_images):
        if not (len(boxes_d[i]) == len(scores_d[i]) == len(classes_d[i])):
            raise ValueError(
                f"image {i}: {len(boxes_d[i])} pred_boxes, {len(scores_d[i])} pred_scores and "
                f"{len(classes_d[i])} pred_classes differ"
            )
        if len(boxes_g[i]) != len(classes_g[i]):
            raise ValueError(f"image {i}: {len(boxes_g[i])} gt_boxes but {len(classes_g[i])} gt_classes")
    max_dets = tuple(sorted(int(m) for m in max_detections))
    if len(max_dets) != 3 or max_dets[0] < 1:
        raise ValueError(f"max_detections must be three positive ints, got {max_detections!r}")

    categories = sorted({int(c) for cs in classes_g + classes_d for c in cs})
    areas = list(AREA_RANGES.values())
    n_t, n_r, n_k, n_a, n_m = len(IOU_THRESHOLDS), len(RECALL_THRESHOLDS), len(categories), len(areas), 3
    precision = -np.ones((n_t, n_r, n_k, n_a, n_m))
    recall = -np.ones((n_t, n_k, n_a, n_m))
    to_xywh = lambda b: np.concatenate([b[:, :2], b[:, 2:] - b[:, :2]], axis=1)  # noqa: E731

    for k, category in enumerate(categories):
        # Per image and area range: (scores, matched, ignored) of its detections and the
        # ground-truth ignore flags; None where the image has neither (pycocotools skips it).
        per_area: list[list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]] = [[] for _ in areas]
        for i in range(n_images):
            g = to_xywh(boxes_g[i][classes_g[i] == category])
            sel = classes_d[i] == category
            d, s = to_xywh(boxes_d[i][sel]), scores_d[i][sel].astype(np.float64)
            if len(g) == 0 and len(d) == 0:
                continue
            order = np.argsort(-s, kind="mergesort")[: max_dets[-1]]
            d, s = d[order], s[order]
            ious = _iou_xywh(d, g) if len(d) and len(g) else np.zeros((len(d), len(g)))
            g_area, d_area = g[:, 2] * g[:, 3], d[:, 2] * d[:, 3]
            for a, (lo, hi) in enumerate(areas):
                g_ignore = (g_area < lo) | (g_area > hi)
                g_order = np.argsort(g_ignore, kind="mergesort")
                matched, on_ignored = _match(ious[:, g_order], g_ignore[g_order])
                outside = (d_area < lo) | (d_area > hi)
                ignored = on_ignored | (~matched & outside[None, :])
                per_area[a].append((s, matched, ignored, g_ignore))
        for a in range(n_a):
            if not per_area[a]:
                continue
            n_pos = sum(int(np.count_nonzero(~e[3])) for e in per_area[a])
            if n_pos == 0:
                continue
            for m, max_det in enumerate(max_dets):
                s = np.concatenate([e[0][:max_det] for e in per_area[a]])
                order = np.argsort(-s, kind="mergesort")
                matched = np.concatenate([e[1][:, :max_det] for e in per_area[a]], axis=1)[:, order]
                ignored = np.concatenate([e[2][:, :max_det] for e in per_area[a]], axis=1)[:, order]
                tp = np.cumsum(matched & ~ignored, axis=1).astype(float)
                fp = np.cumsum(~matched & ~ignored, axis=1).astype(float)
                for t in range(n_t):
                    rc = tp[t] / n_pos
                    pr = tp[t] / (fp[t] + tp[t] + np.spacing(1))
                    recall[t, k, a, m] = rc[-1] if len(rc) else 0.0
                    # the precision envelope: best precision at any recall >= this one
                    pr = np.maximum.accumulate(pr[::-1])[::-1]
                    at = np.searchsorted(rc, RECALL_THRESHOLDS, side="left")
                    q = np.zeros(n_r)
                    reached = at < len(pr)
                    q[reached] = pr[at[reached]]
                    precision[t, :, k, a, m] = q
    return CocoEvaluation(
        precision=precision,
        recall=recall,
        category_ids=tuple(categories),
        max_detections=max_dets,
        stats=_summarize(precision, recall),
    )


def _summarize(precision: np.ndarray, recall: np.ndarray) -> dict[str, float]:
    area_index = {name: a for a, name in enumerate(AREA_RANGES)}
    stats = {}
    for name, is_ap, iou, area, m in _SUMMARY:
        values = precision[..., area_index[area], m] if is_ap else recall[..., area_index[area], m]
        if iou is not None:
            values = values[np.flatnonzero(np.isclose(IOU_THRESHOLDS, iou))[0]]
        defined = values[values > -1]
        stats[name] = float(np.mean(defined)) if defined.size else -1.0
    return stats


# --------------------------------------------------------------------------- COCO JSON


def coco_results(
    pred_boxes: Any, pred_scores: Any, pred_classes: Any, *, pred_valid: Any = None, image_ids: Any = None
) -> list[dict[str, Any]]:
    """Predictions in the COCO results format: ``[{"image_id", "category_id", "bbox", "score"}]``.

    ``bbox`` is ``[x, y, width, height]``; image ``i`` gets ``image_ids[i]`` (default ``i``).
    """
    boxes = _check_boxes(_per_image(pred_boxes, pred_valid, "pred_boxes", (4,)), "pred_boxes")
    scores = _per_image(pred_scores, pred_valid, "pred_scores", ())
    classes = _per_image(pred_classes, pred_valid, "pred_classes", ())
    ids = list(range(len(boxes))) if image_ids is None else [int(i) for i in image_ids]
    if len(ids) != len(boxes):
        raise ValueError(f"image_ids has {len(ids)} entries for {len(boxes)} images")
    out = []
    for image_id, b, s, c in zip(ids, boxes, scores, classes):
        for box, score, cls in zip(b, s, c):
            x1, y1, x2, y2 = (float(v) for v in box)
            out.append(
                {
                    "image_id": image_id,
                    "category_id": int(cls),
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "score": float(score),
                }
            )
    return out


def coco_ground_truth(
    gt_boxes: Any,
    gt_classes: Any,
    *,
    gt_valid: Any = None,
    image_ids: Any = None,
    image_size: tuple[int, int] | None = None,
    category_ids: Sequence[int] | None = None,
) -> dict[str, Any]:
    """Ground truth as a COCO dataset dict (``images``, ``annotations``, ``categories``).

    Annotation ids start at 1 (pycocotools reads id 0 as "unmatched"); ``area`` is the box
    area; ``iscrowd`` is 0. ``image_size = (height, width)`` is recorded when given.
    """
    boxes = _check_boxes(_per_image(gt_boxes, gt_valid, "gt_boxes", (4,)), "gt_boxes")
    classes = _per_image(gt_classes, gt_valid, "gt_classes", ())
    ids = list(range(len(boxes))) if image_ids is None else [int(i) for i in image_ids]
    if len(ids) != len(boxes):
        raise ValueError(f"image_ids has {len(ids)} entries for {len(boxes)} images")
    images, annotations = [], []
    for image_id, b, c in zip(ids, boxes, classes):
        image = {"id": image_id}
        if image_size is not None:
            image["height"], image["width"] = int(image_size[0]), int(image_size[1])
        images.append(image)
        for box, cls in zip(b, c):
            x1, y1, x2, y2 = (float(v) for v in box)
            w, h = x2 - x1, y2 - y1
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": int(cls),
                    "bbox": [x1, y1, w, h],
                    "area": w * h,
                    "iscrowd": 0,
                }
            )
    cats = sorted({a["category_id"] for a in annotations} | set(category_ids or ()))
    return {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": c, "name": str(c)} for c in cats],
    }


def write_coco_results(path: str | os.PathLike, results: list[dict[str, Any]]) -> None:
    """Writes a COCO results list (``coco_results``) as JSON."""
    with open(path, "w") as f:
        json.dump(results, f)


def read_coco_results(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Reads a COCO results JSON file, checking each entry's fields."""
    with open(path) as f:
        results = json.load(f)
    if not isinstance(results, list):
        raise ValueError(f"{path}: a COCO results file holds a list, got {type(results).__name__}")
    for i, r in enumerate(results):
        missing = {"image_id", "category_id", "bbox", "score"} - set(r)
        if missing or len(r.get("bbox", ())) != 4:
            raise ValueError(f"{path}: entry {i} lacks {sorted(missing)} or has no 4-number bbox: {r}")
    return results


def evaluate_coco_json(results: list[dict[str, Any]], ground_truth: dict[str, Any]) -> CocoEvaluation:
    """``coco_evaluate`` from a COCO results list and a COCO ground-truth dict (all its images)."""
    image_ids = [img["id"] for img in sorted(ground_truth["images"], key=lambda img: img["id"])]
    index = {image_id: i for i, image_id in enumerate(image_ids)}
    pred = [([], [], []) for _ in image_ids]
    gt = [([], []) for _ in image_ids]
    for r in results:
        if r["image_id"] not in index:
            raise ValueError(f"results: image_id {r['image_id']} is not an image of the ground truth")
        x, y, w, h = r["bbox"]
        entry = pred[index[r["image_id"]]]
        entry[0].append([x, y, x + w, y + h]), entry[1].append(r["score"]), entry[2].append(r["category_id"])
    for a in ground_truth["annotations"]:
        x, y, w, h = a["bbox"]
        (
            gt[index[a["image_id"]]][0].append([x, y, x + w, y + h]),
            gt[index[a["image_id"]]][1].append(a["category_id"]),
        )
    as_boxes = lambda v: np.asarray(v, np.float64).reshape(-1, 4)  # noqa: E731
    return coco_evaluate(
        [as_boxes(p[0]) for p in pred],
        [np.asarray(p[1], np.float64) for p in pred],
        [np.asarray(p[2], np.int64) for p in pred],
        [as_boxes(g[0]) for g in gt],
        [np.asarray(g[1], np.int64) for g in gt],
    )
