"""Denoising diffusion as pure functions: schedules, forward process, objective, samplers, guidance,
and a Fréchet distance for sample quality.

Imports jax and numpy only; the network is any ``apply_fn(params, x_t, t, labels)`` (e.g.
:class:`jaxcnn.models.DiffusionUNet`). See ``docs/diffusion.md``.
"""

from jaxcnn.diffusion.guidance import guided_output
from jaxcnn.diffusion.objective import diffusion_loss
from jaxcnn.diffusion.process import PREDICTIONS, epsilon_and_x0, q_posterior, q_sample, v_target, x0_from_epsilon
from jaxcnn.diffusion.quality import classifier_features, feature_statistics, frechet_distance
from jaxcnn.diffusion.samplers import SAMPLERS, ddim_invert, ddim_sample, ddpm_sample, sample, sampling_timesteps
from jaxcnn.diffusion.schedules import (
    SCHEDULES,
    NoiseSchedule,
    cosine_betas,
    linear_betas,
    make_schedule,
    schedule_from_betas,
)

__all__ = [
    "NoiseSchedule",
    "PREDICTIONS",
    "SAMPLERS",
    "SCHEDULES",
    "classifier_features",
    "cosine_betas",
    "ddim_invert",
    "ddim_sample",
    "ddpm_sample",
    "diffusion_loss",
    "epsilon_and_x0",
    "feature_statistics",
    "frechet_distance",
    "guided_output",
    "linear_betas",
    "make_schedule",
    "q_posterior",
    "q_sample",
    "sample",
    "sampling_timesteps",
    "schedule_from_betas",
    "v_target",
    "x0_from_epsilon",
]
