"""Samplers: DDPM ancestral sampling and DDIM, pure functions of a key, one ``lax.scan`` each.

``model_fn(x_t, t, labels) -> (N, ...)`` is the trained network with its parameters bound
(e.g. ``lambda x, t, y: model.apply(variables, x, t, y)``), predicting epsilon or ``v``
(``prediction``). Both samplers run on a sub-sequence of ``steps`` timesteps of the ``T``
the model was trained with, evenly spaced from ``T-1`` down to ``0`` (``steps = T``: all);
the last step lands on the clean data (``alpha_bar = 1``) with no noise added.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxcnn.diffusion import guidance
from jaxcnn.diffusion import process as P
from jaxcnn.diffusion.schedules import NoiseSchedule

SAMPLERS = ("ddpm", "ddim")


def sampling_timesteps(num_timesteps: int, steps: int | None = None) -> np.ndarray:
    """The ``steps`` timesteps a sampler visits, ``(steps,)`` int32, descending from ``T-1`` to ``0``.

    Evenly spaced and rounded (distinct for ``steps <= T``); ``steps=None`` means all ``T``;
    ``steps=1`` is ``[T-1]``.
    """
    if steps is None:
        steps = num_timesteps
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or not 1 <= steps <= num_timesteps:
        raise ValueError(
            f"steps must be an int in [1, {num_timesteps}] (the number of training timesteps), got {steps!r}"
        )
    return np.round(np.linspace(num_timesteps - 1, 0, int(steps))).astype(np.int32)


def _check_shape(shape, op: str) -> tuple[int, ...]:
    if isinstance(shape, (str, bytes)) or not isinstance(shape, Sequence) or len(shape) < 1 or any(
        isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 1 for s in shape
    ):
        raise ValueError(f"{op}: shape must be a sequence of positive ints (N, ...), got {shape!r}")
    return tuple(int(s) for s in shape)


def _check_common(schedule, steps, labels, num_classes, guidance_scale, prediction, clip_x0, batch, op):
    P.check_schedule(schedule, op)
    P.check_prediction(prediction, op)
    try:
        timesteps = sampling_timesteps(schedule.num_timesteps, steps)
    except ValueError as err:
        raise ValueError(f"{op}: {err}") from None
    guidance.check_guidance(guidance_scale, labels, op)
    labels = guidance.check_labels(labels, num_classes, batch, op)
    if clip_x0 is not None and (isinstance(clip_x0, bool) or not isinstance(clip_x0, (int, float)) or clip_x0 <= 0):
        raise ValueError(f"{op}: clip_x0 must be None or a positive number, got {clip_x0!r}")
    return timesteps, labels


def _levels(schedule: NoiseSchedule, timesteps: np.ndarray) -> tuple[jax.Array, jax.Array]:
    """``alpha_bar`` at each visited timestep and at the one after it (1 after the last: the data)."""
    abar = schedule.alphas_cumprod[timesteps]
    return abar, jnp.concatenate([abar[1:], jnp.ones((1,), abar.dtype)])


def _predict(model_fn, schedule, x, t, abar, labels, guidance_scale, num_classes, prediction, clip_x0):
    """The model's ``(eps, x0)`` at ``(x, t)``; with ``clip_x0`` the clean image is clipped and eps made consistent."""
    tt = jnp.full((x.shape[0],), t, dtype=jnp.int32)
    output = guidance.guided_output(model_fn, x, tt, labels, guidance_scale, num_classes)
    if output.shape != x.shape:
        raise ValueError(f"model_fn must return x's shape {tuple(x.shape)}, got {tuple(output.shape)}")
    eps, x0 = P.epsilon_and_x0(schedule, x, tt, output, prediction)
    if clip_x0 is not None:
        x0 = jnp.clip(x0, -clip_x0, clip_x0)
        eps = (x - jnp.sqrt(abar) * x0) / jnp.sqrt(1.0 - abar)
    return eps, x0


def _initial(key, shape, x_T, op):
    key_init, key_steps = jax.random.split(key)
    if x_T is None:
        return jax.random.normal(key_init, shape, jnp.float32), key_steps
    x_T = jnp.asarray(x_T)
    if x_T.shape != shape:
        raise ValueError(f"{op}: x_T must have shape {shape}, got {tuple(x_T.shape)}")
    return x_T, key_steps


def _run(step, x, xs, return_trajectory):
    def body(x, inputs):
        x = step(x, *inputs)
        return x, (x if return_trajectory else None)

    x, trajectory = jax.lax.scan(body, x, xs)
    return (x, trajectory) if return_trajectory else x


