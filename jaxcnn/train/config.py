"""The training config schema and its defaults.

``default_config()`` returns an ``ml_collections.ConfigDict`` that experiment configs start
from and the command line overrides (``--config.optimizer.learning_rate=0.01``). Every field,
with its type, default and meaning, is listed in ``default_config``'s docstring, generated from
``jaxcnn.train.config_fields.DESCRIPTIONS`` and the defaults themselves.

Outputs in ``workdir``: ``metrics.jsonl`` (one JSON object per log/eval event: ``step``,
``epoch``, ``split``, ``loss``, ``accuracy``..., deterministic: same config and seed give the
same file byte for byte, also across a resume), ``timings.jsonl`` (wall-clock: seconds,
images/s; excluded from that promise), ``config.json``, ``checkpoints/``, ``tensorboard/``,
``plots/``.
"""

from __future__ import annotations

import math
import textwrap
from typing import Any

import ml_collections

from jaxcnn.backends.cpu.options import CHOICES as XLA_OPTION_CHOICES
from jaxcnn.train.optimizers import SCHEDULES
from jaxcnn.train.parallel import PARALLEL_MODES
from jaxcnn.train.tasks import registered_tasks, task_from_config


def default_config() -> ml_collections.ConfigDict:
    """The defaults: SimpleCNN on MNIST, SGD with momentum, one epoch on all devices.

    Returns:
      A fresh ``ml_collections.ConfigDict``; experiment configs change it in place and
      ``--config.a.b=value`` overrides any field (checked against the type of its default).
    """
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.task = "classification"
    config.regression_loss = "mse"
    config.task_options = ml_collections.ConfigDict()

    config.dataset = ml_collections.ConfigDict()
    config.dataset.name = "mnist"
    config.dataset.data_dir = ""
    config.dataset.source = "auto"
    config.dataset.download = False
    config.dataset.examples_per_class = 0
    config.dataset.train_split = "train"
    config.dataset.derived_train_examples = 0
    # Keyword arguments of a derived dataset (DetectionCanvases: canvas_size, min_digits ...).
    config.dataset.derived_options = ml_collections.ConfigDict()
    config.dataset.eval_split = "test"
    config.dataset.num_classes = 0
    config.dataset.worker_count = 0

    config.model = ml_collections.ConfigDict()
    config.model.name = "SimpleCNN"

    config.batch_size = 128
    config.eval_batch_size = 0
    config.num_epochs = 1
    config.num_steps = 0

    config.optimizer = ml_collections.ConfigDict()
    config.optimizer.name = "sgd"
    config.optimizer.learning_rate = 0.05
    config.optimizer.momentum = 0.9
    config.optimizer.nesterov = False
    config.optimizer.weight_decay = 0.0
    config.optimizer.kwargs = ml_collections.ConfigDict()

    config.schedule = ml_collections.ConfigDict()
    config.schedule.name = "constant"
    config.schedule.warmup_steps = 0
    config.schedule.end_learning_rate = 0.0
    config.schedule.boundaries = ()
    config.schedule.decay_factor = 0.1
    config.schedule.pct_start = 0.3
    config.schedule.div_factor = 25.0
    config.schedule.final_div_factor = 1e4

    config.grad_clip_norm = 0.0
    config.grad_accum_steps = 1
    config.ema_decay = 0.0
    config.eval_use_ema = True
    config.init_from_checkpoint = ""
    config.init_from_exclude = ()
    config.freeze = ()
    config.mixed_precision = False
    config.augment = ()
    config.augment_options = ml_collections.ConfigDict()
    config.normalize = ml_collections.ConfigDict()
    config.normalize.mean = 0.0
    config.normalize.std = 1.0

    config.eval_every_steps = 0
    config.log_every_steps = 50

    config.checkpoint = ml_collections.ConfigDict()
    config.checkpoint.every_steps = 0
    config.checkpoint.keep = 3
    config.checkpoint.best_metric = "accuracy"
    config.checkpoint.best_mode = "max"
    config.checkpoint.async_save = True

    config.parallel = "auto"
    config.num_devices = 0
    config.xla_options = "auto"
    config.cpu_kernels = True
    config.progress_bar = True
    config.tensorboard = True
    config.plots = True
    return config


def _check_int(config: Any, field: str, minimum: int, maximum: int | None = None) -> int:
    value = _lookup(config, field)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum or (
        maximum is not None and value > maximum
    ):
        bound = f"in [{minimum}, {maximum}]" if maximum is not None else f">= {minimum}"
        raise ValueError(f"config.{field} must be an int {bound}, got {value!r}")
    return value


def _check_float(config: Any, field: str, minimum: float = 0.0, below: float | None = None) -> float:
    value = _lookup(config, field)
    if isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isfinite(value):
        # NaN passes every comparison below; Inf turns images or updates into NaN.
        raise ValueError(f"config.{field} must be a finite number, got {value!r}")
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or value < minimum
        or (below is not None and value >= below)
    ):
        bound = f"in [{minimum}, {below})" if below is not None else f">= {minimum}"
        raise ValueError(f"config.{field} must be a number {bound}, got {value!r}")
    return float(value)


