"""XLA options for compiling on CPU, given per computation (never set globally).

:func:`compiler_options` returns the options to pass to ``jax.jit(...,
compiler_options=...)``: :data:`CPU_OPTIONS` for the CPU platform, nothing elsewhere. With them
XLA:CPU leaves convolutions and elementwise fusions to its own (Eigen) code and hands only dots
and reductions to YNNPACK. :func:`jit` is ``jax.jit`` with those options; when the CPU kernels
are on (:func:`jaxcnn.backends.cpu.kernels`) it also tells them, while it traces, that the
computation is compiled with these options, so that they keep the passes Eigen runs well.

Changing the options changes which library computes a convolution, so results can differ in
the last bits of float32; a run resumed with other options continues correctly but not
bit-identically.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax

from jaxcnn.functional import _backend
from jaxcnn.settings import resolve

ENV_VAR = "JAXCNN_XLA_OPTIONS"
CHOICES = ("auto", "none")
# YNNPACK keeps the dots and reductions; convolutions and elementwise fusions go back to XLA.
CPU_OPTIONS: dict[str, str] = {
    "xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_DOT,LIBRARY_FUSION_TYPE_REDUCE",
}


def resolve_choice(choice: str | None) -> str:
    """``choice`` or, when ``None``, ``$JAXCNN_XLA_OPTIONS`` (default ``"auto"``), validated
    against :data:`CHOICES` (the error names where the value came from)."""
    return resolve(choice, argument="choice", env_var=ENV_VAR, default="auto", choices=CHOICES,
                   op="compiler_options")[0]


def compiler_options(choice: str | None = None, backend: str | None = None) -> dict[str, str] | None:
    """The ``compiler_options`` for ``jax.jit`` under ``choice`` on ``backend``, or ``None``.

    Args:
      choice: ``"auto"`` (:data:`CPU_OPTIONS` on CPU, ``None`` elsewhere) or ``"none"`` (always
        ``None``: XLA's defaults). ``None`` reads ``$JAXCNN_XLA_OPTIONS`` (default ``"auto"``).
      backend: the platform the computation will be compiled for (``"cpu"``, ``"gpu"``,
        ``"tpu"``); ``None`` means ``jax.default_backend()``. Compiler options are given when
        a computation is compiled for a device, so this is where the platform is known.

    Example::

        step = jax.jit(train_step, compiler_options=jaxcnn.backends.cpu.compiler_options())
    """
    if resolve_choice(choice) == "none":
        return None
    if (backend or jax.default_backend()) != "cpu":
        return None
    return dict(CPU_OPTIONS)


def jit(fun: Callable, *, xla_options: str | None = None, backend: str | None = None, **jit_kwargs: Any) -> Callable:
    """``jax.jit(fun, compiler_options=compiler_options(xla_options, backend), **jit_kwargs)``.

    When those options are :data:`CPU_OPTIONS` and the CPU kernels are on while ``fun`` is
    traced, the kernels are told so (``Kernels.xla_options``) and pick the passes that are
    fastest under them. It never switches the kernels on: with them off, ``fun``'s ops are
    their ``lax`` programs. ``backend``: the platform of the devices it will run on (default
    ``jax.default_backend()``).
    """
    options = compiler_options(xla_options, backend)
    if options is None:
        return jax.jit(fun, **jit_kwargs)

    @functools.wraps(fun)
    def traced(*args, **kwargs):
        kernels = _backend.current()
        if kernels is None or kernels.xla_options:
            return fun(*args, **kwargs)
        with _backend.scoped(kernels.with_xla_options(True)):
            return fun(*args, **kwargs)

    return jax.jit(traced, compiler_options=options, **jit_kwargs)
