"""Where a detection run loses its mAP: per-class figures and the class-agnostic ones.

    python -m experiments.detection_breakdown experiments/results/mnist_det_faster_rcnn [--data-dir DIR]

Reads the run's ``config.json`` and ``predictions.json`` (COCO results on the evaluation
canvases, ``image_id`` = canvas index), rebuilds the evaluation canvases from the config's
dataset (they are deterministic) and prints, as JSON: the COCO summary, mAP@0.5 and
recall@0.5 per class, the same summary with every class merged into one (what the boxes alone
score, so the difference is the classification), and the true boxes' width percentiles.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from jaxcnn.data import load
from jaxcnn.detection_metrics import coco_evaluate, read_coco_results


def breakdown(run: Path, data_dir: str | None = None) -> dict:
    config = json.loads((run / "config.json").read_text())
    dataset = config["dataset"]
    source = load(dataset["name"], dataset["eval_split"], data_dir=data_dir,
                  derived_options=dataset.get("derived_options") or None)
    n = len(source)
    truth = [source[i] for i in range(n)]
    gt_boxes = [np.asarray(t["boxes"])[np.asarray(t["box_valid"])] for t in truth]
    gt_classes = [np.asarray(t["classes"])[np.asarray(t["box_valid"])] for t in truth]
    boxes, scores, classes = ([[] for _ in range(n)] for _ in range(3))
    for r in read_coco_results(run / "predictions.json"):
        x, y, w, h = r["bbox"]
        boxes[r["image_id"]].append([x, y, x + w, y + h])
        scores[r["image_id"]].append(r["score"])
        classes[r["image_id"]].append(r["category_id"])
    boxes = [np.asarray(b, np.float64).reshape(-1, 4) for b in boxes]
    scores = [np.asarray(s, np.float64) for s in scores]
    classes = [np.asarray(c, np.int64) for c in classes]

    full = coco_evaluate(boxes, scores, classes, gt_boxes, gt_classes)
    agnostic = coco_evaluate(boxes, scores, [np.zeros_like(c) for c in classes], gt_boxes,
                             [np.zeros_like(c) for c in gt_classes])
    # precision (T, R, K, A, M): IoU 0.5, all recall points, each class, all areas, 100 detections.
    ap50 = full.precision[0, :, :, 0, -1].mean(axis=0)
    widths = np.concatenate([b[:, 2] - b[:, 0] for b in gt_boxes])
    return {
        "images": n,
        "summary": {k: round(v, 4) for k, v in full.stats.items() if v >= 0},
        "per_class": {str(c): {"AP50": round(float(a), 4), "recall50": round(float(r), 4)}
                      for c, a, r in zip(full.category_ids, ap50, full.recall[0, :, 0, -1])},
        "class_agnostic": {k: round(v, 4) for k, v in agnostic.stats.items() if v >= 0},
        "true_box_width_percentiles": dict(zip(("0", "10", "50", "90", "100"),
                                               np.percentile(widths, [0, 10, 50, 90, 100]).round(1).tolist())),
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.detection_breakdown",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("run", type=Path, help="a detection workdir or experiments/results/<name>")
    parser.add_argument("--data-dir", default=None, help="where the dataset files are ($JAXCNN_DATA_DIR otherwise)")
    args = parser.parse_args(argv)
    print(json.dumps(breakdown(args.run, args.data_dir), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
