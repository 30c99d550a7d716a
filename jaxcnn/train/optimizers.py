"""Optimizers and learning-rate schedules built from a config.

The transformation built by :func:`make_optimizer` is, from gradient to update::

    MultiSteps(                                  # grad_accum_steps > 1: average k micro-batches
      multi_transform(                           # freeze: frozen params get zero updates
        chain(clip_by_global_norm,               # grad_clip_norm > 0
              add_decayed_weights(mask),         # coupled (L2) decay for optimizers without their own
              optimizer(schedule))))             # sgd / adam / adamw / any optax optimizer by name

Weight decay never touches biases or normalisation parameters (:func:`weight_decay_mask`).
Schedules count optimizer *updates*: with gradient accumulation over ``k`` micro-steps, a run of
``S`` train steps makes ``ceil(S / k)`` updates and the schedule spans those.
"""

from __future__ import annotations

import fnmatch
import inspect
import math
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import optax

PyTree = Any
SCHEDULES = ("constant", "step", "cosine", "warmup_cosine", "onecycle", "linear")
# Module-name fragments that mark a normalisation layer (flax auto-names: BatchNorm_0, ...).
_NORM_HINTS = ("norm", "bn", "batchnorm", "layernorm", "groupnorm")


def param_path(path: Sequence[Any]) -> str:
    """``"Conv_0/kernel"`` for a ``tree_flatten_with_path`` key path."""
    parts = []
    for key in path:
        for attr in ("key", "name", "idx"):
            if hasattr(key, attr):
                parts.append(str(getattr(key, attr)))
                break
        else:
            parts.append(str(key))
    return "/".join(parts)


def weight_decay_mask(params: PyTree) -> PyTree:
    """True for parameters to decay: weight matrices/kernels (ndim >= 2) outside norm layers.

    Biases and norm scales are 1-D, so ``ndim`` alone excludes them; the path test also excludes
    any higher-rank parameter living in a module whose name says it normalises.
    """

    def decays(path, leaf):
        name = param_path(path).lower()
        parts = name.split("/")
        in_norm = any(hint in part for part in parts[:-1] for hint in _NORM_HINTS)
        return bool(getattr(leaf, "ndim", 0) >= 2 and not in_norm and parts[-1] not in ("bias", "scale"))

    return jax.tree_util.tree_map_with_path(decays, params)


def matches_any(path: str, patterns: Sequence[str]) -> bool:
    """Glob match of a ``/``-joined param path; a pattern also matches everything below it."""
    return any(
        fnmatch.fnmatchcase(path, p) or fnmatch.fnmatchcase(path, p.rstrip("/") + "/*") for p in patterns
    )


def freeze_labels(params: PyTree, patterns: Sequence[str]) -> PyTree:
    """``"frozen"`` for params whose path matches a pattern, else ``"trainable"``.

    Patterns are globs on ``/``-joined paths, e.g. ``"Conv_0"`` (everything in that module) or
    ``"*/bias"``.
    """
    return jax.tree_util.tree_map_with_path(
        lambda path, _: "frozen" if matches_any(param_path(path), patterns) else "trainable", params
    )


def _with_standard_promotion(schedule: optax.Schedule) -> optax.Schedule:
    """Optax schedules mix bool/int/float internally (strict promotion rejects that)."""

    def wrapped(count):
        with jax.numpy_dtype_promotion("standard"):
            return schedule(count)

    return wrapped


def make_schedule(
    name: str,
    learning_rate: float,
    total_steps: int,
    *,
    warmup_steps: int = 0,
    end_learning_rate: float = 0.0,
    boundaries: Sequence[float] = (),
    decay_factor: float = 0.1,
    pct_start: float = 0.3,
    div_factor: float = 25.0,
    final_div_factor: float = 1e4,
) -> optax.Schedule:
    """A learning-rate schedule over ``total_steps`` optimizer updates.

    Args:
      name: ``"constant"``; ``"step"`` (multiply by ``decay_factor`` at each of ``boundaries``:
        ints are update counts, floats in ``(0, 1)`` fractions of ``total_steps``); ``"cosine"``
        (to ``end_learning_rate``); ``"warmup_cosine"`` (linear 0 -> peak over ``warmup_steps``,
        then cosine); ``"onecycle"`` (``optax.cosine_onecycle_schedule``); ``"linear"`` (decay
        to ``end_learning_rate``). A positive ``warmup_steps`` adds a linear warmup from 0 to
        every schedule but ``onecycle``, which warms up by ``pct_start`` itself.
    """
    op = "make_schedule"
    if name not in SCHEDULES:
        raise ValueError(f"{op}: unknown schedule.name={name!r}; expected one of {SCHEDULES}")
    if not learning_rate > 0:
        raise ValueError(f"{op}: optimizer.learning_rate must be > 0, got {learning_rate!r}")
    if not isinstance(total_steps, int) or total_steps < 1:
        raise ValueError(f"{op}: total_steps must be a positive int, got {total_steps!r}")
    if warmup_steps < 0 or (warmup_steps > 0 and warmup_steps >= total_steps):
        raise ValueError(
            f"{op}: schedule.warmup_steps={warmup_steps} must be in [0, total updates={total_steps})"
        )
    lr = float(learning_rate)
    return _with_standard_promotion(
        _make_schedule(
            name,
            lr,
            total_steps,
            warmup_steps,
            end_learning_rate,
            boundaries,
            decay_factor,
            pct_start,
            div_factor,
            final_div_factor,
        )
    )


