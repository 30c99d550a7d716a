"""Train and eval step factories for any linen model, task and optax optimizer.

A step is a pure function ``(state, batch) -> ...`` meant for ``jax.jit``. Given ``axis_name``,
it also runs per device under ``jax.shard_map``/``jax.pmap``: gradients, BatchNorm statistics
(through the model's own ``axis_name``) and metrics are averaged over that axis, so every
device holds the same state. See ``jaxcnn.train.parallel`` for the wrappers.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from jaxcnn.train.state import TrainState, apply_optimizer
from jaxcnn.train.tasks import Task, model_inputs

__all__ = ["DROPOUT_STREAMS", "make_eval_step", "make_train_step", "model_inputs", "predict_classes"]

# The PRNG streams a training step hands the model: "dropout" is drawn per device (what any
# flax.linen.Dropout reads); "global_dropout" is the same on every device, for layers that draw
# per example from the example's global index (jaxcnn.nn.Dropout), which makes every parallel
# mode and device count draw the masks of single-device training.
DROPOUT_STREAMS = ("dropout", "global_dropout")

Batch = Mapping[str, jax.Array]
Metrics = dict[str, jax.Array]


def _mean_over(tree: Any, axis_name: str | None) -> Any:
    return tree if axis_name is None else jax.lax.pmean(tree, axis_name)


def make_train_step(
    model: nn.Module,
    task: Task,
    tx: optax.GradientTransformation,
    *,
    axis_name: str | None = None,
    ema_decay: float | None = None,
    learning_rate_fn: optax.Schedule | None = None,
    grad_accum_steps: int = 1,
    preprocess: Callable[[jax.Array, Batch], Batch] | None = None,
) -> Callable[[TrainState, Batch], tuple[TrainState, Metrics]]:
    """Returns ``train_step(state, batch) -> (new_state, metrics)``.

    Args:
      model: linen module, called through ``task.forward`` as ``model.apply(variables, x,
        train=True, mutable=["batch_stats"], rngs=...)`` with the two :data:`DROPOUT_STREAMS`:
        ``"dropout"`` (a key per step and device) and ``"global_dropout"`` (a key per step, the
        same on every device; ``jaxcnn.nn.Dropout`` folds each example's global index into it,
        so every parallel mode draws the masks of one device). Under ``axis_name`` its
        BatchNorm and ``jaxcnn.nn.Dropout`` layers should carry the same ``axis_name``.
      task: a :class:`jaxcnn.train.tasks.Task`: forward, loss, statistics, metrics.
      tx: optimizer; its state lives in ``state.opt_state``.
      axis_name: the device axis when run per device (``shard_map``/``pmap``), else ``None``.
      ema_decay: when set, ``ema_params <- decay * ema_params + (1 - decay) * params`` after
        every step (micro-steps included under accumulation, as params only move on updates).
      learning_rate_fn: the schedule, only to report ``learning_rate`` in the metrics.
      grad_accum_steps: micro-steps per optimizer update (to read the schedule at the update count).
      preprocess: ``preprocess(key, batch) -> batch`` run on the device before the model, e.g.
        ``jaxcnn.data.augment`` functions (random crops, flips, normalisation); its key is
        drawn per step like the dropout key.

    Metrics (float32 scalars, identical on every device): ``loss``, ``task.metrics`` of the
    batch's device-summed statistics (e.g. ``accuracy``), ``grad_norm`` (global L2 norm of the averaged gradient), ``learning_rate``
    when known, and ``finite`` (1.0 when loss and gradients are finite). A non-finite step
    leaves the state unchanged, so the caller can stop without a poisoned state in hand.
    """

    op = "make_train_step"
    if not isinstance(tx, optax.GradientTransformation):
        raise TypeError(f"{op}: tx must be an optax.GradientTransformation, got {type(tx).__name__}")
    if ema_decay is not None and not 0.0 < float(ema_decay) < 1.0:
        raise ValueError(f"{op}: ema_decay must be in (0, 1), got {ema_decay!r}")
    if not isinstance(grad_accum_steps, int) or grad_accum_steps < 1:
        raise ValueError(f"{op}: grad_accum_steps must be an int >= 1, got {grad_accum_steps!r}")

    def train_step(state: TrainState, batch: Batch) -> tuple[TrainState, Metrics]:
        # Keys depend only on (seed, step[, device]) so a resumed run draws the same ones.
        step_key = jax.random.fold_in(state.rng, state.step)
        global_dropout_key, dropout_key, task_key, preprocess_key = jax.random.split(step_key, 4)
        if axis_name is not None:
            device = jax.lax.axis_index(axis_name)
            dropout_key, task_key, preprocess_key = (
                jax.random.fold_in(k, device) for k in (dropout_key, task_key, preprocess_key)
            )
        if preprocess is not None:
            batch = preprocess(preprocess_key, dict(batch))
        rngs = {"dropout": dropout_key, "global_dropout": global_dropout_key}

        def loss_fn(params):
            variables = {"params": params}
            if state.batch_stats:
                variables["batch_stats"] = state.batch_stats
            mutated: dict[str, Any] = {}

            def apply(*args, **kwargs):
                out, new = model.apply(variables, *args, train=True, mutable=["batch_stats"], rngs=rngs, **kwargs)
                mutated.update(new)  # the last call's BatchNorm statistics are the ones kept
                return out

            outputs = _float32(task.forward(apply, batch, task_key, train=True))
            return task.loss(outputs, batch), (outputs, dict(mutated))

        (loss, (outputs, mutated)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        # Each device holds the mean over its equal share of the batch, so the mean of the
        # means is the gradient of the global-batch mean loss.
        grads = _mean_over(grads, axis_name)
        stats = task.statistics(outputs, batch)
        stats = stats if axis_name is None else jax.lax.psum(stats, axis_name)
        loss = _mean_over(loss, axis_name)

        grad_norm = optax.tree.norm(grads)
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        batch_stats = mutated.get("batch_stats", state.batch_stats)

        def update(state: TrainState) -> TrainState:
            params, opt_state = apply_optimizer(tx, grads, state.opt_state, state.params)
            ema_params = state.ema_params
            if ema_decay is not None and ema_params is not None:
                ema_params = jax.tree.map(lambda e, p: ema_decay * e + (1.0 - ema_decay) * p, ema_params, params)
            return state.replace(
                step=state.step + 1,
                params=params,
                batch_stats=batch_stats,
                opt_state=opt_state,
                ema_params=ema_params,
            )

        # A bad step keeps the old state: the loop raises, and nothing non-finite is saved.
        # A branch rather than a select over the whole state: a select is one more pass over
        # parameters and optimizer state, and the branch also keeps the optimizer update out
        # of the backward pass's fusions (docs/cpu_backend.md has the measurement).
        new_state = jax.lax.cond(finite, update, lambda state: state, state)

        metrics = {"loss": loss.astype(jnp.float32), "grad_norm": grad_norm.astype(jnp.float32)}
        metrics.update({k: jnp.asarray(v, jnp.float32) for k, v in task.metrics(stats).items()})
        if learning_rate_fn is not None:
            metrics["learning_rate"] = jnp.asarray(
                learning_rate_fn(state.step // grad_accum_steps), jnp.float32
            )
        metrics["finite"] = finite.astype(jnp.float32)
        return new_state, metrics

    return train_step


def _float32(outputs: Any) -> Any:
    """Floating leaves of the outputs as float32 (a bfloat16 model still gets an f32 loss)."""
    return jax.tree.map(lambda o: o.astype(jnp.float32) if jnp.issubdtype(o.dtype, jnp.floating) else o, outputs)


def make_eval_step(
    model: nn.Module,
    task: Task,
    *,
    axis_name: str | None = None,
    use_ema: bool = False,
    preprocess: Callable[[Any, Batch], Batch] | None = None,
) -> Callable[[TrainState, Batch], dict[str, jax.Array]]:
    """Returns ``eval_step(state, batch) -> statistics`` (``task.statistics``, summed over devices).

    Runs the model in inference mode (running BatchNorm statistics, no dropout), with
    ``state.ema_params`` when ``use_ema`` and EMA is on. Padding examples (``batch["mask"] == 0``)
    count for nothing; sum the results over batches with ``tasks.add_statistics`` and turn them
    into metrics with ``task.summarize``. ``preprocess(None, batch)`` (deterministic, e.g.
    normalisation) runs before the model.
    """

    def eval_step(state: TrainState, batch: Batch) -> dict[str, jax.Array]:
        if preprocess is not None:
            batch = preprocess(None, dict(batch))
        variables = state.variables(use_ema=use_ema)
        # A fixed key (per device): evaluation draws the same noise, timesteps ... every time.
        key = jax.random.PRNGKey(0)
        if axis_name is not None:
            key = jax.random.fold_in(key, jax.lax.axis_index(axis_name))
        outputs = task.forward(lambda *a, **kw: model.apply(variables, *a, train=False, **kw), batch, key, train=False)
        stats = task.statistics(_float32(outputs), batch)
        if axis_name is None:
            return stats
        gathered = task.gathered_statistics
        # Per-example rows are stacked over the devices in device order (the batch's order).
        return {
            k: jax.lax.all_gather(v, axis_name, tiled=True) if k in gathered else jax.lax.psum(v, axis_name)
            for k, v in stats.items()
        }

    return eval_step


def predict_classes(
    model: nn.Module, state: TrainState, images: jax.Array, *, use_ema: bool = False
) -> jax.Array:
    """``(N,)`` (or ``(N, H, W)``) argmax class ids in inference mode; ``images``: ``(N, H, W, C)``."""
    outputs = model.apply(state.variables(use_ema=use_ema), model_inputs({"image": images}), train=False)
    return jnp.argmax(outputs, axis=-1)
