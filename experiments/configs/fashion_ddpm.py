"""Unconditional denoising diffusion (DDPM training, DDIM sampling) on Fashion-MNIST.

Command:  jaxcnn train --config experiments/configs/fashion_ddpm.py --workdir runs/fashion_ddpm
Sample:   jaxcnn sample --workdir runs/fashion_ddpm --num 1000 --sampler ddim --steps 50 --out samples.npz
Expected: (issue 24, not yet reached by a committed run) the Fréchet distance of 1,000 samples in
          the feature space of a jaxcnn Fashion-MNIST classifier, reported beside the train-vs-test
          floor; the issue sets no threshold for this dataset.
Hardware: meant for <= 60 minutes on the reference 2-core CPU; not yet measured on an idle machine
          (see num_steps); the measured wall time goes to experiments/RESULTS.md.
Smoke:    experiments/configs/fashion_ddpm.py:smoke
"""

from jaxcnn.launch import shrink_to_smoke
from jaxcnn.train import default_config, generation_config


def get_config(arg: str = ""):
    config = default_config()
    config.task = "generation"
    config.dataset.name = "fashion_mnist"
    config.dataset.num_classes = 10
    config.dataset.eval_split = "test[:2000]"  # the loss is an estimate at random timesteps
    config.task_options = generation_config()
    # Unconditional: the labels are not used, and sampling takes no --label or --guidance.
    config.task_options.class_conditional = False
    config.task_options.label_dropout = 0.0
    config.task_options.guidance = 0.0
    config.task_options.schedule = "cosine"
    config.task_options.num_timesteps = 1000
    config.task_options.image_shape = (28, 28, 1)
    config.task_options.sample_steps = 20
    config.model.name = "DiffusionUNet"
    config.model.base_features = 32
    config.model.channel_multipliers = (1, 2, 2)
    config.model.attention = True
    config.normalize.mean = 0.5  # images in [-1, 1]
    config.normalize.std = 0.5
    config.batch_size = 128
    config.num_epochs = 0
    # Not yet sized by measurement: 2.8 s per step was measured on the 2-core machine shared with ~8
    # other processes (3,000 steps would be 2.3 h there); measure the idle step time and set
    # num_steps to fit 60 minutes before a results run.
    config.num_steps = 3000
    config.eval_every_steps = 500
    config.log_every_steps = 100
    config.optimizer.name = "adam"
    config.optimizer.learning_rate = 1e-3
    config.schedule.name = "warmup_cosine"
    config.schedule.warmup_steps = 200
    config.grad_clip_norm = 1.0
    config.ema_decay = 0.999  # samples come from the EMA weights
    config.checkpoint.every_steps = 500
    config.checkpoint.best_metric = "loss"
    config.checkpoint.best_mode = "min"
    if arg == "smoke":
        shrink_to_smoke(config, train_examples=64, eval_examples=32, steps=4)
        config.batch_size = 16
        config.model.base_features = 8
        config.model.channel_multipliers = (1,)  # one level: the smoke run is mostly compilation
        config.model.attention = False
        config.model.num_groups = 4
        config.task_options.grid_samples = 9
        config.task_options.sample_steps = 2
        config.ema_decay = 0.9
    return config