def ddpm_sample(
    model_fn: Callable,
    schedule: NoiseSchedule,
    key: jax.Array,
    shape: Sequence[int],
    *,
    steps: int | None = None,
    labels: jax.Array | None = None,
    num_classes: int | None = None,
    guidance_scale: float = 0.0,
    prediction: str = "epsilon",
    clip_x0: float | None = None,
    x_T: jax.Array | None = None,
    return_trajectory: bool = False,
):
    """Ancestral sampling (DDPM, Ho et al. 2020 Alg. 2): ``x_{s} ~ q(x_s | x_t, x0_hat(x_t))`` step by step.

    Returns samples ``shape = (N, ...)`` (and, with ``return_trajectory``, the state after each
    step ``(steps, N, ...)``). The reverse variance is the posterior's ``beta_tilde`` ("fixed
    small"). With ``steps < T`` the chain is respaced (Nichol & Dhariwal 2021): between visited
    timesteps ``t > s``, ``beta = 1 - abar_t / abar_s``. ``labels: (N,)`` in ``[0, num_classes)``
    for a class-conditional model, ``guidance_scale`` as in :mod:`jaxcnn.diffusion.guidance`;
    ``clip_x0`` clips the predicted clean image to ``[-clip_x0, clip_x0]`` (1.0 for images in
    [-1, 1]); ``x_T`` replaces the initial noise drawn from ``key``.
    """
    op = "ddpm_sample"
    shape = _check_shape(shape, op)
    timesteps, labels = _check_common(
        schedule, steps, labels, num_classes, guidance_scale, prediction, clip_x0, shape[0], op)
    x, key = _initial(key, shape, x_T, op)
    abar_t, abar_s = _levels(schedule, timesteps)
    if len(timesteps) == schedule.num_timesteps:
        betas = schedule.betas[timesteps]  # exact; 1 - abar_t / abar_s would lose digits where beta is small
    else:
        betas = 1.0 - abar_t / abar_s

    def step(x, t, abar_t, abar_s, beta, key):
        _, x0 = _predict(model_fn, schedule, x, t, abar_t, labels, guidance_scale, num_classes, prediction, clip_x0)
        mean = (jnp.sqrt(abar_s) * beta / (1.0 - abar_t)) * x0 + (jnp.sqrt(1.0 - beta) * (1.0 - abar_s) / (1.0 - abar_t)) * x
        variance = beta * (1.0 - abar_s) / (1.0 - abar_t)
        return mean + jnp.sqrt(variance) * jax.random.normal(key, x.shape, x.dtype)

    keys = jax.random.split(key, len(timesteps))
    return _run(step, x, (jnp.asarray(timesteps), abar_t, abar_s, betas, keys), return_trajectory)


def ddim_sample(
    model_fn: Callable,
    schedule: NoiseSchedule,
    key: jax.Array,
    shape: Sequence[int],
    *,
    steps: int | None = None,
    eta: float = 0.0,
    labels: jax.Array | None = None,
    num_classes: int | None = None,
    guidance_scale: float = 0.0,
    prediction: str = "epsilon",
    clip_x0: float | None = None,
    x_T: jax.Array | None = None,
    return_trajectory: bool = False,
):
    """DDIM (Song et al. 2021, eq. 12): ``x_s = sqrt(abar_s) x0_hat + sqrt(1 - abar_s - sigma^2) eps_hat + sigma z``.

    ``sigma = eta * sqrt((1 - abar_s) / (1 - abar_t) * (1 - abar_t / abar_s))``: ``eta = 0`` is
    deterministic given ``x_T``, ``eta = 1`` is DDPM's ancestral step. Other arguments as in
    :func:`ddpm_sample`.
    """
    op = "ddim_sample"
    shape = _check_shape(shape, op)
    timesteps, labels = _check_common(
        schedule, steps, labels, num_classes, guidance_scale, prediction, clip_x0, shape[0], op)
    if isinstance(eta, bool) or not isinstance(eta, (int, float)) or eta < 0:
        raise ValueError(f"{op}: eta must be a number >= 0, got {eta!r}")
    x, key = _initial(key, shape, x_T, op)
    abar_t, abar_s = _levels(schedule, timesteps)

    def step(x, t, abar_t, abar_s, key):
        eps, x0 = _predict(model_fn, schedule, x, t, abar_t, labels, guidance_scale, num_classes, prediction, clip_x0)
        sigma = eta * jnp.sqrt((1.0 - abar_s) / (1.0 - abar_t) * (1.0 - abar_t / abar_s))
        direction = jnp.sqrt(jnp.maximum(1.0 - abar_s - sigma**2, 0.0))
        x = jnp.sqrt(abar_s) * x0 + direction * eps
        if eta:
            x = x + sigma * jax.random.normal(key, x.shape, x.dtype)
        return x

    keys = jax.random.split(key, len(timesteps))
    return _run(step, x, (jnp.asarray(timesteps), abar_t, abar_s, keys), return_trajectory)


