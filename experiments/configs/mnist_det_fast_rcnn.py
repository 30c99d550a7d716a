"""Fast R-CNN (features once per image, RoI Align per sliding window) on MNIST detection canvases.

Command:  jaxcnn train --config experiments/configs/mnist_det_fast_rcnn.py --workdir runs/mnist_det_fast_rcnn
Expected: reported beside Faster R-CNN (no target of its own): mAP@[.5:.95], mAP@0.5, mAP@0.75 on 64x64
          canvases of 1-3 MNIST test digits scaled 0.5x-1.5x. Measured (experiments/RESULTS.md): mAP
          0.3205, mAP@0.5 0.5116; inference 198 canvases/s (R-CNN: 0.2346, 0.4370, 189/s; Faster R-CNN:
          0.7175, 0.9421, 351/s).
Hardware: the reference 2-core CPU: 26 minutes for 6 epochs of 20,000 canvases, measured while the
          CPU also ran parts of the test suite.
Smoke:    experiments/configs/mnist_det_fast_rcnn.py:smoke
Outputs:  metrics.jsonl (mAP, mAP50, mAP75, AR100), predictions.json (COCO results on the eval
          canvases), plots/detections.png.
"""

from pathlib import Path

from jaxcnn.launch import load_config_module

# CANVASES, detection_config() and smoke(): shared by the three detection configs.
shared = load_config_module(Path(__file__).with_name("mnist_det_faster_rcnn.py"))


def get_config(arg: str = ""):
    config = shared.detection_config("FastRCNN")
    # Sliding windows at the digit sizes of the canvases (14-42 px), half overlapping.
    config.model.window_sizes = (16, 24, 32, 48)
    config.model.aspect_ratios = (1.0,)
    config.model.pooling = "align"
    if arg == "smoke":
        shared.smoke(config)
        config.model.features = (4, 8, 8)
        config.model.window_sizes = (16, 24)
    return config