def _make_schedule(
    name,
    lr,
    total_steps,
    warmup_steps,
    end_learning_rate,
    boundaries,
    decay_factor,
    pct_start,
    div_factor,
    final_div_factor,
) -> optax.Schedule:
    op = "make_schedule"
    decay_steps = max(total_steps - warmup_steps, 1)
    if name == "onecycle":
        return optax.cosine_onecycle_schedule(
            transition_steps=total_steps,
            peak_value=lr,
            pct_start=pct_start,
            div_factor=div_factor,
            final_div_factor=final_div_factor,
        )
    if name == "warmup_cosine":
        return optax.warmup_cosine_decay_schedule(
            init_value=0.0,
            peak_value=lr,
            warmup_steps=warmup_steps,
            decay_steps=total_steps,
            end_value=end_learning_rate,
        )
    if name == "constant":
        main = optax.constant_schedule(lr)
    elif name == "cosine":
        main = optax.cosine_decay_schedule(lr, decay_steps=decay_steps, alpha=end_learning_rate / lr)
    elif name == "linear":
        main = optax.linear_schedule(lr, end_learning_rate, transition_steps=decay_steps)
    else:  # step
        points = {}
        for b in boundaries:
            at = int(round(b * total_steps)) if isinstance(b, float) and 0 < b < 1 else int(b)
            if at < 1:
                raise ValueError(f"{op}: schedule.boundaries entries must be >= 1 or in (0, 1), got {b!r}")
            at = max(at - warmup_steps, 1)
            points[at] = points.get(at, 1.0) * decay_factor
        main = optax.piecewise_constant_schedule(lr, points)
    if warmup_steps > 0:
        warmup = optax.linear_schedule(0.0, lr, transition_steps=warmup_steps)
        return optax.join_schedules([warmup, main], [warmup_steps])
    return main


def standard_promotion(tx: optax.GradientTransformation) -> optax.GradientTransformationExtraArgs:
    """``tx`` with its ``init``/``update`` traced under JAX's standard dtype promotion.

    Optax computes e.g. Adam's bias correction as ``decay ** count`` (weak float ** int32),
    which ``jax_numpy_dtype_promotion="strict"`` rejects; the rest of the step stays strict.
    """

    def init(params):
        with jax.numpy_dtype_promotion("standard"):
            return tx.init(params)

    def update(updates, state, params=None, **extra_args):
        with jax.numpy_dtype_promotion("standard"):
            if isinstance(tx, optax.GradientTransformationExtraArgs):
                return tx.update(updates, state, params, **extra_args)
            return tx.update(updates, state, params)

    return optax.GradientTransformationExtraArgs(init, update)