def _check_choice(config: Any, field: str, choices: tuple[str, ...]) -> str:
    value = _lookup(config, field)
    if value not in choices:
        raise ValueError(f"config.{field}={value!r} is not one of {choices}")
    return value


def _check_bool(config: Any, field: str) -> bool:
    value = _lookup(config, field)
    if not isinstance(value, bool):
        raise TypeError(f"config.{field} must be True or False, got {value!r}")
    return value


def _check_str(config: Any, field: str) -> str:
    value = _lookup(config, field)
    if not isinstance(value, str):
        raise TypeError(f"config.{field} must be a string, got {value!r} ({type(value).__name__})")
    return value


# Groups whose keys are passed on as keyword arguments (checked by what receives them).
_FREE_FORM = ("model", "optimizer.kwargs", "augment_options", "dataset.derived_options", "task_options")


def _check_known_fields(config: Any, schema: Any, prefix: str = "") -> None:
    """Every key of ``config`` is a field of ``schema`` (a typo is an error, not a silent no-op)."""
    for key in config.keys():
        path = f"{prefix}{key}"
        if key not in schema:
            where = f"config.{prefix[:-1]}" if prefix else "config"
            raise ValueError(
                f"config.{path} is not a known field; the fields of {where} are {sorted(schema.keys())} "
                f"(see jaxcnn.train.default_config)"
            )
        if isinstance(schema[key], ml_collections.ConfigDict):
            if not isinstance(config[key], (ml_collections.ConfigDict, dict)):
                raise TypeError(f"config.{path} must be a group of fields (a ConfigDict), got {config[key]!r}")
            if path not in _FREE_FORM:
                _check_known_fields(config[key], schema[key], f"{path}.")


def _check_model_fields(config: Any) -> None:
    """``model.*`` besides ``name`` must be fields of that zoo model."""
    from jaxcnn.models import MODELS

    name = config.model.name
    if name not in MODELS:
        return  # a model passed to train_and_evaluate(model=...); otherwise get_model names the choices
    factory = MODELS[name]
    cls = getattr(factory, "func", factory)
    fields = set(getattr(cls, "__dataclass_fields__", {})) - {"parent", "name"}
    unknown = sorted(set(config.model.keys()) - {"name"} - fields)
    if unknown:
        raise ValueError(
            f"config.model has {unknown}, which are not fields of {name}; its fields are {sorted(fields)}"
        )


def _lookup(config: Any, field: str) -> Any:
    value = config
    for part in field.split("."):
        if part not in value:
            raise ValueError(f"config.{field} is missing; start from jaxcnn.train.default_config()")
        value = value[part]
    return value


# Largest seed: jax.random.PRNGKey and the data order take 32-bit seeds.
MAX_SEED = 2**32 - 1
# Largest step count a schedule boundary may name (steps are int32 on the device).
MAX_STEP = 2**31 - 1
def _check_best_metric(config: Any) -> None:
    """``checkpoint.best_metric`` is a metric the task reports, ranked in its own direction."""
    metric, mode = config.checkpoint.best_metric, config.checkpoint.best_mode
    if not metric:
        return
    # The task's own table; any class count >= 2 builds it (the metrics do not depend on it).
    modes = dict(task_from_config(config, max(int(config.dataset.get("num_classes", 0) or 0), 2)).metric_modes)
    known = tuple(modes)
    if metric not in known:
        raise ValueError(
            f"config.checkpoint.best_metric={metric!r} is not a metric of the {config.task!r} task; "
            f"allowed: {known} or '' (no best checkpoint kept)"
        )
    wanted = modes[metric]
    if mode != wanted:
        raise ValueError(
            f"config.checkpoint.best_mode={mode!r} with best_metric={metric!r} would keep the worst "
            f"checkpoint; {metric!r} needs best_mode={wanted!r}"
        )


