"""The training loop: ``train_and_evaluate(config, workdir)``.

One call trains a ``jaxcnn.models`` model on a ``jaxcnn.data`` dataset as described by the
config (``jaxcnn.train.config``), evaluates it periodically, writes metrics, checkpoints and
plots into ``workdir``, and returns the final metrics. Calling it again with the same
``workdir`` resumes from the latest checkpoint and reproduces the uninterrupted run exactly:
the state (params, optimizer, PRNG key), the data iterator position and the partial
train-metric window all come back from the checkpoint.

Stops:
  * a non-finite loss or gradient raises :class:`NonFiniteError` naming the step; the bad
    update is discarded and no checkpoint of it is written; a state that became non-finite
    otherwise (an overflowing update) is never saved either;
  * SIGTERM/SIGINT finish the current step, save a checkpoint and return with
    ``status == "preempted"`` (rerun the same command to resume).

Crashes: a killed run (``kill -9``, power loss of the process) resumes from its last complete
checkpoint when rerun; records it wrote after that checkpoint are dropped and written again,
identically. A latest checkpoint that does not read back intact is skipped with a warning and
the run resumes from the newest earlier one (see :mod:`jaxcnn.train.checkpoint`). A checkpoint
that cannot be written (disk full, read-only workdir) raises ``CheckpointWriteError`` naming
the checkpoints still intact.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax.traverse_util import flatten_dict

from jaxcnn.train.builders import (
    build_model,
    dataset_num_classes,
    eval_split_name,
    load_sources,
    make_preprocessing,
    make_task_for,
)
from jaxcnn.train.checkpoint import Checkpointer, drop_matching, load_params, merge_matching
from jaxcnn.train.config import default_config, validate_config
from jaxcnn.train.evaluation import evaluate, plot_predicted_masks
from jaxcnn.train.metric_writer import MetricWriter, read_metrics
from jaxcnn.train.optimizers import make_optimizer
from jaxcnn.train.parallel import DataParallel
from jaxcnn.train.state import TrainState, create_train_state
from jaxcnn.train.steps import make_eval_step, make_train_step

# Per-step train metrics that are averaged over a logging window (the rest are not logged).
_LOGGED = ("loss", "accuracy", "mean_iou", "mse", "mae", "grad_norm", "learning_rate")


class NonFiniteError(FloatingPointError):
    """The loss, the gradient or the state became NaN/Inf; the message names the step."""


@jax.jit
def _finite_flags(leaves: list[jax.Array]) -> list[jax.Array]:
    return [jnp.all(jnp.isfinite(leaf)) for leaf in leaves]


def _non_finite_leaves(state: TrainState) -> list[str]:
    """Paths of the floating-point arrays of ``state`` holding a NaN or an Inf."""
    from jaxcnn.train.optimizers import param_path

    leaves = [
        (param_path(path), leaf)
        for path, leaf in jax.tree_util.tree_leaves_with_path(state)
        if jnp.issubdtype(leaf.dtype, jnp.inexact)
    ]
    flags = jax.device_get(_finite_flags([leaf for _, leaf in leaves]))
    return [name for (name, _), ok in zip(leaves, flags) if not ok]


def _close_quietly(*resources: Any) -> None:
    import logging

    for resource in resources:
        if resource is None:
            continue
        try:
            resource.close()
        except Exception as err:  # reported below the error that is already on its way
            logging.getLogger("jaxcnn.train").warning("while stopping: %s: %s", type(err).__name__, err)


def _write_atomically(path: str, text: str) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


class _StopSignal:
    """Turns SIGTERM/SIGINT into a flag the loop checks between steps (main thread only)."""

    def __init__(self):
        self.received: str | None = None
        self._previous = {}
        self._depth = 0

    def __enter__(self) -> "_StopSignal":
        self._depth += 1
        if self._depth == 1 and threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        self.received = signal.Signals(signum).name

    def __exit__(self, *exc: Any) -> None:
        self._depth -= 1
        if self._depth == 0:
            for sig, handler in self._previous.items():
                signal.signal(sig, handler)
            self._previous = {}


def _init_from_checkpoint(state: TrainState, directory: str, exclude: tuple[str, ...] = ()) -> TrainState:
    """Fine-tuning start: params/batch stats of matching path and shape from ``directory``,
    except those whose path matches an ``exclude`` glob (they keep their fresh init)."""
    if not os.path.isdir(directory):
        raise ValueError(f"config.init_from_checkpoint={directory!r} is not a folder")
    params, batch_stats = load_params(directory)
    if exclude:
        params = drop_matching(params, exclude)
    params, taken, kept = merge_matching(state.params, params)
    if not taken:
        raise ValueError(
            f"config.init_from_checkpoint={directory!r}: no parameter matches this model by path and shape"
        )
    batch_stats, _, _ = merge_matching(state.batch_stats, batch_stats)
    print(
        f"Initialised {len(taken)} parameter arrays from {directory}"
        + (f"; kept the fresh initialisation of {kept}" if kept else ""),
        flush=True,
    )
    ema = jax.tree.map(jnp.copy, params) if state.ema_params is not None else None
    return state.replace(params=params, batch_stats=batch_stats, ema_params=ema)


def train_and_evaluate(
    config: ml_collections.ConfigDict,
    workdir: str | os.PathLike,
    *,
    train_source: Any = None,
    eval_source: Any = None,
    model: nn.Module | None = None,
) -> dict[str, Any]:
    """Trains and evaluates as ``config`` says; writes everything into ``workdir``.

    Args:
      config: see :func:`jaxcnn.train.default_config` for the schema.
      workdir: output folder (created); holding a checkpoint, the run resumes from it.
      train_source, eval_source: random-access sources (``len``, ``[i] -> {"image", "label"}``,
        e.g. ``jaxcnn.data.ArraySource``) instead of loading ``config.dataset``.
      model: a linen module to train instead of ``config.model`` (see :func:`build_model`).

    Returns:
      ``{"step", "epoch", "status" ("completed" | "preempted"), "train_loss", "train_accuracy",
      ..., "eval_loss", "eval_accuracy", ...}`` (eval metrics of the last evaluation; train
      metrics of the last logging window).

    Raises:
      NonFiniteError: the loss, gradients or state became NaN/Inf (the message names the step).
      CheckpointWriteError: a checkpoint could not be written (names the checkpoints still intact).
      CorruptCheckpointError: resuming, but no checkpoint in the workdir reads back intact.
      ValueError: ``workdir`` holds checkpoints of a run with another config (:func:`jaxcnn.train.loop.check_resume_config`).
    """
    # SIGTERM/SIGINT from here on (data loading, compilation included) stop at the next step.
    with _StopSignal() as stop:
        return _train_and_evaluate(
            config, workdir, stop, train_source=train_source, eval_source=eval_source, model=model
        )


# Fields a resumed run may change: where files come from and how the run is shown or placed,
# never what a step computes (restoring onto another device count is supported).
RESUMABLE_CHANGES = (
    "progress_bar", "tensorboard", "plots", "parallel", "num_devices", "xla_options", "checkpoint.async_save",
    "checkpoint.keep", "dataset.data_dir", "dataset.download", "dataset.source", "dataset.worker_count",
)


def check_resume_config(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> None:
    """Raises ``ValueError`` when ``workdir`` holds checkpoints of a run whose ``config.json``
    differs from ``config`` in a field other than :data:`RESUMABLE_CHANGES` (a resume would mix
    two runs); the message lists each differing field with both values."""
    workdir = os.fspath(workdir)
    saved_path = os.path.join(workdir, "config.json")
    checkpoints = os.path.join(workdir, "checkpoints")
    if not os.path.isfile(saved_path) or not os.path.isdir(checkpoints):
        return
    if not any(name.isdigit() for name in os.listdir(checkpoints)):
        return  # killed before its first checkpoint: the run starts afresh
    with open(saved_path) as f:
        saved = flatten_dict(json.load(f), sep=".")
    now = flatten_dict(json.loads(config.to_json_best_effort()), sep=".")
    # A field the saved config predates (or this one lacks) counts with its default value.
    defaults = flatten_dict(json.loads(default_config().to_json_best_effort()), sep=".")

    def value(fields: dict[str, Any], key: str) -> Any:
        return fields.get(key, defaults.get(key, "(absent)"))

    differ = sorted(k for k in set(saved) | set(now)
                    if value(saved, k) != value(now, k) and k not in RESUMABLE_CHANGES)
    if differ:
        details = ", ".join(f"{k}: {value(saved, k)!r} there, {value(now, k)!r} now" for k in differ)
        raise ValueError(
            f"workdir {workdir!r} holds checkpoints of a run with another config, so this run cannot resume "
            f"it ({details}). Rerun with that run's config (its config.json), or start a new --workdir "
            f"(config.init_from_checkpoint can take the params of this one)."
        )


def data_parallel_for(config: ml_collections.ConfigDict) -> DataParallel:
    """The run's :class:`jaxcnn.train.DataParallel`; raises ``ValueError`` naming ``config.num_devices`` or a
    batch size that does not split evenly over the devices (checked before anything is compiled)."""
    devices = jax.local_devices() if config.parallel == "pmap" else jax.devices()
    if config.num_devices:
        if config.num_devices > len(devices):
            raise ValueError(f"config.num_devices={config.num_devices} but only {len(devices)} devices exist")
        devices = devices[: config.num_devices]
    parallel = DataParallel(config.parallel, devices, config.xla_options)
    parallel.check_batch_size(config.batch_size, "config.batch_size")
    parallel.check_batch_size(config.eval_batch_size or config.batch_size, "config.eval_batch_size")
    return parallel


def _train_and_evaluate(
    config: ml_collections.ConfigDict,
    workdir: str | os.PathLike,
    stop: _StopSignal,
    *,
    train_source: Any,
    eval_source: Any,
    model: nn.Module | None,
) -> dict[str, Any]:
    from jaxcnn.data.pipeline import BatchLoader

    validate_config(config)
    check_resume_config(config, workdir)
    workdir = os.path.abspath(os.fspath(workdir))
    primary = jax.process_index() == 0
    os.makedirs(workdir, exist_ok=True)

    if (train_source is None) != (eval_source is None):
        raise ValueError("train_and_evaluate: pass both train_source and eval_source, or neither")
    if train_source is None:
        train_source, eval_source = load_sources(config)
    num_classes = dataset_num_classes(config, train_source)

    parallel = data_parallel_for(config)
    if primary and parallel.compiler_options:
        print(
            f"Compiling the steps with the XLA options {parallel.compiler_options} "
            "(--config.xla_options=none compiles with XLA's defaults)",
            flush=True,
        )
    eval_batch_size = config.eval_batch_size or config.batch_size

    train_loader = BatchLoader(
        train_source,
        config.batch_size,
        seed=config.seed,
        shuffle=True,
        num_epochs=None,
        last_batch="drop",
        worker_count=config.dataset.worker_count,
    )
    eval_loader = BatchLoader(eval_source, eval_batch_size, shuffle=False, num_epochs=1, last_batch="pad")
    steps_per_epoch = train_loader.steps_per_epoch
    total_steps = config.num_steps or config.num_epochs * steps_per_epoch
    eval_every = config.eval_every_steps or steps_per_epoch
    train_preprocess, eval_preprocess = make_preprocessing(config)

    model = build_model(config, num_classes, parallel.axis_name, model)
    task = make_task_for(config, num_classes)
    tx, schedule = make_optimizer(config, total_steps)
    ema_decay = config.ema_decay or None
    sample = np.asarray(train_source[0]["image"])[None]
    sample = sample.astype(np.float32) if np.issubdtype(sample.dtype, np.integer) else sample
    state = create_train_state(model, tx, jax.random.PRNGKey(config.seed), sample, ema_decay=ema_decay)

    checkpointer = Checkpointer(
        os.path.join(workdir, "checkpoints"),
        every_steps=config.checkpoint.every_steps,
        keep=config.checkpoint.keep,
        best_metric=config.checkpoint.best_metric or None,
        best_mode=config.checkpoint.best_mode,
        async_save=config.checkpoint.async_save,
    )
    writer = MetricWriter(workdir, tensorboard=config.tensorboard, enabled=primary)
    train_iter = iter(train_loader)
    window: dict[str, float] = {}
    start_step = 0
    if checkpointer.latest_step() is not None:
        restored = checkpointer.restore(
            state, sharding=parallel.replicated if parallel.mode != "pmap" else None
        )
        state, start_step = restored.state, restored.step
        if restored.data_state is not None:
            train_iter.set_state(restored.data_state["iterator"])
            window = dict(restored.data_state.get("train_window", {}))
        writer.truncate_after(start_step)
        print(f"Resuming from the checkpoint of step {start_step} in {checkpointer.directory}", flush=True)
        for skipped_step, problem in restored.skipped:
            print(f"Skipped the newer checkpoint of step {skipped_step}: {problem}", flush=True)
    else:
        # Records of a run killed before its first checkpoint are written again from step 1.
        writer.truncate_after(0)
        if config.init_from_checkpoint:
            state = _init_from_checkpoint(
                state, config.init_from_checkpoint, tuple(config.get("init_from_exclude", ()) or ())
            )
        if primary:
            _write_atomically(
                os.path.join(workdir, "config.json"), config.to_json_best_effort(indent=2, sort_keys=True) + "\n"
            )

    state = parallel.put_state(state)
    train_step = parallel.compile_train_step(
        make_train_step(
            model,
            task,
            tx,
            axis_name=parallel.axis_name,
            ema_decay=ema_decay,
            learning_rate_fn=schedule,
            grad_accum_steps=config.grad_accum_steps,
            preprocess=train_preprocess,
        )
    )
    eval_step = parallel.compile_eval_step(
        make_eval_step(
            model,
            task,
            axis_name=parallel.axis_name,
            use_ema=bool(ema_decay and config.eval_use_ema),
            preprocess=eval_preprocess,
        )
    )

    def save(step: int, eval_metrics: Mapping[str, float] | None = None) -> None:
        bad = _non_finite_leaves(state)
        if bad:
            checkpointer.wait()
            raise NonFiniteError(
                f"non-finite values in the training state after step {step} (in {bad[:5]}); no "
                f"checkpoint was written for it (last checkpoint: {checkpointer.latest_step()}). Lower the "
                f"learning rate, set grad_clip_norm, or check the data."
            )
        data_state = {"iterator": train_iter.get_state(), "train_window": window}
        metrics = None
        if eval_metrics is not None and config.checkpoint.best_metric in eval_metrics:
            metrics = dict(eval_metrics)
        checkpointer.save(
            step, parallel.get_state(state), data_state=data_state, config=config, metrics=metrics
        )

    def epoch_of(step: int) -> float:
        return step / steps_per_epoch

    progress = None
    if config.progress_bar and primary:
        from tqdm.auto import tqdm

        progress = tqdm(total=total_steps, initial=start_step, desc="train", unit="step", dynamic_ncols=True)

    status = "completed"
    last_train: dict[str, float] = {}
    last_eval: dict[str, float] = {}
    eval_stats = None
    step = start_step
    tic, images_since = time.perf_counter(), 0
    try:
        with stop:
            while step < total_steps:
                batch = next(train_iter)
                state, metrics = train_step(state, parallel.put_batch(batch))
                metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
                step += 1
                if metrics["finite"] < 1.0:
                    checkpointer.wait()
                    last = checkpointer.latest_step()
                    raise NonFiniteError(
                        f"non-finite training loss or gradient at step {step} (loss={metrics['loss']}, "
                        f"grad_norm={metrics['grad_norm']}); the update was discarded and no checkpoint "
                        f"was written for it (last checkpoint: {last}). Lower the learning rate, set "
                        f"grad_clip_norm, or check the data."
                    )
                images_since += config.batch_size
                for name in _LOGGED:
                    if name in metrics:
                        window[name] = window.get(name, 0.0) + metrics[name]
                window["count"] = window.get("count", 0.0) + 1.0

                if step % config.log_every_steps == 0 or step == total_steps:
                    count = window.pop("count")
                    last_train = {k: v / count for k, v in window.items()}
                    writer.write(step, "train", last_train, epoch=epoch_of(step))
                    window = {}
                    seconds = time.perf_counter() - tic
                    writer.write_timing(
                        step, {"seconds": seconds, "images_per_second": images_since / max(seconds, 1e-9)}
                    )
                    if progress is not None:
                        shown = {"loss": f"{last_train['loss']:.4f}"}
                        if "accuracy" in last_train:
                            shown["acc"] = f"{last_train['accuracy']:.4f}"
                        shown["img/s"] = f"{images_since / max(seconds, 1e-9):.0f}"
                        progress.set_postfix(shown, refresh=False)
                    tic, images_since = time.perf_counter(), 0
                if progress is not None:
                    progress.update(1)

                evaluated = None
                if step % eval_every == 0 or step == total_steps:
                    last_eval, eval_stats = evaluate(parallel, eval_step, state, eval_loader, task)
                    writer.write(step, eval_split_name(config), last_eval, epoch=epoch_of(step))
                    evaluated = last_eval
                    if progress is not None:
                        progress.write(
                            f"step {step}: "
                            + ", ".join(
                                f"{eval_split_name(config)} {k} {v:.4f}" for k, v in last_eval.items()
                            )
                        )
                if evaluated is not None or checkpointer.should_save(step) or step == total_steps:
                    save(step, evaluated)
                if stop.received and step < total_steps:
                    save(step)
                    checkpointer.wait()
                    status = "preempted"
                    message = (
                        f"Received {stop.received} at step {step}: saved a checkpoint in "
                        f"{checkpointer.directory}; run the same command again to resume."
                    )
                    if progress is not None:
                        progress.write(message)
                    else:
                        print(message, flush=True)
                    break
        if status == "completed" and not last_eval:
            # Nothing evaluated in this call (resumed a finished run): report the final state.
            last_eval, eval_stats = evaluate(parallel, eval_step, state, eval_loader, task)
        checkpointer.wait()
    except BaseException:
        # The error in flight is the one to report: a second one from closing (e.g. a pending
        # save that fails too) is only logged.
        _close_quietly(progress, writer, train_iter, checkpointer)
        raise
    else:
        if progress is not None:
            progress.close()
        writer.close()
        train_iter.close()
        checkpointer.close()

    if status == "completed" and primary and config.plots:
        _write_plots(workdir, eval_stats, eval_source)
        if config.task == "segmentation":
            plot_predicted_masks(
                workdir, model, parallel.get_state(state), eval_source, eval_preprocess, num_classes,
                use_ema=bool(ema_decay and config.eval_use_ema),
            )
    if not last_train:
        logged = [r for r in read_metrics(workdir) if r["split"] == "train" and r["step"] <= step]
        last_train = {
            k: v for k, v in (logged[-1] if logged else {}).items() if k not in ("step", "epoch", "split")
        }
    result: dict[str, Any] = {"step": step, "epoch": epoch_of(step), "status": status}
    result.update({f"train_{k}": v for k, v in last_train.items()})
    result.update({f"eval_{k}": v for k, v in last_eval.items()})
    return result


def _write_plots(workdir: str, eval_stats: Mapping[str, np.ndarray] | None, eval_source: Any) -> None:
    from jaxcnn.train.plots import plot_confusion_matrix, plot_curves

    plots = os.path.join(workdir, "plots")
    plot_curves(read_metrics(workdir), plots)
    if eval_stats is not None and "confusion" in eval_stats:
        info = getattr(eval_source, "info", None)
        names = getattr(info, "class_names", None)
        matrix = np.asarray(eval_stats["confusion"])
        plot_confusion_matrix(
            matrix,
            os.path.join(plots, "confusion_matrix.png"),
            class_names=names,
            title="confusion matrix (evaluation split)",
        )
        with open(os.path.join(plots, "confusion_matrix.json"), "w") as f:
            json.dump(matrix.astype(np.int64).tolist(), f)