def make_base_optimizer(
    name: str,
    learning_rate: optax.ScalarOrSchedule,
    *,
    weight_decay: float = 0.0,
    momentum: float | None = None,
    nesterov: bool = False,
    **kwargs: Any,
) -> optax.GradientTransformation:
    """``sgd`` (momentum, nesterov), ``adam``, ``adamw`` or any ``optax.<name>`` optimizer.

    Weight decay goes to the optimizer's own ``weight_decay``/``mask`` arguments when it has them
    (AdamW-style, decoupled); otherwise it is added to the gradient (L2, ``add_decayed_weights``).
    Either way it skips biases and norm parameters.
    """
    op = "make_base_optimizer"
    if weight_decay < 0:
        raise ValueError(f"{op}: optimizer.weight_decay must be >= 0, got {weight_decay!r}")
    if name == "sgd":
        opt = optax.sgd(learning_rate, momentum=momentum or None, nesterov=bool(nesterov), **kwargs)
        own_decay = False
    else:
        factory = getattr(optax, name, None)
        if factory is None or not callable(factory) or isinstance(factory, type):
            raise ValueError(
                f"{op}: unknown optimizer.name={name!r}; expected 'sgd', 'adam', 'adamw' or the name of "
                f"an optax optimizer"
            )
        accepted = inspect.signature(factory).parameters
        if momentum is not None and "momentum" in accepted:
            kwargs["momentum"] = momentum
        if nesterov and "nesterov" in accepted:
            kwargs["nesterov"] = True
        own_decay = "weight_decay" in accepted and "mask" in accepted
        if own_decay:
            kwargs["weight_decay"] = weight_decay
            kwargs["mask"] = weight_decay_mask
        unknown = sorted(set(kwargs) - set(accepted))
        if unknown:
            raise ValueError(f"{op}: optax.{name} does not take {unknown}; it takes {sorted(accepted)}")
        opt = factory(learning_rate, **kwargs)
    if weight_decay > 0 and not own_decay:
        opt = optax.chain(optax.add_decayed_weights(weight_decay, mask=weight_decay_mask), opt)
    return standard_promotion(opt)


def _get(config: Any, name: str, default: Any = None) -> Any:
    if isinstance(config, Mapping):
        return config.get(name, default)
    return getattr(config, name, default) if hasattr(config, name) else default


def make_optimizer(config: Any, total_steps: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """The full optimizer of a training config (see ``jaxcnn.train.config``) and its schedule.

    Args:
      config: reads ``optimizer.*``, ``schedule.*``, ``grad_clip_norm``, ``grad_accum_steps`` and
        ``freeze``.
      total_steps: train steps of the run (micro-steps when accumulating gradients).

    Returns:
      ``(tx, schedule)``; ``schedule(update_count)`` is the learning rate after
      ``update_count = step // grad_accum_steps`` updates.
    """
    op = "make_optimizer"
    accum = int(_get(config, "grad_accum_steps", 1) or 1)
    if accum < 1:
        raise ValueError(f"{op}: grad_accum_steps must be >= 1, got {accum}")
    opt_cfg = _get(config, "optimizer")
    sched_cfg = _get(config, "schedule") or {}
    updates = max(math.ceil(total_steps / accum), 1)
    schedule = make_schedule(
        _get(sched_cfg, "name", "constant"),
        float(_get(opt_cfg, "learning_rate")),
        updates,
        warmup_steps=int(_get(sched_cfg, "warmup_steps", 0) or 0),
        end_learning_rate=float(_get(sched_cfg, "end_learning_rate", 0.0) or 0.0),
        boundaries=tuple(_get(sched_cfg, "boundaries", ()) or ()),
        decay_factor=float(_get(sched_cfg, "decay_factor", 0.1)),
        pct_start=float(_get(sched_cfg, "pct_start", 0.3)),
        div_factor=float(_get(sched_cfg, "div_factor", 25.0)),
        final_div_factor=float(_get(sched_cfg, "final_div_factor", 1e4)),
    )
    extra = dict(_get(opt_cfg, "kwargs", {}) or {})
    base = make_base_optimizer(
        _get(opt_cfg, "name", "sgd"),
        schedule,
        weight_decay=float(_get(opt_cfg, "weight_decay", 0.0) or 0.0),
        momentum=_get(opt_cfg, "momentum", None),
        nesterov=bool(_get(opt_cfg, "nesterov", False)),
        **extra,
    )
    clip = float(_get(config, "grad_clip_norm", 0.0) or 0.0)
    if clip < 0:
        raise ValueError(f"{op}: grad_clip_norm must be >= 0 (0 = off), got {clip}")
    tx = optax.chain(optax.clip_by_global_norm(clip), base) if clip > 0 else base
    freeze = tuple(_get(config, "freeze", ()) or ())
    if isinstance(_get(config, "freeze", ()), str):
        raise TypeError(f"{op}: freeze must be a list of path patterns, got the string {freeze!r}")
    if freeze:
        tx = optax.multi_transform(
            {"trainable": tx, "frozen": optax.set_to_zero()},
            lambda params: freeze_labels(params, freeze),
        )
    if accum > 1:
        tx = optax.MultiSteps(tx, every_k_schedule=accum).gradient_transformation()
    return standard_promotion(tx), schedule
