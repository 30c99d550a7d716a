"""SimpleCNN on MNIST: the README's main job.

Command:  jaxcnn train --config experiments/configs/mnist_simple_cnn.py --workdir runs/mnist_simple_cnn
Expected: test accuracy >= 99.2% after 10 epochs (Flax's MNIST example: 99.17%).
Hardware: the reference 2-core CPU; the measured wall time is in experiments/RESULTS.md.
Smoke:    experiments/configs/mnist_simple_cnn.py:smoke (a few steps, seconds).
"""

from jaxcnn.launch import shrink_to_smoke
from jaxcnn.train import default_config


def get_config(arg: str = ""):
    config = default_config()
    config.dataset.name = "mnist"
    config.model.name = "SimpleCNN"
    config.model.dropout_rate = 0.25
    config.batch_size = 128
    config.num_epochs = 10
    config.optimizer.name = "adam"
    config.optimizer.learning_rate = 1e-3
    config.schedule.name = "warmup_cosine"
    config.schedule.warmup_steps = 200
    config.normalize.mean = 0.1307
    config.normalize.std = 0.3081
    if arg == "smoke":
        shrink_to_smoke(config)
    return config