def ddim_invert(
    model_fn: Callable,
    schedule: NoiseSchedule,
    x0: jax.Array,
    *,
    steps: int | None = None,
    labels: jax.Array | None = None,
    num_classes: int | None = None,
    guidance_scale: float = 0.0,
    prediction: str = "epsilon",
    fixed_point_iterations: int = 0,
) -> jax.Array:
    """Deterministic DDIM encoding ``x0 -> x_T``: the eta = 0 update run upwards, ``(N, ...)``.

    Visits the timesteps of :func:`ddim_sample` with the same ``steps`` in ascending order. A
    DDIM step from ``x_t`` down to level ``s`` is ``x_s = sqrt(abar_s / abar_t) (x_t - sqrt(1 -
    abar_t) eps(x_t)) + sqrt(1 - abar_s) eps(x_t)``; solved for ``x_t`` it is implicit in ``eps(x_t)``.
    With ``fixed_point_iterations = 0`` (Song et al.'s encoder) ``eps`` is taken at the level
    being left (the first step, from the data, at timestep 0), so decoding reconstructs ``x0``
    only up to a discretisation error that shrinks as ``steps`` grows; each fixed-point
    iteration re-evaluates ``eps`` at the current estimate of ``x_t``, and once they converge
    :func:`ddim_sample` with ``x_T=ddim_invert(...)`` returns ``x0`` to rounding error.
    """
    op = "ddim_invert"
    x0 = P.check_batch(x0, "x0", op)
    timesteps, labels = _check_common(
        schedule, steps, labels, num_classes, guidance_scale, prediction, None, x0.shape[0], op)
    if isinstance(fixed_point_iterations, bool) or not isinstance(fixed_point_iterations, int) or fixed_point_iterations < 0:
        raise ValueError(f"{op}: fixed_point_iterations must be an int >= 0, got {fixed_point_iterations!r}")
    ascending = timesteps[::-1]
    left_at = np.concatenate([ascending[:1], ascending[:-1]])  # timestep at which the explicit eps is taken
    abar_t = schedule.alphas_cumprod[ascending]
    abar_s = jnp.concatenate([jnp.ones((1,), abar_t.dtype), abar_t[:-1]])

    def eps_at(x, t):
        tt = jnp.full((x.shape[0],), t, dtype=jnp.int32)
        output = guidance.guided_output(model_fn, x, tt, labels, guidance_scale, num_classes)
        return P.epsilon_and_x0(schedule, x, tt, output, prediction)[0]

    def step(x_s, t, t_left, abar_t, abar_s):
        up = lambda eps: jnp.sqrt(abar_t / abar_s) * (x_s - jnp.sqrt(1.0 - abar_s) * eps) + jnp.sqrt(1.0 - abar_t) * eps  # noqa: E731
        x_t = up(eps_at(x_s, t_left))
        return jax.lax.fori_loop(0, fixed_point_iterations, lambda _, x_t: up(eps_at(x_t, t)), x_t)

    return _run(step, x0, (jnp.asarray(ascending), jnp.asarray(left_at), abar_t, abar_s), False)


def sample(
    model_fn: Callable,
    schedule: NoiseSchedule,
    key: jax.Array,
    shape: Sequence[int],
    *,
    sampler: str = "ddim",
    steps: int | None = None,
    eta: float = 0.0,
    **kwargs,
):
    """:func:`ddpm_sample` (``sampler="ddpm"``) or :func:`ddim_sample` (``"ddim"``, with ``eta``)."""
    if sampler == "ddpm":
        if eta:
            raise ValueError(f"sample: eta={eta!r} applies to sampler='ddim' only")
        return ddpm_sample(model_fn, schedule, key, shape, steps=steps, **kwargs)
    if sampler == "ddim":
        return ddim_sample(model_fn, schedule, key, shape, steps=steps, eta=eta, **kwargs)
    raise ValueError(f"sample: unknown sampler={sampler!r}; expected one of {SAMPLERS}")
