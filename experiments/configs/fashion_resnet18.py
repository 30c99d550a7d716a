"""ResNet-18 (small-input stem) on Fashion-MNIST with crops and flips.

Command:  jaxcnn train --config experiments/configs/fashion_resnet18.py --workdir runs/fashion_resnet18
Expected: test accuracy >= 95.0% after 30 epochs (ResNet-18 is listed at about 94.9%).
Hardware: needs an accelerator for a practical wall time (about 1.8 GFLOPs per training
          image); the measured wall time is in experiments/RESULTS.md once run.
Smoke:    experiments/configs/fashion_resnet18.py:smoke
"""

from jaxcnn.launch import shrink_to_smoke
from jaxcnn.train import default_config


def get_config(arg: str = ""):
    config = default_config()
    config.dataset.name = "fashion_mnist"
    config.model.name = "ResNet18"
    config.model.small_input = True
    config.batch_size = 128
    config.num_epochs = 30
    config.optimizer.name = "sgd"
    config.optimizer.learning_rate = 0.1
    config.optimizer.momentum = 0.9
    config.optimizer.nesterov = True
    config.optimizer.weight_decay = 5e-4
    config.schedule.name = "warmup_cosine"
    config.schedule.warmup_steps = 500
    config.augment = ("random_crop", "random_flip")
    config.augment_options.random_crop = {"padding": 2}
    config.normalize.mean = 0.2860
    config.normalize.std = 0.3530
    if arg == "smoke":
        shrink_to_smoke(config, train_examples=64, eval_examples=32)
        config.model.width = 8
        config.batch_size = 16
    return config
