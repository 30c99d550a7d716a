"""COCO metrics against pycocotools (the reference implementation) and hand-computed values."""

import contextlib
import io

import numpy as np
import pytest

from jaxcnn.detection_metrics import (
    coco_evaluate,
    coco_ground_truth,
    coco_results,
    evaluate_coco_json,
    read_coco_results,
    write_coco_results,
)

pycocotools = pytest.importorskip("pycocotools")
from pycocotools.coco import COCO  # noqa: E402
from pycocotools.cocoeval import COCOeval  # noqa: E402


def _pycocotools(ground_truth, results):
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = ground_truth
        gt.createIndex()
        evaluator = COCOeval(gt, gt.loadRes(results), "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator


@pytest.fixture(scope="module")
def random_case():
    """12 images, 3 classes, objects of all three COCO sizes, jittered hits, misses, duplicates,
    false positives, tied scores, an image without objects and one with > 100 detections."""
    rng = np.random.default_rng(0)
    gt_boxes, gt_classes, pred_boxes, pred_scores, pred_classes = [], [], [], [], []
    for i in range(12):
        n = 0 if i == 3 else int(rng.integers(1, 6))
        size = rng.choice([12.0, 50.0, 130.0], size=(n, 1)) * rng.uniform(0.7, 1.3, size=(n, 2))
        xy = rng.uniform(0, 60, size=(n, 2))
        g = np.concatenate([xy, xy + size], axis=1)
        gc = rng.integers(0, 3, size=n)
        keep = rng.random(n) < 0.8  # some objects are missed
        jitter = rng.normal(0, 0.08, size=(n, 4)) * np.concatenate([size, size], axis=1)
        p = np.sort((g + jitter)[keep].reshape(-1, 2, 2), axis=1).reshape(-1, 4)
        pc = np.where(rng.random(keep.sum()) < 0.9, gc[keep], (gc[keep] + 1) % 3)
        n_false = 120 if i == 7 else int(rng.integers(0, 8))
        fxy = rng.uniform(0, 150, size=(n_false, 2))
        f = np.concatenate([fxy, fxy + rng.uniform(5, 100, size=(n_false, 2))], axis=1)
        boxes = np.concatenate([p, f, p[:1]])  # the last one duplicates a hit
        classes = np.concatenate([pc, rng.integers(0, 3, size=n_false), pc[:1]])
        scores = np.round(rng.random(len(boxes)), 1)  # coarse: many ties
        gt_boxes.append(g), gt_classes.append(gc)
        pred_boxes.append(boxes), pred_scores.append(scores), pred_classes.append(classes)
    return pred_boxes, pred_scores, pred_classes, gt_boxes, gt_classes


def test_matches_pycocotools_on_random_predictions(random_case, tmp_path):
    pred_boxes, pred_scores, pred_classes, gt_boxes, gt_classes = random_case
    ours = coco_evaluate(pred_boxes, pred_scores, pred_classes, gt_boxes, gt_classes)
    ground_truth = coco_ground_truth(gt_boxes, gt_classes, category_ids=range(3))
    path = tmp_path / "predictions.json"
    write_coco_results(path, coco_results(pred_boxes, pred_scores, pred_classes))
    results = read_coco_results(path)
    reference = _pycocotools(ground_truth, results)
    np.testing.assert_allclose(list(ours.stats.values()), reference.stats, atol=1e-6)
    assert ours.category_ids == (0, 1, 2)
    np.testing.assert_allclose(ours.precision, reference.eval["precision"], atol=1e-6)
    np.testing.assert_allclose(ours.recall, reference.eval["recall"], atol=1e-6)
    # the same numbers from the JSON files alone
    again = evaluate_coco_json(results, ground_truth)
    np.testing.assert_allclose(list(again.stats.values()), reference.stats, atol=1e-6)
    assert {"AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large", "AR1", "AR10", "AR100"} <= set(
        ours.stats
    )


def test_padded_arrays_with_masks_equal_lists(random_case):
    pred_boxes, pred_scores, pred_classes, gt_boxes, gt_classes = (
        random_case[0][:4],
        *(v[:4] for v in random_case[1:]),
    )
    pad = lambda items, n, shape: np.stack(  # noqa: E731
        [np.concatenate([v, np.zeros((n - len(v),) + shape)]) for v in items]
    )
    mask = lambda items, n: np.stack([np.arange(n) < len(v) for v in items])  # noqa: E731
    padded = coco_evaluate(
        pad(pred_boxes, 20, (4,)),
        pad(pred_scores, 20, ()),
        pad(pred_classes, 20, ()).astype(int),
        pad(gt_boxes, 6, (4,)),
        pad(gt_classes, 6, ()).astype(int),
        pred_valid=mask(pred_boxes, 20),
        gt_valid=mask(gt_boxes, 6),
    )
    listed = coco_evaluate(pred_boxes, pred_scores, pred_classes, gt_boxes, gt_classes)
    assert padded.stats == listed.stats


def test_hand_computed_single_object():
    gt = [np.array([[0.0, 0.0, 10.0, 10.0]])]
    # IoU with the ground truth: 60 / 100 = 0.6, a hit at thresholds .50, .55, .60 only
    pred = [np.array([[0.0, 0.0, 10.0, 6.0]])]
    stats = coco_evaluate(pred, [np.array([0.9])], [np.array([1])], gt, [np.array([1])]).stats
    assert stats["AP50"] == pytest.approx(1.0) and stats["AP75"] == 0.0
    assert stats["AP"] == pytest.approx(0.3) and stats["AR100"] == pytest.approx(0.3)
    assert stats["AP_small"] == pytest.approx(0.3) and stats["AP_large"] == -1.0  # no large objects


def test_bad_input():
    box = [np.array([[0.0, 0.0, 1.0, 1.0]])]
    with pytest.raises(ValueError, match="x2 < x1"):
        coco_evaluate(
            [np.array([[2.0, 0.0, 1.0, 1.0]])], [np.ones(1)], [np.ones(1, int)], box, [np.ones(1, int)]
        )
    with pytest.raises(ValueError, match="pred_scores"):
        coco_evaluate(box, [np.ones(2)], [np.ones(1, int)], box, [np.ones(1, int)])
    with pytest.raises(ValueError, match="gt_boxes has 1"):
        coco_evaluate(box * 2, [np.ones(1)] * 2, [np.ones(1, int)] * 2, box, [np.ones(1, int)])
