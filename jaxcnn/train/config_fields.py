"""What each field of the training config means: the one source of its documentation.

``DESCRIPTIONS`` maps every field of :func:`jaxcnn.train.default_config` (dotted path) to one
sentence; :func:`fields_table` adds each field's type and default, read from
``default_config()`` itself, so the table cannot drift from the defaults. The table is appended
to ``default_config.__doc__`` (``help()`` and the API reference show it) and rendered into the
training guide. A test checks that every field has a description and that no description
names a field that does not exist.

Free-form sections (``model``, ``optimizer.kwargs``, ``augment_options``,
``dataset.derived_options``) take extra keys
that are passed on; they are described as a whole.
"""

from __future__ import annotations

from typing import Any

DESCRIPTIONS: dict[str, str] = {
    "seed": "Seeds parameter init, dropout and the data order (the same seed gives the same run).",
    "task": 'What is learned: `"classification"`, `"segmentation"`, `"regression"`, `"detection"`, '
            '`"generation"` or a task added with `jaxcnn.train.register_task` (`registered_tasks()`).',
    "regression_loss": 'Regression only: `"mse"` or `"mae"`.',
    "task_options": "Free-form: the options of a task registered with its own (read and checked by its "
                    "factory), e.g. `generation`'s (`jaxcnn.train.generation_config`, docs/diffusion.md).",
    "dataset.name": "`jaxcnn.data.load` name: `mnist`, `fashion_mnist`, a derived dataset "
                    "(`mnist_segmentation`, `mnist_detection`, `mnist_rotation`) or a tfds name.",
    "dataset.data_dir": 'Folder of the dataset files (must exist when given); `""`: `$JAXCNN_DATA_DIR`, then '
                        'the default folders. The folder used is printed and recorded in `run.json`.',
    "dataset.source": '`"auto"`, `"idx"` (MNIST-family IDX files) or `"tfds"`.',
    "dataset.download": "Allow fetching missing files (IDX files verified against their MD5 checksums, or "
                        "tfds' own download); off: fail fast offline.",
    "dataset.examples_per_class": "> 0: keep only the first that many training examples of each class.",
    "dataset.train_split": 'Training split, sliced tfds-style: `"train"`, `"train[:1000]"`, `"train[:90%]"`.',
    "dataset.derived_train_examples": "> 0: a derived training set has this many examples from its split's "
                                      "digits (`240000`: every MNIST digit at 4 angles); 0: one per digit.",
    "dataset.derived_options": "Free-form: keyword arguments of a derived dataset's class, for both splits, e.g. "
                               "`dataset.derived_options.canvas_size=96` (`DetectionCanvases`).",
    "dataset.eval_split": 'Evaluation split, e.g. `"test"`; without its slice, the `split` in `metrics.jsonl`.',
    "dataset.num_classes": "Number of classes; 0: taken from the dataset.",
    "dataset.worker_count": "grain worker processes for the input pipeline (0: threads only).",
    "model": "Free-form. `model.name` is a `jaxcnn.models.get_model` name; every other `model.*` key is "
             "passed to the model (`num_classes`, `axis_name` and `dtype` are filled in).",
    "model.name": "The model, by its `jaxcnn.models.MODELS` name.",
    "batch_size": "Global batch over all devices and processes; divisible by the device count.",
    "eval_batch_size": "Evaluation batch; 0: `batch_size`.",
    "num_epochs": "Run length in epochs (used when `num_steps` is 0).",
    "num_steps": "Run length in optimizer updates; > 0 wins over `num_epochs`.",
    "optimizer.name": '`"sgd"`, `"adam"`, `"adamw"` or any `optax` optimizer name.',
    "optimizer.learning_rate": "Peak learning rate (the schedule scales it).",
    "optimizer.momentum": "Momentum of `sgd` (and of other optimizers that take one); 0: plain SGD.",
    "optimizer.nesterov": "Nesterov momentum for `sgd`.",
    "optimizer.weight_decay": "Decoupled for adamw-like optimizers, L2 otherwise; never applied to biases "
                              "and normalisation parameters.",
    "optimizer.kwargs": "Free-form: extra keyword arguments of the optax optimizer (`b1`, `eps`, ...).",
    "schedule.name": '`"constant"`, `"step"`, `"cosine"`, `"warmup_cosine"`, `"onecycle"` or `"linear"`.',
    "schedule.warmup_steps": "Linear warmup, in optimizer updates.",
    "schedule.end_learning_rate": "Final value of the cosine and linear schedules.",
    "schedule.boundaries": "Step schedule: update counts, or fractions of the run in (0, 1).",
    "schedule.decay_factor": "Step schedule: factor applied at each boundary.",
    "schedule.pct_start": "One-cycle: fraction of the run spent rising to the peak.",
    "schedule.div_factor": "One-cycle: the start learning rate is the peak divided by this.",
    "schedule.final_div_factor": "One-cycle: the final learning rate is the start divided by this.",
    "grad_clip_norm": "Clip the global gradient norm to this value (0: off).",
    "grad_accum_steps": "Average the gradients of k steps per update (`optax.MultiSteps`).",
    "ema_decay": "Keep an exponential moving average of the parameters with this decay (0: off).",
    "eval_use_ema": "Evaluate with the EMA parameters when `ema_decay` > 0.",
    "init_from_checkpoint": 'Checkpoint folder to take parameters and batch statistics of matching path and '
                            'shape from (fine-tuning); `""`: off; ignored when resuming.',
    "init_from_exclude": 'Parameter path globs NOT taken from that checkpoint (a fresh head: `["fc2/*"]`).',
    "freeze": 'Parameter path globs kept fixed, e.g. `["conv1", "*/bias"]`.',
    "mixed_precision": "Compute in bfloat16 (the model's `dtype`) with float32 parameters and loss.",
    "augment": '`jaxcnn.data.augment` functions applied on the device to training batches, e.g. '
               '`["random_crop", "random_flip"]`.',
    "augment_options": "Free-form: keyword arguments of one augmentation, e.g. "
                       "`augment_options.random_crop.padding`.",
    "normalize.mean": "Images become `(image / 255 - mean) / std`, in training and evaluation.",
    "normalize.std": "See `normalize.mean`.",
    "eval_every_steps": "Evaluate every that many steps; 0: at the end of every epoch.",
    "log_every_steps": "Training metrics are averaged over and written every that many steps.",
    "checkpoint.every_steps": "Checkpoint every that many steps; 0: only at evaluations, at the end and on "
                              "SIGTERM/SIGINT.",
    "checkpoint.keep": "How many of the most recent checkpoints are kept.",
    "checkpoint.best_metric": 'Also keep the best checkpoint by this evaluation metric (`""`: off).',
    "checkpoint.best_mode": '`"max"` or `"min"`: which way `best_metric` is better.',
    "checkpoint.async_save": "Write checkpoints in the background.",
    "parallel": '`"auto"` (`jit` on several devices, else `none`), `"none"`, `"jit"`, `"shard_map"` or '
                '`"pmap"` (`jaxcnn.train.PARALLEL_MODES`).',
    "num_devices": "Devices to use (0: all local devices).",
    "xla_options": '`"auto"`: on CPU the steps compile with jaxcnn\'s XLA options '
                   '(`jaxcnn.backends.cpu.CPU_OPTIONS`); `"none"`: XLA\'s defaults.',
    "cpu_kernels": "Switch the CPU kernel backend on (`jaxcnn.backends.cpu`; only computations lowered for "
                   "CPU use it); `False`: the plain `lax` program everywhere.",
    "progress_bar": "A tqdm bar with loss, accuracy and images/s (process 0 only; off when stderr is not a "
                    "terminal).",
    "tensorboard": "Write TensorBoard event files into `workdir/tensorboard/`.",
    "plots": "Write PNG plots (curves, confusion matrix) into `workdir/plots/` at the end.",
}

