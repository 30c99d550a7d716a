"""Evaluation: one pass over a loader, and the evaluation of a finished (or running) workdir."""

from __future__ import annotations

import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxcnn.train.builders import (
    build_model,
    dataset_num_classes,
    eval_split_name,
    load_sources,
    make_preprocessing,
    make_task_for,
)
from jaxcnn.train.config_checks import check_data_dir
from jaxcnn.train.checkpoint import CheckpointRemovedError, Checkpointer
from jaxcnn.train.parallel import DataParallel
from jaxcnn.train.resume_checks import read_config_json
from jaxcnn.train.state import TrainState
from jaxcnn.train.steps import make_eval_step
from jaxcnn.train.tasks import EvaluationContext, Task, add_statistics


def evaluate(
    parallel: DataParallel, eval_step, state: TrainState, loader: Any, task: Task
) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Runs ``eval_step`` over one pass of ``loader``; returns ``(metrics, summed statistics)``."""
    total = None
    for batch in loader:
        stats = jax.device_get(eval_step(state, parallel.put_batch(batch)))
        total = add_statistics(total, stats, task.gathered_statistics)
    if total is None:
        raise ValueError("evaluate: the evaluation loader yielded no batch")
    return task.summarize(total), total


def _replace_fields(config: ml_collections.ConfigDict, name: str, fields: dict[str, Any]) -> None:
    """Replaces existing fields of ``config[name]``; an unknown one is a ``ValueError``."""
    section = config.get(name)
    known = set(section.keys()) if isinstance(section, ml_collections.ConfigDict) else set()
    unknown = sorted(set(fields) - known)
    if unknown:
        raise ValueError(f"evaluate_workdir: {name} has {unknown}, which are not fields of config.{name}; "
                         f"its fields are {sorted(known)}")
    with config.ignore_type():
        section.update(fields)


def evaluate_workdir(
    workdir: str | os.PathLike, *, checkpoint: str = "best", eval_source: Any = None,
    dataset: dict[str, Any] | None = None, task_options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Evaluates a ``train_and_evaluate`` workdir's checkpoint on its evaluation split.

    Args:
      workdir: a folder with ``config.json`` and ``checkpoints/`` (zoo models only: the model
        is rebuilt from the config).
      checkpoint: ``"best"`` (by ``checkpoint.best_metric``; the latest when none was ranked)
        or ``"latest"``.
      eval_source: a source to evaluate on instead of ``config.dataset.eval_split``.
      dataset: fields of the run's ``config.dataset`` to replace (``{"eval_split": "train[:1000]",
        "data_dir": "/data"}``): evaluate a finished run on other data or on another machine.
      task_options: fields of the run's ``config.task_options`` to replace, for how the run is
        judged (``{"classifier_workdir": "runs/mnist_classifier"}`` for a generation run).

    Returns:
      ``{"step", "checkpoint", "split", "loss", "accuracy", ...}``; with ``ema_decay`` and
      ``eval_use_ema`` the EMA weights are evaluated, as during training.
    """
    if checkpoint not in ("best", "latest"):
        raise ValueError(f"evaluate_workdir: checkpoint must be 'best' or 'latest', got {checkpoint!r}")
    workdir = os.fspath(workdir)
    config = ml_collections.ConfigDict(read_config_json(workdir))
    if dataset:
        _replace_fields(config, "dataset", dataset)
        check_data_dir(config)
    if task_options:
        _replace_fields(config, "task_options", task_options)
    if eval_source is None:
        train_source, eval_source = load_sources(config)
    else:
        train_source = eval_source
    num_classes = dataset_num_classes(config, train_source)

    devices = jax.local_devices() if config.parallel == "pmap" else jax.devices()
    if config.num_devices:
        devices = devices[: config.num_devices]
    # A config.json written before config.xla_options existed compiled with these options.
    parallel = DataParallel(config.parallel, devices, config.get("xla_options", "auto"))
    batch_size = config.eval_batch_size or config.batch_size
    parallel.check_batch_size(batch_size, "config.eval_batch_size")
    model = build_model(config, num_classes, parallel.axis_name)
    task = make_task_for(config, num_classes)

    step, variables, ranking = _restore_chosen(os.path.join(workdir, "checkpoints"), checkpoint)
    use_ema = bool(config.ema_decay and config.eval_use_ema and variables["ema_params"] is not None)
    state = TrainState(
        step=jnp.asarray(step, jnp.int32),
        params=variables["ema_params"] if use_ema else variables["params"],
        batch_stats=variables["batch_stats"],
        opt_state=None,
        rng=jnp.zeros((2,), jnp.uint32),
    )
    _, eval_preprocess = make_preprocessing(config)
    eval_step = parallel.compile_eval_step(
        make_eval_step(model, task, axis_name=parallel.axis_name, preprocess=eval_preprocess)
    )
    from jaxcnn.data.pipeline import BatchLoader

    loader = BatchLoader(eval_source, batch_size, shuffle=False, num_epochs=1, last_batch="pad")
    metrics, _ = evaluate(parallel, eval_step, parallel.put_state(state), loader, task)
    if config.plots:
        # A task may return metrics measured in its extras (a generation task's sample quality).
        extra = task.evaluation_extras(EvaluationContext(
            workdir, model, host_variables(state), eval_source, eval_preprocess, statistics=None
        ))
        metrics.update(extra or {})
    return {"step": step, "checkpoint": checkpoint, **ranking, "split": eval_split_name(config), **metrics}


def _restore_chosen(directory: str, checkpoint: str, attempts: int = 5) -> tuple[int, dict[str, Any], dict]:
    """``(step, variables, ranking)`` of the best or latest checkpoint in ``directory``.

    A run still training in that folder may delete the chosen checkpoint (retention) while it is
    read: the choice is then made again, from the checkpoints present now.
    """
    for attempt in range(attempts):
        with Checkpointer(directory, read_only=True, async_save=False) as ckpt:
            step = ckpt.best_step() if checkpoint == "best" else ckpt.latest_step()
            if step is None:
                raise FileNotFoundError(f"evaluate_workdir: no checkpoint in {ckpt.directory}")
            ranking = {}
            if checkpoint == "best" and ckpt.best_metric:
                ranking = {"best_metric": ckpt.best_metric, "best_mode": ckpt.best_mode}
            try:
                return step, ckpt.restore_variables(step), ranking
            except CheckpointRemovedError:
                if attempt == attempts - 1:
                    raise
    raise AssertionError("unreachable")



def host_variables(state: TrainState, *, use_ema: bool = False) -> dict[str, Any]:
    """``state.variables(use_ema=...)`` as host NumPy arrays (one copy of a replicated state)."""
    return jax.tree.map(
        lambda x: np.asarray(x.addressable_data(0)) if isinstance(x, jax.Array) else x,
        state.variables(use_ema=use_ema),
    )
