"""Class labels and classifier-free guidance (Ho & Salimans 2021).

A class-conditional model with ``num_classes = K`` takes labels in ``[0, K]``: ``0 .. K-1`` are
the classes and ``K`` is the *null* label ("no class"), which training substitutes with
probability ``label_dropout`` so that one network learns both the conditional and the
unconditional prediction.

Convention: with guidance scale ``w >= 0`` the guided prediction is
``out = (1 + w) * out(x, t, y) - w * out(x, t, null) = out_cond + w * (out_cond - out_uncond)``;
``w = 0`` is the plain conditional model (no extra evaluation), and this ``w`` is the
``w`` of Ho & Salimans, i.e. diffusers' ``guidance_scale = 1 + w``. Guidance is applied to the
raw model output; for v-prediction this is the same as guiding epsilon, since at a fixed
``x_t`` epsilon is affine in ``v`` and the weights ``(1 + w) - w`` sum to 1.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np


def check_labels(labels, num_classes, batch: int, op: str, *, allow_null: bool = False) -> jax.Array | None:
    """``labels`` as an int array ``(batch,)`` checked against ``num_classes`` (values only when concrete)."""
    if labels is None:
        return None
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
        raise ValueError(
            f"{op}: labels need a class-conditional model: num_classes must be a positive int, got {num_classes!r}"
        )
    labels = jnp.asarray(labels)
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        raise TypeError(f"{op}: labels must be integer class indices, got dtype {labels.dtype}")
    if labels.shape != (batch,):
        raise ValueError(f"{op}: labels must be (N,) = ({batch},), got shape {tuple(labels.shape)}")
    if not isinstance(labels, jax.core.Tracer):
        top = num_classes if allow_null else num_classes - 1
        values = np.asarray(labels)
        if values.min() < 0 or values.max() > top:
            raise ValueError(
                f"{op}: labels must lie in [0, {top}] (num_classes={num_classes}), "
                f"got values in [{values.min()}, {values.max()}]"
            )
    return labels.astype(jnp.int32)


def check_guidance(guidance_scale, labels, op: str) -> None:
    if isinstance(guidance_scale, bool) or not isinstance(guidance_scale, (int, float, np.floating, np.integer)):
        if not isinstance(guidance_scale, jax.Array):
            raise TypeError(f"{op}: guidance_scale must be a number, got {type(guidance_scale).__name__}")
    elif guidance_scale < 0:
        raise ValueError(f"{op}: guidance_scale must be >= 0, got {guidance_scale!r}")
    if labels is None and not _is_zero(guidance_scale):
        raise ValueError(
            f"{op}: guidance_scale={guidance_scale!r} needs a class-conditional model and labels, but labels is None"
        )


def _is_zero(guidance_scale) -> bool:
    return isinstance(guidance_scale, (int, float, np.floating, np.integer)) and guidance_scale == 0


def guided_output(
    model_fn: Callable, x: jax.Array, t: jax.Array, labels: jax.Array | None, guidance_scale, num_classes: int | None
) -> jax.Array:
    """``model_fn(x, t, labels)`` with classifier-free guidance ``(1 + w) cond - w uncond`` (see module doc).

    ``x: (N, ...)``, ``t: (N,)`` int, ``labels: (N,)`` int or None. With ``w != 0`` the model runs
    once on the doubled batch ``(2N, ...)`` (conditional, then null labels).
    """
    if labels is None or _is_zero(guidance_scale):
        return model_fn(x, t, labels)
    null = jnp.full_like(labels, num_classes)
    both = model_fn(jnp.concatenate([x, x]), jnp.concatenate([t, t]), jnp.concatenate([labels, null]))
    cond, uncond = both[: x.shape[0]], both[x.shape[0]:]
    w = jnp.asarray(guidance_scale, dtype=cond.dtype)
    return (1.0 + w) * cond - w * uncond
