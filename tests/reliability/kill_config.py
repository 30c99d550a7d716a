"""The tiny run that the kill -9 trials interrupt (tests/reliability/test_kill.py).

Command:  jaxcnn train --config tests/reliability/kill_config.py --workdir W --config.dataset.data_dir=D
          (D: a folder with mnist/ IDX files; the test writes small synthetic ones)
Expected: 24 steps of LeNet-5, a checkpoint every 2 steps (asynchronous), evaluation every 8;
          a few seconds on a 2-core CPU, most of it JAX start-up and compilation.
"""

from jaxcnn.train import default_config


def get_config(arg: str = ""):
    config = default_config()
    config.dataset.name = "mnist"
    config.dataset.source = "idx"
    config.model.name = "LeNet5"
    config.batch_size = 16
    config.num_epochs = 0
    config.num_steps = 24
    config.optimizer.name = "adam"
    config.optimizer.learning_rate = 1e-3
    config.eval_every_steps = 8
    config.log_every_steps = 1
    config.checkpoint.every_steps = 2
    config.checkpoint.keep = 3
    config.checkpoint.async_save = True
    config.progress_bar = False
    config.tensorboard = False
    config.plots = False
    return config
