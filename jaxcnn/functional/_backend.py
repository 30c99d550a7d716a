"""The one trace-time input of the ops besides their arguments: which kernel backend is on.

By default none is, and every op is its plain ``lax`` formulation. A backend (only
``jaxcnn.backends.cpu`` today) is switched on explicitly, by ``jaxcnn.backends.cpu.kernels()``
(scoped) or ``enable()`` (process-wide); an op then asks it for a kernel and, when it has
one, stages both programs with ``lax.platform_dependent``: the kernel where the computation is
lowered for the backend's platform, the ``lax`` program everywhere else. This module imports
jax only and never the backend (but for an explicit ``impl="im2col"``, which loads it).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import jax
from jax import lax

# The backend in force for the code being traced: an object with the kernel-choosing methods
# (see jaxcnn.backends.cpu.Kernels, hashable), or None for the lax program. A JAX user context:
# its value is part of jax.jit's cache key, so switching the backend makes an already traced
# function trace again instead of reusing the other program. ``scoped`` sets it for a block
# (thread-local), ``set_process_default`` outside any block.
_setting = jax.make_user_context(default_value=None)


def current() -> Any:
    """The backend switched on for the code traced now, or ``None`` (the ``lax`` program)."""
    return _setting.value


def scoped(backend: Any):
    """A context manager putting ``backend`` (or ``None``) in force for the code inside."""
    return _setting(backend)


def set_process_default(backend: Any) -> None:
    """What :func:`current` returns outside any :func:`scoped` block, for every thread."""
    _setting.set_global(backend)


def cpu() -> Any:
    """The CPU backend's kernels, for an op given ``impl="im2col"`` (an explicit request)."""
    return importlib.import_module("jaxcnn.backends.cpu").Kernels()


def dispatch(kernel: Callable | None, reference: Callable, *operands: Any, platform: str | None = "cpu") -> Any:
    """``reference(*operands)`` when ``kernel`` is ``None``; else ``kernel`` where the computation
    is lowered for ``platform`` and ``reference`` elsewhere (``platform=None``: ``kernel``
    everywhere, for an explicit ``impl``)."""
    if kernel is None:
        return reference(*operands)
    if platform is None:
        return kernel(*operands)
    return lax.platform_dependent(*operands, **{platform: kernel}, default=reference)