def validate_config(config: ml_collections.ConfigDict) -> None:
    """Raises ``ValueError``/``TypeError`` naming the first bad field and its value."""
    if not isinstance(config, ml_collections.ConfigDict):
        raise TypeError(f"config must be an ml_collections.ConfigDict, got {type(config).__name__}")
    _check_known_fields(config, default_config())
    _check_int(config, "seed", 0, MAX_SEED)
    _check_choice(config, "task", registered_tasks())
    _check_choice(config, "regression_loss", ("mse", "mae"))
    for field in ("dataset.name", "model.name", "optimizer.name"):
        if not isinstance(_lookup(config, field), str) or not _lookup(config, field):
            raise ValueError(f"config.{field} must be a non-empty string, got {_lookup(config, field)!r}")
    for field in ("dataset.data_dir", "dataset.train_split", "dataset.eval_split", "init_from_checkpoint",
                  "checkpoint.best_metric"):
        _check_str(config, field)
    _check_choice(config, "dataset.source", ("auto", "idx", "tfds"))
    for field in ("dataset.download", "optimizer.nesterov", "eval_use_ema", "mixed_precision",
                  "checkpoint.async_save", "cpu_kernels", "progress_bar", "tensorboard", "plots"):
        _check_bool(config, field)
    _check_model_fields(config)
    _check_int(config, "dataset.num_classes", 0)
    _check_int(config, "dataset.worker_count", 0)
    _check_int(config, "dataset.examples_per_class", 0)
    _check_int(config, "dataset.derived_train_examples", 0)
    _check_int(config, "batch_size", 1)
    _check_int(config, "eval_batch_size", 0)
    _check_int(config, "num_epochs", 0)
    _check_int(config, "num_steps", 0)
    if config.num_epochs == 0 and config.num_steps == 0:
        raise ValueError("config.num_epochs and config.num_steps are both 0; set one of them")
    if _check_float(config, "optimizer.learning_rate") <= 0:
        raise ValueError(
            f"config.optimizer.learning_rate must be > 0, got {config.optimizer.learning_rate!r}"
        )
    _check_float(config, "optimizer.momentum", 0.0, 1.0)
    _check_float(config, "optimizer.weight_decay")
    _check_choice(config, "schedule.name", SCHEDULES)
    _check_int(config, "schedule.warmup_steps", 0)
    for field in ("schedule.end_learning_rate", "schedule.decay_factor", "schedule.pct_start",
                  "schedule.div_factor", "schedule.final_div_factor"):
        _check_float(config, field)
    if not 0.0 < config.schedule.pct_start < 1.0:
        raise ValueError(
            f"config.schedule.pct_start must be in (0, 1) (the fraction of the run spent warming up), "
            f"got {config.schedule.pct_start!r}"
        )
    for field in ("schedule.div_factor", "schedule.final_div_factor"):
        if _lookup(config, field) <= 0:
            raise ValueError(f"config.{field} must be > 0 (the learning rate is divided by it), "
                             f"got {_lookup(config, field)!r}")
    boundaries = _lookup(config, "schedule.boundaries")
    if isinstance(boundaries, (str, bytes)) or not all(
        isinstance(b, (int, float)) and not isinstance(b, bool) and b >= 0 for b in boundaries
    ):
        raise TypeError(f"config.schedule.boundaries must be a list of non-negative numbers, got {boundaries!r}")
    for b in boundaries:
        if not math.isfinite(b) or (b >= 1 and (float(b) != int(b) or b > MAX_STEP)):
            raise ValueError(
                f"config.schedule.boundaries has {b!r}; a boundary is a fraction of the run in (0, 1) or a "
                f"whole number of updates <= {MAX_STEP}"
            )
    _check_float(config, "grad_clip_norm")
    _check_int(config, "grad_accum_steps", 1)
    if config.num_steps and config.grad_accum_steps > config.num_steps:
        raise ValueError(
            f"config.grad_accum_steps={config.grad_accum_steps} is more than config.num_steps="
            f"{config.num_steps}: no update would ever be applied; use at most num_steps"
        )
    _check_float(config, "ema_decay", 0.0, 1.0)
    for field in ("freeze", "augment", "init_from_exclude"):
        value = _lookup(config, field)
        if isinstance(value, str) or not all(isinstance(v, str) for v in value):
            raise TypeError(f"config.{field} must be a list of strings, got {value!r}")
    if _check_float(config, "normalize.std") <= 0:
        raise ValueError(f"config.normalize.std must be > 0, got {config.normalize.std!r}")
    _check_float(config, "normalize.mean", float("-inf"))
    _check_int(config, "eval_every_steps", 0)
    _check_int(config, "log_every_steps", 1)
    _check_int(config, "checkpoint.every_steps", 0)
    _check_int(config, "checkpoint.keep", 1)
    _check_choice(config, "checkpoint.best_mode", ("max", "min"))
    _check_best_metric(config)
    _check_choice(config, "parallel", PARALLEL_MODES)
    _check_int(config, "num_devices", 0)
    _check_choice(config, "xla_options", XLA_OPTION_CHOICES)
    if config.parallel == "none" and config.num_devices > 1:
        raise ValueError(
            f"config.parallel='none' runs on one device, but config.num_devices={config.num_devices}"
        )


# The field table comes from one source (config_fields.DESCRIPTIONS and the defaults above).
from jaxcnn.train import config_fields as _config_fields  # noqa: E402

default_config.__doc__ = (
    (default_config.__doc__ or "").rstrip()
    + "\n\n    Fields (type, default, meaning):\n\n"
    + textwrap.indent(_config_fields.rst_table(), "    ")
    + "\n"
)
