"""The training objective of denoising diffusion (Ho et al. 2020, "L_simple")."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from jaxcnn.diffusion import guidance
from jaxcnn.diffusion import process as P
from jaxcnn.diffusion.schedules import NoiseSchedule


def diffusion_loss(
    apply_fn: Callable,
    params: Any,
    key: jax.Array,
    x0: jax.Array,
    schedule: NoiseSchedule,
    *,
    labels: jax.Array | None = None,
    num_classes: int | None = None,
    label_dropout: float = 0.0,
    prediction: str = "epsilon",
    reduction: str = "mean",
) -> jax.Array:
    """Mean squared error of the model's prediction at a random timestep: a scalar (or ``(N,)``).

    ``apply_fn(params, x_t, t, labels) -> (N, ...)``, with ``x_t: (N, ...)``, ``t: (N,)`` int32 and
    ``labels: (N,)`` int32 or None. ``x0: (N, ...)`` clean data (images scaled to [-1, 1]).
    For each example ``t ~ U{0..T-1}``, ``noise ~ N(0, I)``, ``x_t = q_sample(x0, t, noise)``;
    the target is ``noise`` (``prediction="epsilon"``) or ``v = sqrt(abar) noise - sqrt(1-abar) x0``
    (``"v"``). With ``labels`` (in ``[0, num_classes)``) each label is replaced by the null label
    ``num_classes`` with probability ``label_dropout``, for classifier-free guidance.
    ``reduction``: ``"mean"`` (scalar) or ``"none"`` (per example, ``(N,)``).
    """
    op = "diffusion_loss"
    P.check_schedule(schedule, op)
    P.check_prediction(prediction, op)
    if reduction not in ("mean", "none"):
        raise ValueError(f"{op}: unknown reduction={reduction!r}; expected 'mean' or 'none'")
    x0 = P.check_batch(x0, "x0", op)
    n = x0.shape[0]
    labels = guidance.check_labels(labels, num_classes, n, op)
    if isinstance(label_dropout, bool) or not isinstance(label_dropout, (int, float)) or not 0.0 <= label_dropout < 1.0:
        raise ValueError(f"{op}: label_dropout must be a number in [0, 1), got {label_dropout!r}")
    if label_dropout > 0 and labels is None:
        raise ValueError(f"{op}: label_dropout={label_dropout} needs labels, but labels is None")
    key_t, key_noise, key_drop = jax.random.split(key, 3)
    t = jax.random.randint(key_t, (n,), 0, schedule.num_timesteps, dtype=jnp.int32)
    noise = jax.random.normal(key_noise, x0.shape, x0.dtype)
    xt = P.q_sample(schedule, x0, t, noise)
    if labels is not None and label_dropout > 0:
        labels = jnp.where(jax.random.bernoulli(key_drop, label_dropout, (n,)), num_classes, labels)
    output = apply_fn(params, xt, t, labels)
    if output.shape != x0.shape:
        raise ValueError(f"{op}: apply_fn must return x0's shape {tuple(x0.shape)}, got {tuple(output.shape)}")
    target = noise if prediction == "epsilon" else P.v_target(schedule, x0, t, noise)
    per_example = jnp.mean(jnp.square(output.astype(jnp.float32) - target.astype(jnp.float32)),
                           axis=tuple(range(1, x0.ndim)))
    return jnp.mean(per_example) if reduction == "mean" else per_example
