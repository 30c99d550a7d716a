"""The one trace-time input of the ops besides their arguments: which kernel backend is on.

By default none is, and every op is its plain ``lax`` formulation. A backend (only
``jaxcnn.backends.cpu`` today) is switched on explicitly, by ``jaxcnn.backends.cpu.kernels()``
(scoped) or ``enable()`` (process-wide); an op then asks it for a kernel and, when it has
one, stages both programs with ``lax.platform_dependent``: the kernel where the computation is
lowered for the backend's platform, the ``lax`` program everywhere else. This module imports
jax only; the backend registers itself here when it is imported.
"""

from __future__ import annotations

import contextvars
import importlib
from collections.abc import Callable
from typing import Any

from jax import lax

# The backend in force for the code being traced: an object with the kernel-choosing methods
# (see jaxcnn.backends.cpu.Kernels), or None for the lax program. A context variable so that
# a scope (``with kernels():``) is local to its thread and task; ``_process_default`` is what
# it means when no scope set it (``enable()`` / ``disable()``).
_UNSET = object()
_scoped: contextvars.ContextVar[Any] = contextvars.ContextVar("jaxcnn_kernel_backend", default=_UNSET)
_process_default: Any = None


def current() -> Any:
    """The backend switched on for the code traced now, or ``None`` (the ``lax`` program)."""
    value = _scoped.get()
    return _process_default if value is _UNSET else value


def set_scoped(backend: Any) -> contextvars.Token:
    """Puts ``backend`` (or ``None``) in force in this context; undo with :func:`reset_scoped`."""
    return _scoped.set(backend)


def reset_scoped(token: contextvars.Token) -> None:
    _scoped.reset(token)


def set_process_default(backend: Any) -> None:
    """What :func:`current` returns outside any scope, for every thread."""
    global _process_default
    _process_default = backend


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