# Sections whose keys are passed on as they are: described as a whole.
FREE_FORM = ("model", "optimizer.kwargs", "augment_options", "dataset.derived_options", "task_options")


def field_paths(config: Any) -> list[str]:
    """Dotted paths of ``config``'s leaf fields, free-form sections as one entry each.

    Args:
      config: an ``ml_collections.ConfigDict`` shaped like ``default_config()``.

    Returns:
      The paths in the config's order, e.g. ``["seed", "task", ..., "dataset.name", ...]``;
      ``model`` is a free-form section, and ``model.name`` is listed as well.
    """
    import ml_collections

    paths: list[str] = []

    def walk(node: Any, prefix: str) -> None:
        for key, value in node.items():
            path = f"{prefix}{key}"
            if path in FREE_FORM:
                paths.append(path)
                if path == "model":
                    paths.append("model.name")
            elif isinstance(value, ml_collections.ConfigDict):
                walk(value, path + ".")
            else:
                paths.append(path)

    walk(config, "")
    return paths


def _lookup(config: Any, path: str) -> Any:
    for key in path.split("."):
        config = config[key]
    return config


def _type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (tuple, list)):
        return "list"
    if hasattr(value, "items"):
        return "dict"
    return type(value).__name__


def _default(value: Any) -> str:
    if hasattr(value, "to_dict"):
        value = value.to_dict()
    if isinstance(value, tuple):
        value = list(value)
    return repr(value)


def fields_table() -> list[tuple[str, str, str, str]]:
    """Every field of ``default_config()`` as ``(path, type, default, meaning)`` rows.

    Returns:
      One row per field of :func:`field_paths`, the type and default read from
      ``default_config()`` and the meaning from ``DESCRIPTIONS``.

    Raises:
      KeyError: when a field has no description.
    """
    from jaxcnn.train.config import default_config

    config = default_config()
    order = {path: i for i, path in enumerate(DESCRIPTIONS)}
    rows = []
    for path in sorted(field_paths(config), key=lambda p: order.get(p, -1)):
        if path not in DESCRIPTIONS:
            raise KeyError(f"config field {path!r} has no entry in jaxcnn.train.config_fields.DESCRIPTIONS")
        value = _lookup(config, path)
        rows.append((path, _type_name(value), _default(value), DESCRIPTIONS[path]))
    return rows


def markdown_table() -> str:
    """The field table as Markdown (rendered into the training guide)."""
    lines = ["| field | type | default | meaning |", "|---|---|---|---|"]
    for path, type_name, default, meaning in fields_table():
        meaning = meaning.replace("|", r"\|")
        lines.append(f"| `{path}` | {type_name} | `{default}` | {meaning} |")
    return "\n".join(lines)


def rst_table() -> str:
    """The field table as a reStructuredText list table (appended to ``default_config``'s docstring)."""
    lines = [".. list-table::", "   :header-rows: 1", "", "   * - field", "     - type", "     - default",
             "     - meaning"]
    for path, type_name, default, meaning in fields_table():
        lines += [f"   * - ``{path}``", f"     - {type_name}", f"     - ``{default}``",
                  f"     - {meaning.replace('`', '``')}"]
    return "\n".join(lines)
