"""AllConvNet (batch norm, strided convs) with augmentation: the best single small CNN on MNIST.

Command:  for seed in 0 1 2; do jaxcnn train --config experiments/configs/mnist_best.py --workdir runs/mnist_best_seed$seed --config.seed=$seed; done
Expected: test accuracy >= 99.6%, mean of the 3 seeds (the best single small CNNs reach
          about 99.64% with augmentation).
Measured: 99.67 / 99.68 / 99.68% (mean 99.68%, seeds 0-2; experiments/RESULTS.md).
Hardware: 15 epochs per seed, 15.6 min on the 2-core CPU with the cores to itself (21-26 min
          while other jobs shared them).
History:  SimpleCNN (two convs and a 1,024-unit dense layer) with the same augmentation,
          30 epochs and EMA reached 99.51/99.61/99.49% (mean 99.54%): its accuracy stopped
          rising after about 8 epochs, so capacity, not the schedule, limited it.
Smoke:    experiments/configs/mnist_best.py:smoke
"""

from jaxcnn.launch import shrink_to_smoke
from jaxcnn.train import default_config


def get_config(arg: str = ""):
    config = default_config()
    config.dataset.name = "mnist"
    config.model.name = "AllConvNet"
    config.model.dropout_rate = 0.4
    config.batch_size = 128
    config.num_epochs = 15
    config.optimizer.name = "adamw"
    config.optimizer.learning_rate = 2e-3
    config.optimizer.weight_decay = 5e-4
    config.schedule.name = "onecycle"
    config.schedule.pct_start = 0.2
    # Small rotations, shifts and scalings: digits stay digits; flips would not.
    config.augment = ("random_affine",)
    config.augment_options.random_affine = {"max_rotation": 10.0, "max_translation": 0.1}
    config.normalize.mean = 0.1307
    config.normalize.std = 0.3081
    if arg == "smoke":
        shrink_to_smoke(config)
    return config
