"""SimpleCNN on MNIST in one epoch: a one-cycle schedule for time-to-99%.

Command:  jaxcnn train --config experiments/configs/mnist_fast.py --workdir runs/mnist_fast
Expected: test accuracy >= 99.0% after one epoch; evaluations every 100 steps give the
          time-to-99% (steps and seconds) that experiments/RESULTS.md reports.
Hardware: the reference 2-core CPU; the measured wall time is in experiments/RESULTS.md.
Smoke:    experiments/configs/mnist_fast.py:smoke
"""

from jaxcnn.launch import shrink_to_smoke
from jaxcnn.train import default_config


def get_config(arg: str = ""):
    config = default_config()
    config.dataset.name = "mnist"
    config.model.name = "SimpleCNN"
    config.batch_size = 64
    config.num_epochs = 1
    config.optimizer.name = "adam"
    config.optimizer.learning_rate = 2e-3
    config.schedule.name = "onecycle"
    config.schedule.pct_start = 0.25
    config.eval_every_steps = 100
    config.normalize.mean = 0.1307
    config.normalize.std = 0.3081
    if arg == "smoke":
        shrink_to_smoke(config)
    return config
