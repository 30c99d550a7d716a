"""R-CNN (each sliding window cut from the image, resized and classified by a CNN) on MNIST detection canvases.

Command:  jaxcnn train --config experiments/configs/mnist_det_rcnn.py --workdir runs/mnist_det_rcnn
Expected: reported beside Fast and Faster R-CNN (no target of its own; the slowest of the three by
          design): mAP@[.5:.95], mAP@0.5, mAP@0.75 on 64x64 canvases of 1-3 MNIST test digits scaled
          0.5x-1.5x. Measured (experiments/RESULTS.md): mAP 0.2346, mAP@0.5 0.4370; inference 189
          canvases/s (Faster R-CNN: 0.7175, 0.9421, 351/s).
Hardware: the reference 2-core CPU: 21 minutes for 6 epochs of 20,000 canvases, measured while the
          CPU also ran parts of the test suite.
Smoke:    experiments/configs/mnist_det_rcnn.py:smoke
Outputs:  metrics.jsonl (mAP, mAP50, mAP75, AR100), predictions.json (COCO results on the eval
          canvases), plots/detections.png.
"""

from pathlib import Path

from jaxcnn.launch import load_config_module

# CANVASES, detection_config() and smoke(): shared by the three detection configs.
shared = load_config_module(Path(__file__).with_name("mnist_det_faster_rcnn.py"))


def get_config(arg: str = ""):
    config = shared.detection_config("RCNN")
    config.model.window_sizes = (16, 24, 32, 48)
    config.model.aspect_ratios = (1.0,)
    config.model.crop_size = 16
    if arg == "smoke":
        shared.smoke(config)
        config.model.features = (4, 8)
        config.model.window_sizes = (16, 24)
    return config
