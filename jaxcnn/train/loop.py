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

import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxcnn.backends import cpu as cpu_backend
from jaxcnn.train.builders import (
    build_model,
    dataset_num_classes,
    eval_split_name,
    load_sources,
    make_preprocessing,
    make_task_for,
)
from jaxcnn.train.checkpoint import Checkpointer, drop_matching, load_params, merge_matching
from jaxcnn.train.config import validate_config
from jaxcnn.train.config_checks import check_data_dir, check_same_dataset, check_sources, data_folder, dataset_identity
from jaxcnn.train.evaluation import evaluate, host_variables
from jaxcnn.train.metric_writer import MetricWriter, read_metrics
from jaxcnn.train.optimizers import make_optimizer
from jaxcnn.train.parallel import DataParallel
from jaxcnn.train.resume_checks import RESUMABLE_CHANGES, check_resume_config, restore_config_json  # noqa: F401
from jaxcnn.train.state import TrainState, create_train_state
from jaxcnn.train.steps import make_eval_step, make_train_step
from jaxcnn.train.tasks import EvaluationContext
from jaxcnn.train.window import MetricWindow
from jaxcnn.train.workdir_lock import WorkdirLock


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
        name = signal.Signals(signum).name
        if self.received is not None:
            # The user insists: stop now. An exception raised here could land in a finalizer or a
            # garbage-collection callback and be swallowed, so exit at once (code 130, as a shell
            # reports an interrupted command). What is on disk is safe as after a kill -9: the
            # last complete checkpoint resumes, a half-written one is never read, the workdir
            # lock is released by the kernel and data workers exit with this process.
            print(f"Received a second {name}: aborted; a rerun resumes from the last checkpoint",
                  file=sys.stderr, flush=True)
            os._exit(130)
        self.received = name
        # Acknowledged at once, also during start-up (data loading, compilation) where no step ends soon.
        print(f"Received {name}: stopping after the current step with a checkpoint (start-up continues up to "
              f"the first step); send it again to abort at once", file=sys.stderr, flush=True)

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
      ValueError: ``workdir`` holds checkpoints of a run with another config
        (:func:`jaxcnn.train.resume_checks.check_resume_config`).
    """
    # SIGTERM/SIGINT from here on (data loading, compilation included) stop at the next step.
    # One writer per workdir (process 0 writes for all); see jaxcnn.train.workdir_lock.
    lock = WorkdirLock(workdir) if jax.process_index() == 0 else contextlib.nullcontext()
    with _StopSignal() as stop, lock:
        return _train_and_evaluate(
            config, workdir, stop, train_source=train_source, eval_source=eval_source, model=model
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
    from jaxcnn.data.device import prefetch_to_device
    from jaxcnn.data.pipeline import BatchLoader

    validate_config(config)
    check_resume_config(config, workdir)
    workdir = os.path.abspath(os.fspath(workdir))
    primary = jax.process_index() == 0
    os.makedirs(workdir, exist_ok=True)

    if (train_source is None) != (eval_source is None):
        raise ValueError("train_and_evaluate: pass both train_source and eval_source, or neither")
    if train_source is None:
        check_data_dir(config)
        train_source, eval_source = load_sources(config)
        if primary:
            print(f"Data: {config.dataset.name} from {data_folder(train_source)}", flush=True)
    num_classes = dataset_num_classes(config, train_source)
    check_sources(config, train_source, eval_source, num_classes)
    dataset = dataset_identity(train_source)

    on = config.get("cpu_kernels", True)
    kernels = cpu_backend.enable() if on else cpu_backend.disable()
    if primary:
        print(f"CPU kernels: {kernels}; --config.cpu_kernels={not on} switches them {'off' if on else 'on'}", flush=True)
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
    window = MetricWindow()
    start_step = 0
    if checkpointer.latest_step() is not None:
        restored = checkpointer.restore(
            state, sharding=parallel.replicated if parallel.mode != "pmap" else None
        )
        state, start_step = restored.state, restored.step
        if restored.data_state is not None:
            check_same_dataset(restored.data_state.get("dataset"), dataset, data_folder(train_source))
            train_iter.set_state(restored.data_state["iterator"])
            window = MetricWindow(restored.data_state.get("train_window", {}))
        writer.truncate_after(start_step)
        if primary:
            restore_config_json(workdir)
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

    def fetch_metrics() -> None:
        """The one host transfer of the steps' metrics since the last fetch; raises on a bad step."""
        bad_step = window.fetch()
        if bad_step is not None:
            checkpointer.wait()
            step_number, metrics = bad_step
            raise NonFiniteError(
                f"non-finite training loss or gradient at step {step_number} (loss={metrics['loss']}, "
                f"grad_norm={metrics['grad_norm']}); the update was discarded and no checkpoint "
                f"was written for it (last checkpoint: {checkpointer.latest_step()}). Lower the learning "
                f"rate, set grad_clip_norm, or check the data."
            )

    def save(step: int, eval_metrics: Mapping[str, float] | None = None) -> None:
        fetch_metrics()  # a step that went bad since the last log stops the run before any save
        bad = _non_finite_leaves(state)
        if bad:
            checkpointer.wait()
            raise NonFiniteError(
                f"non-finite values in the training state after step {step} (in {bad[:5]}); no "
                f"checkpoint was written for it (last checkpoint: {checkpointer.latest_step()}). Lower the "
                f"learning rate, set grad_clip_norm, or check the data."
            )
        writer.flush()  # the events up to this checkpoint survive a kill: a resume writes only later ones
        data_state = {"iterator": batches.get_state(), "train_window": window.state(), "dataset": dataset}
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
    # Batches are placed on the devices a few steps ahead, in a background thread; the
    # checkpointed iterator state is the one after the last batch the loop received.
    batches = prefetch_to_device(train_iter, 2, place=parallel.put_batch)
    try:
        with stop:
            while step < total_steps:
                state, metrics = train_step(state, next(batches))
                step += 1
                # Metrics stay on the device until the next log, evaluation or checkpoint.
                window.add(step, metrics)
                images_since += config.batch_size

                if step % config.log_every_steps == 0 or step == total_steps:
                    fetch_metrics()
                    last_train = window.take()
                    writer.write(step, "train", last_train, epoch=epoch_of(step))
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
                    fetch_metrics()
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
        _close_quietly(progress, writer, batches, train_iter, checkpointer)
        raise
    else:
        if progress is not None:
            progress.close()
        writer.close()
        batches.close()
        train_iter.close()
        checkpointer.close()

    if status == "completed" and primary and config.plots:
        from jaxcnn.train.plots import plot_curves

        plot_curves(read_metrics(workdir), os.path.join(workdir, "plots"))
        use_ema = bool(ema_decay and config.eval_use_ema)
        task.evaluation_extras(EvaluationContext(
            workdir, model, host_variables(parallel.get_state(state), use_ema=use_ema), eval_source,
            eval_preprocess, statistics=eval_stats,
        ))
    if not last_train:
        logged = [r for r in read_metrics(workdir) if r["split"] == "train" and r["step"] <= step]
        last_train = {
            k: v for k, v in (logged[-1] if logged else {}).items() if k not in ("step", "epoch", "split")
        }
    result: dict[str, Any] = {"step": step, "epoch": epoch_of(step), "status": status,
                              "data_folder": data_folder(train_source)}
    result.update({f"train_{k}": v for k, v in last_train.items()})
    result.update({f"eval_{k}": v for k, v in last_eval.items()})
    return result

