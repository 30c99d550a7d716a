"""LeNet-5 (ReLU, max pooling) on MNIST.

Command:  jaxcnn train --config experiments/configs/mnist_lenet5.py --workdir runs/mnist_lenet5
Expected: test accuracy >= 99.0% after 10 epochs.
Hardware: the reference 2-core CPU; the measured wall time is in experiments/RESULTS.md.
Smoke:    experiments/configs/mnist_lenet5.py:smoke
"""

from jaxcnn.launch import shrink_to_smoke
from jaxcnn.train import default_config


def get_config(arg: str = ""):
    config = default_config()
    config.dataset.name = "mnist"
    config.model.name = "LeNet5"
    config.batch_size = 128
    config.num_epochs = 10
    config.optimizer.name = "adam"
    config.optimizer.learning_rate = 2e-3
    config.schedule.name = "warmup_cosine"
    config.schedule.warmup_steps = 200
    config.normalize.mean = 0.1307
    config.normalize.std = 0.3081
    if arg == "smoke":
        shrink_to_smoke(config)
    return config
