"""A CNN regressing the rotation angle (within +/-45 degrees) of rotated MNIST digits.

Command:  jaxcnn train --config experiments/configs/mnist_rotation_regression.py --workdir runs/mnist_rotation_regression
Expected: mean absolute error <= 4 degrees on rotated test digits.
Hardware: the reference 2-core CPU; the measured wall time is in experiments/RESULTS.md.
Smoke:    experiments/configs/mnist_rotation_regression.py:smoke
"""

from jaxcnn.launch import shrink_to_smoke
from jaxcnn.train import default_config


def get_config(arg: str = ""):
    config = default_config()
    config.task = "regression"
    config.regression_loss = "mse"
    config.dataset.name = "mnist_rotation"
    config.model.name = "SimpleCNN"
    config.model.num_classes = 1  # one output: the angle in degrees
    config.batch_size = 128
    config.num_epochs = 10
    config.optimizer.name = "adam"
    config.optimizer.learning_rate = 1e-3
    config.schedule.name = "warmup_cosine"
    config.schedule.warmup_steps = 200
    config.checkpoint.best_metric = "mae"
    config.checkpoint.best_mode = "min"
    config.normalize.mean = 0.1307
    config.normalize.std = 0.3081
    if arg == "smoke":
        shrink_to_smoke(config)
    return config
