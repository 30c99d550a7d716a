"""A small, deliberately slow training run for the preemption test (run as a subprocess).

Usage: ``python preemptible_run.py WORKDIR`` prints the result dict of ``train_and_evaluate``
as JSON on its last line. Each training example takes ~1 ms to read, so the run lasts a few
seconds and a SIGTERM lands in the middle of it.
"""

from __future__ import annotations

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402

jax.config.update("jax_numpy_dtype_promotion", "strict")
jax.config.update("jax_numpy_rank_promotion", "raise")

from tiny_models import TinyCNN, sources  # noqa: E402

from jaxcnn.train import default_config, train_and_evaluate  # noqa: E402


class SlowSource:
    """Wraps a source; every example read sleeps ``delay`` seconds."""

    def __init__(self, source, delay: float = 0.001):
        self.source, self.delay, self.info = source, delay, getattr(source, "info", None)

    def __len__(self):
        return len(self.source)

    def __getitem__(self, index):
        time.sleep(self.delay)
        return self.source[index]


def make_config():
    config = default_config()
    config.batch_size = 16
    config.num_steps = 100
    config.log_every_steps = 1
    config.eval_every_steps = 50
    config.checkpoint.every_steps = 40
    config.progress_bar = False
    config.plots = False
    config.tensorboard = False
    config.optimizer.learning_rate = 0.05
    return config


def run(workdir: str) -> dict:
    train, test = sources(128, 32)
    return train_and_evaluate(
        make_config(),
        workdir,
        train_source=SlowSource(train),
        eval_source=test,
        model=TinyCNN(num_classes=2, dropout_rate=0.2),
    )


if __name__ == "__main__":
    print(json.dumps(run(sys.argv[1])), flush=True)
