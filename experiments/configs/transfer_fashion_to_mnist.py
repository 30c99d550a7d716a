"""Transfer learning: pretrain SimpleCNN on Fashion-MNIST, fine-tune on 1,000 MNIST labels.

Four stages, chosen by the config argument (run them in this order; the last three read
the pretrained checkpoint from runs/transfer_fashion_pretrain):

  jaxcnn train --config experiments/configs/transfer_fashion_to_mnist.py:pretrain --workdir runs/transfer_fashion_pretrain
  jaxcnn train --config experiments/configs/transfer_fashion_to_mnist.py:frozen   --workdir runs/transfer_mnist_frozen
  jaxcnn train --config experiments/configs/transfer_fashion_to_mnist.py:finetune --workdir runs/transfer_mnist_finetune
  jaxcnn train --config experiments/configs/transfer_fashion_to_mnist.py:scratch  --workdir runs/transfer_mnist_scratch

- pretrain: all 60,000 Fashion-MNIST training images, 5 epochs.
- frozen:   MNIST, 100 labels per class (1,000), the pretrained conv and fc1 layers frozen,
            a freshly initialised head (fc2) trained alone.
- finetune: the same 1,000 labels, every layer trained from the pretrained weights (new head).
- scratch:  the same 1,000 labels from a random initialisation, for comparison.
Expected: all three on the MNIST test set are reported in experiments/RESULTS.md with their
wall time on the reference 2-core CPU. Measured there: the frozen Fashion-MNIST features
trail both others, and full fine-tuning only matches training from scratch — with a
network this small, clothing features give digits no head start.
Smoke:    append ",smoke" to the stage (e.g. ``:pretrain,smoke``); the smoke stages read
          the pretrained checkpoint from the folder given by --config.init_from_checkpoint.
"""

from jaxcnn.launch import shrink_to_smoke
from jaxcnn.train import default_config

STAGES = ("pretrain", "frozen", "finetune", "scratch")
PRETRAINED = "runs/transfer_fashion_pretrain/checkpoints"


def get_config(arg: str = "pretrain"):
    stage, _, smoke = arg.partition(",")
    if stage not in STAGES:
        raise ValueError(f"transfer_fashion_to_mnist: the stage must be one of {STAGES}, got {stage!r}")
    config = default_config()
    config.model.name = "SimpleCNN"
    config.model.dropout_rate = 0.25
    config.optimizer.name = "adam"
    config.schedule.name = "warmup_cosine"
    if stage == "pretrain":
        config.dataset.name = "fashion_mnist"
        config.normalize.mean = 0.2860
        config.normalize.std = 0.3530
        config.batch_size = 128
        config.num_epochs = 5
        config.optimizer.learning_rate = 1e-3
        config.schedule.warmup_steps = 200
    else:
        config.dataset.name = "mnist"
        config.dataset.examples_per_class = 100
        # The pretrained network saw Fashion-MNIST's normalisation: keep it.
        config.normalize.mean = 0.2860 if stage != "scratch" else 0.1307
        config.normalize.std = 0.3530 if stage != "scratch" else 0.3081
        config.batch_size = 50
        config.num_epochs = 30
        config.eval_every_steps = 200
        config.optimizer.learning_rate = 3e-3 if stage == "frozen" else 1e-3
        config.schedule.warmup_steps = 20
        if stage != "scratch":
            config.init_from_checkpoint = PRETRAINED
            config.init_from_exclude = ("fc2/*",)
        if stage == "frozen":
            config.freeze = ("conv1/*", "conv2/*", "fc1/*")
    if smoke == "smoke":
        shrink_to_smoke(config)
        config.dataset.train_split = "train"  # examples_per_class already keeps it small
        if stage != "pretrain":
            config.dataset.examples_per_class = 5
    return config
