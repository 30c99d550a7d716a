"""Faster R-CNN (region proposal network + RoI Align head) on MNIST detection canvases.

Command:  jaxcnn train --config experiments/configs/mnist_det_faster_rcnn.py --workdir runs/mnist_det_faster_rcnn
Expected: the target of the detection issue: mAP@0.5 >= 0.95 and mAP@[.5:.95] >= 0.70 (eval ``mAP50`` /
          ``mAP``) on 64x64 canvases of 1-3 MNIST test digits scaled 0.5x-1.5x, trained in <= 60 minutes.
          Measured (experiments/RESULTS.md): mAP 0.7443, mAP@0.5 0.9557 after 5 epochs over 60,000
          canvases in 36 minutes (run in runs/mnist_det_faster_rcnn_v4): all three targets met. Per
          class, mAP@0.5 is 0.947-0.984 except the 1s (0.892: the thinnest boxes; a tenth of all boxes
          are under 6 px wide, where one pixel moves the IoU across 0.5); without the class, mAP@0.5
          is 0.970 (python -m experiments.detection_breakdown; the figures are in
          experiments/results/mnist_det_faster_rcnn/breakdown.json).
Hardware: the reference 2-core CPU, 36 minutes (about 150 canvases/s), inference about 290 canvases/s.
Smoke:    experiments/configs/mnist_det_faster_rcnn.py:smoke
Outputs:  metrics.jsonl (mAP, mAP50, mAP75, AR100), predictions.json (COCO results on the eval
          canvases), plots/detections.png.
"""

from jaxcnn.launch import shrink_to_smoke
from jaxcnn.train import default_config

# Digits 14-42 px on a 64 px canvas: objects of several sizes, for windows and anchors of 12-48 px.
CANVASES = {"canvas_size": 64, "min_digits": 1, "max_digits": 3, "digit_scale": (0.5, 1.5)}


def detection_config(model: str):
    """The settings the three detection configs share (the other two load them from here); ``model``:
    the zoo name."""
    config = default_config()
    config.task = "detection"
    config.dataset.name = "mnist_detection"
    config.dataset.derived_options = dict(CANVASES)
    config.dataset.train_split = "train"
    config.dataset.derived_train_examples = 20_000
    config.dataset.eval_split = "test[:2000]"
    config.model.name = model
    config.batch_size = 16
    config.num_epochs = 6
    config.optimizer.name = "adam"
    config.optimizer.learning_rate = 1e-3
    config.schedule.name = "warmup_cosine"
    config.schedule.warmup_steps = 200
    config.grad_clip_norm = 10.0
    config.checkpoint.best_metric = "mAP"
    return config


def smoke(config):
    """A seconds-long run: 32 px canvases, a tiny model (the CI runs every config this way)."""
    shrink_to_smoke(config, train_examples=32, eval_examples=8, steps=4)
    config.dataset.derived_options = {"canvas_size": 32, "min_digits": 1, "max_digits": 2}
    config.batch_size = 8
    config.model.hidden = 16
    return config


def get_config(arg: str = ""):
    config = detection_config("FasterRCNN")
    # A first run with hidden 128 and ratios (0.5, 1, 2) for 20 epochs plateaued at mAP@0.5
    # 0.94 from epoch 13 (mAP 0.71): class-agnostic mAP@0.5 was 0.963, so a third of the loss
    # was the class, and the thin 1s (boxes 1-6 px wide, recall@0.5 0.90) most of the rest.
    # Hence a wider head and tall anchors (h/w = 4), for 14 epochs (twice the backbone's
    # channels would have cost 3.5x the step time).
    config.model.hidden = 256
    config.model.anchor_sizes = (12.0, 24.0, 48.0)
    config.model.aspect_ratios = (0.5, 1.0, 2.0, 4.0)
    # That second run (mAP@0.5 0.942) still missed a tenth of the 1s at IoU 0.5: their boxes are
    # 1-6 px wide, under two cells of the stride-4 map. The head also pools the stride-2 map:
    # mAP@0.5 0.9495, mAP 0.734 (1s 0.894), the class now most of the gap (class-agnostic 0.968),
    # and the head's classification loss 0.25 on the last training batches against 0.34 on the
    # test canvases. Hence 60,000 distinct canvases seen 5 times rather than 20,000 seen 14 times
    # (18,750 steps against 17,500): mAP@0.5 0.9557, mAP 0.744, test classification loss 0.32.
    config.model.roi_strides = (2, 4)
    config.dataset.derived_train_examples = 60_000
    config.num_epochs = 5
    if arg == "smoke":
        smoke(config)
        config.model.features = (4, 8, 8)
        config.model.pre_nms_top_n = 50
        config.model.post_nms_top_n = 8
    return config
