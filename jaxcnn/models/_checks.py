"""Argument checks of the zoo models, run when a model is built and when it is called.

Fields are checked in ``__post_init__`` (so ``get_model("SimpleCNN", num_classes=0)`` fails
at once, naming the field); inputs at the top of ``__call__``, before any parameter is
initialised (which compiles), so a wrong rank, dtype or an empty batch never reaches XLA.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax.numpy as jnp

from jaxcnn.functional import _arguments as args


def positive_int(value: Any, name: str, model: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{model}: {name} must be a positive int, got {value!r}")


def positive_ints(value: Any, name: str, model: str, minimum_length: int = 1) -> None:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) < minimum_length or any(
        isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in value
    ):
        raise ValueError(
            f"{model}: {name} must be a sequence of at least {minimum_length} positive int(s), got {value!r}"
        )


def rate(value: Any, name: str, model: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise ValueError(f"{model}: {name} must be a number in [0, 1), got {value!r}")


def choice(value: Any, name: str, model: str, choices: Sequence[str]) -> None:
    if value not in choices:
        listed = ", ".join(repr(c) for c in choices[:-1]) + f" or {choices[-1]!r}" if len(choices) > 1 else repr(choices[0])
        raise ValueError(f"{model}: {name} must be {listed}, got {value!r}")


def inputs(x: Any, model: str, rank: int = 4, meaning: str = "(N, H, W, C)") -> jnp.ndarray:
    """``x`` as an array of the given rank, floating and non-empty."""
    x = args.as_array(x, "x", model)
    if x.ndim != rank:
        raise ValueError(f"{model}: x must be {meaning}, got shape {tuple(x.shape)} (rank {x.ndim}, expected {rank})")
    args.check_floating(x, "x", model)
    args.check_nonempty(x, "x", model)
    return x
