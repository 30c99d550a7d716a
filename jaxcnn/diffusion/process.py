"""The forward (noising) process, its posterior, and the conversions between the model's targets.

Every function takes a batch ``x: (N, ...)`` (any trailing shape, e.g. ``(N, H, W, C)``) and
integer timesteps ``t: (N,)`` in ``[0, T)``; per-timestep coefficients are gathered at ``t``
and broadcast over the trailing axes.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxcnn.diffusion.schedules import NoiseSchedule

PREDICTIONS = ("epsilon", "v")


def check_schedule(schedule, op: str) -> None:
    if not isinstance(schedule, NoiseSchedule):
        raise TypeError(f"{op}: schedule must be a NoiseSchedule (see make_schedule), got {type(schedule).__name__}")


def check_batch(x, name: str, op: str) -> jax.Array:
    x = jnp.asarray(x)
    if x.ndim < 1 or x.shape[0] < 1:
        raise ValueError(f"{op}: {name} must be a non-empty batch (N, ...), got shape {tuple(x.shape)}")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"{op}: {name} must be floating, got dtype {x.dtype}")
    return x


def check_timesteps(t, batch: int, op: str) -> jax.Array:
    t = jnp.asarray(t)
    if not jnp.issubdtype(t.dtype, jnp.integer):
        raise TypeError(f"{op}: t must be integer timesteps, got dtype {t.dtype}")
    if t.shape != (batch,):
        raise ValueError(f"{op}: t must be (N,) = ({batch},), got shape {tuple(t.shape)}")
    return t


def check_prediction(prediction: str, op: str) -> None:
    if prediction not in PREDICTIONS:
        raise ValueError(f"{op}: unknown prediction={prediction!r}; expected one of {PREDICTIONS}")


def _at(values: jax.Array, t: jax.Array, x: jax.Array) -> jax.Array:
    """``values[t]`` shaped ``(N, 1, ..., 1)`` to broadcast over ``x`` (explicitly: rank promotion may be off)."""
    return values[t].astype(x.dtype).reshape((t.shape[0],) + (1,) * (x.ndim - 1))


def q_sample(schedule: NoiseSchedule, x0: jax.Array, t: jax.Array, noise: jax.Array) -> jax.Array:
    """``x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) noise``: a draw of ``q(x_t | x_0)`` (DDPM eq. 4).

    ``x0, noise: (N, ...)``, ``t: (N,)`` int; returns ``(N, ...)``.
    """
    check_schedule(schedule, "q_sample")
    x0 = check_batch(x0, "x0", "q_sample")
    noise = check_batch(noise, "noise", "q_sample")
    if noise.shape != x0.shape:
        raise ValueError(f"q_sample: noise must have x0's shape {tuple(x0.shape)}, got {tuple(noise.shape)}")
    t = check_timesteps(t, x0.shape[0], "q_sample")
    abar = _at(schedule.alphas_cumprod, t, x0)
    return jnp.sqrt(abar) * x0 + jnp.sqrt(1.0 - abar) * noise


def q_posterior(schedule: NoiseSchedule, x0: jax.Array, xt: jax.Array, t: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Mean ``(N, ...)`` and variance ``(N, 1, ..., 1)`` of ``q(x_{t-1} | x_t, x_0)`` (DDPM eq. 6-7).

    ``mean = sqrt(abar_{t-1}) beta_t / (1 - abar_t) x0 + sqrt(alpha_t) (1 - abar_{t-1}) / (1 - abar_t) xt``,
    ``variance = (1 - abar_{t-1}) / (1 - abar_t) beta_t``; at ``t = 0`` the mean is ``x0`` and the variance 0.
    """
    check_schedule(schedule, "q_posterior")
    x0 = check_batch(x0, "x0", "q_posterior")
    xt = check_batch(xt, "xt", "q_posterior")
    if xt.shape != x0.shape:
        raise ValueError(f"q_posterior: xt must have x0's shape {tuple(x0.shape)}, got {tuple(xt.shape)}")
    t = check_timesteps(t, x0.shape[0], "q_posterior")
    mean = _at(schedule.posterior_mean_coef_x0, t, x0) * x0 + _at(schedule.posterior_mean_coef_xt, t, x0) * xt
    return mean, _at(schedule.posterior_variance, t, x0)


def x0_from_epsilon(schedule: NoiseSchedule, xt: jax.Array, t: jax.Array, eps: jax.Array) -> jax.Array:
    """``x0 = (xt - sqrt(1 - abar_t) eps) / sqrt(abar_t)`` (inverts :func:`q_sample`)."""
    abar = _at(schedule.alphas_cumprod, t, xt)
    return (xt - jnp.sqrt(1.0 - abar) * eps) / jnp.sqrt(abar)


def v_target(schedule: NoiseSchedule, x0: jax.Array, t: jax.Array, noise: jax.Array) -> jax.Array:
    """The v-prediction target of Salimans & Ho (2022): ``v = sqrt(abar_t) noise - sqrt(1 - abar_t) x0``."""
    abar = _at(schedule.alphas_cumprod, t, x0)
    return jnp.sqrt(abar) * noise - jnp.sqrt(1.0 - abar) * x0


def epsilon_and_x0(
    schedule: NoiseSchedule, xt: jax.Array, t: jax.Array, output: jax.Array, prediction: str = "epsilon"
) -> tuple[jax.Array, jax.Array]:
    """The noise and the clean image ``(eps, x0)`` implied by a model ``output`` at ``(xt, t)``.

    ``prediction="epsilon"``: output is the noise; ``"v"``: output is ``v``, and
    ``x0 = sqrt(abar) xt - sqrt(1 - abar) v``, ``eps = sqrt(1 - abar) xt + sqrt(abar) v``.
    """
    check_prediction(prediction, "epsilon_and_x0")
    if prediction == "epsilon":
        return output, x0_from_epsilon(schedule, xt, t, output)
    abar = _at(schedule.alphas_cumprod, t, xt)
    return jnp.sqrt(1.0 - abar) * xt + jnp.sqrt(abar) * output, jnp.sqrt(abar) * xt - jnp.sqrt(1.0 - abar) * output
