"""Noise schedules of denoising diffusion: the betas and every quantity derived from them.

Timesteps are indexed ``t = 0 .. T-1``; index ``t`` is step ``t + 1`` of the papers, so
``alphas_cumprod[t] = prod_{s <= t} (1 - betas[s])`` is the papers' ``alpha_bar_{t+1}`` and
``x_t = sqrt(alphas_cumprod[t]) x_0 + sqrt(1 - alphas_cumprod[t]) eps`` is already noised at
``t = 0``. The clean data sits "before" index 0, where ``alpha_bar = 1``.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

SCHEDULES = ("linear", "cosine")


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class NoiseSchedule:
    """The arrays of a noise schedule, each ``(T,)`` float32; a pytree, so it passes through ``jit``.

    ``betas``: variance of each forward step ``q(x_t | x_{t-1}) = N(sqrt(1 - beta_t) x_{t-1}, beta_t I)``.
    ``alphas_cumprod``: ``alpha_bar_t = prod_{s <= t} (1 - beta_s)``; ``alphas_cumprod_prev`` the
    same shifted by one, with 1 at ``t = 0`` (the clean data).
    ``posterior_variance``, ``posterior_log_variance`` (clipped: entry 0, which is 0, replaced by
    entry 1, as in Ho et al.'s code), ``posterior_mean_coef_x0``, ``posterior_mean_coef_xt``:
    the posterior ``q(x_{t-1} | x_t, x_0)`` of DDPM eq. 6-7.
    """

    betas: jax.Array
    alphas_cumprod: jax.Array
    alphas_cumprod_prev: jax.Array
    posterior_variance: jax.Array
    posterior_log_variance: jax.Array
    posterior_mean_coef_x0: jax.Array
    posterior_mean_coef_xt: jax.Array

    @property
    def num_timesteps(self) -> int:
        """``T``, static (from the array shape), so usable under ``jit``."""
        return self.betas.shape[0]


def _check_num_timesteps(num_timesteps, op: str) -> int:
    if isinstance(num_timesteps, bool) or not isinstance(num_timesteps, (int, np.integer)) or num_timesteps < 1:
        raise ValueError(f"{op}: num_timesteps must be a positive int, got {num_timesteps!r}")
    return int(num_timesteps)


def linear_betas(num_timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> np.ndarray:
    """DDPM's schedule (Ho et al. 2020): betas evenly spaced from ``beta_start`` to ``beta_end``, ``(T,)`` float64.

    The endpoints do not scale with ``T``: with ``T`` much below 1000, ``alpha_bar_T`` stays far
    from 0 and sampling from ``N(0, I)`` no longer matches the last noise level.
    """
    num_timesteps = _check_num_timesteps(num_timesteps, "linear_betas")
    if not 0.0 < beta_start <= beta_end < 1.0:
        raise ValueError(
            f"linear_betas: need 0 < beta_start <= beta_end < 1, got beta_start={beta_start!r}, beta_end={beta_end!r}"
        )
    return np.linspace(beta_start, beta_end, num_timesteps, dtype=np.float64)


def cosine_betas(num_timesteps: int = 1000, s: float = 0.008, max_beta: float = 0.999) -> np.ndarray:
    """Nichol & Dhariwal (2021) eq. 17: ``alpha_bar(t) = f(t) / f(0)``, ``f(t) = cos((t/T + s)/(1 + s) * pi/2)^2``.

    ``beta_t = min(1 - alpha_bar(t+1) / alpha_bar(t), max_beta)`` (clipped so the last steps are
    not singular), ``(T,)`` float64.
    """
    num_timesteps = _check_num_timesteps(num_timesteps, "cosine_betas")
    if not s >= 0.0:
        raise ValueError(f"cosine_betas: s must be >= 0, got {s!r}")
    if not 0.0 < max_beta < 1.0:
        raise ValueError(f"cosine_betas: max_beta must be in (0, 1), got {max_beta!r}")
    steps = np.arange(num_timesteps + 1, dtype=np.float64) / num_timesteps
    f = np.cos((steps + s) / (1.0 + s) * math.pi / 2.0) ** 2
    alpha_bar = f / f[0]
    return np.minimum(1.0 - alpha_bar[1:] / alpha_bar[:-1], max_beta)


def schedule_from_betas(betas) -> NoiseSchedule:
    """The :class:`NoiseSchedule` of the betas ``(T,)``, each in (0, 1); derived in float64, stored float32."""
    betas = np.asarray(betas, dtype=np.float64)
    if betas.ndim != 1 or betas.shape[0] < 1:
        raise ValueError(f"schedule_from_betas: betas must be (T,) with T >= 1, got shape {betas.shape}")
    if not np.all((betas > 0.0) & (betas < 1.0)):
        raise ValueError("schedule_from_betas: every beta must lie in (0, 1)")
    alphas_cumprod = np.cumprod(1.0 - betas)
    alphas_cumprod_prev = np.concatenate([[1.0], alphas_cumprod[:-1]])
    posterior_variance = betas * (1.0 - alphas_cumprod_prev) / (1.0 - alphas_cumprod)
    clipped = np.concatenate([posterior_variance[1:2], posterior_variance[1:]]) if betas.shape[0] > 1 else betas
    as32 = lambda a: jnp.asarray(a, dtype=jnp.float32)  # noqa: E731
    return NoiseSchedule(
        betas=as32(betas),
        alphas_cumprod=as32(alphas_cumprod),
        alphas_cumprod_prev=as32(alphas_cumprod_prev),
        posterior_variance=as32(posterior_variance),
        posterior_log_variance=as32(np.log(clipped)),
        posterior_mean_coef_x0=as32(np.sqrt(alphas_cumprod_prev) * betas / (1.0 - alphas_cumprod)),
        posterior_mean_coef_xt=as32(np.sqrt(1.0 - betas) * (1.0 - alphas_cumprod_prev) / (1.0 - alphas_cumprod)),
    )


def make_schedule(schedule: str = "linear", num_timesteps: int = 1000) -> NoiseSchedule:
    """The named schedule: ``"linear"`` (:func:`linear_betas`) or ``"cosine"`` (:func:`cosine_betas`)."""
    if schedule == "linear":
        return schedule_from_betas(linear_betas(num_timesteps))
    if schedule == "cosine":
        return schedule_from_betas(cosine_betas(num_timesteps))
    raise ValueError(f"make_schedule: unknown schedule={schedule!r}; expected one of {SCHEDULES}")
