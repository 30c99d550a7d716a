"""XLA options for compiling jaxcnn's steps, given per computation (never set globally).

Why. On the CPU backend, XLA (jaxlib 0.10) hands dots, reductions, elementwise fusions and
convolutions to the YNNPACK library by default. Its dots and reductions are the fastest
XLA:CPU has, but its 3x3 convolutions ran at 30-60% of the speed of XLA's own (Eigen)
convolutions on the reference 2-core CPU (forward pass of a ``(128, 13, 13, 32)`` 3x3
convolution to 64 channels: 5.4 ms against 2.9 ms, and 10.7 against 3.1 ms in one
interleaved run; ``(8, 64, 64, 64)`` to 64: 16.0 ms against 10.0 ms). Keeping YNNPACK for
dots and reductions only made whole training steps up to 1.5x faster (ResNet-18 and U-Net
about 1.5x, LeNet-5 about 1.1x, SimpleCNN 1.0-1.07x; ``python -m experiments.benchmarks``
measures it, the documentation's performance page has the figures).

What. :func:`compiler_options` returns the options to pass to ``jax.jit(...,
compiler_options=...)``: :data:`CPU_OPTIONS` on the CPU backend, nothing elsewhere.
:func:`jit` is ``jax.jit`` with those options that also tells the code it traces that they
are in force (:func:`cpu_options_in_force`): the convolution fast paths of
``jaxcnn.functional`` then leave every convolution of ordinary channel counts to XLA, whose
own convolutions beat the im2col formulations once YNNPACK no longer takes them (and still
use im2col for thin layers such as a grey or RGB first layer). The training loop, ``jaxcnn
eval`` and the benchmarks compile with :func:`jit` (``config.xla_options`` picks; ``"none"``
compiles with XLA's defaults). Functions a user compiles with plain ``jax.jit`` get XLA's
defaults and the fast paths measured for them. ``jax.pmap`` takes no compiler options, so the
``pmap`` form of data parallelism always uses XLA's defaults.

Changing the options changes which library computes a convolution, so results can differ in
the last bits of float32; a run resumed with other options continues correctly but not
bit-identically.
"""

from __future__ import annotations

import contextvars
import functools
from collections.abc import Callable
from typing import Any

import jax

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
      backend: the platform the computation runs on (``"cpu"``, ``"gpu"``, ``"tpu"``);
        ``None`` means ``jax.default_backend()``.

    Example::

        step = jax.jit(train_step, compiler_options=jaxcnn.compiler_options())
    """
    if resolve_choice(choice) == "none":
        return None
    if (backend or jax.default_backend()) != "cpu":
        return None
    return dict(CPU_OPTIONS)


# Set while :func:`jit` traces its function: the code being traced will be compiled with
# CPU_OPTIONS (read by the convolution planner).
_CPU_OPTIONS_IN_FORCE: contextvars.ContextVar[bool] = contextvars.ContextVar("jaxcnn_cpu_options", default=False)


def cpu_options_in_force() -> bool:
    """Whether the function being traced now will be compiled with :data:`CPU_OPTIONS`.

    True only inside the tracing of a function compiled by :func:`jit` with CPU options.
    """
    return _CPU_OPTIONS_IN_FORCE.get()


def jit(fun: Callable, *, xla_options: str | None = None, backend: str | None = None, **jit_kwargs: Any) -> Callable:
    """``jax.jit(fun, compiler_options=compiler_options(xla_options, backend), **jit_kwargs)``.

    While ``fun`` is traced, :func:`cpu_options_in_force` says whether those options are the
    CPU ones, so that jaxcnn's ops choose the implementations that are fastest under them.
    ``backend``: the platform of the devices it will run on (default ``jax.default_backend()``).
    """
    options = compiler_options(xla_options, backend)
    if options is None:
        return jax.jit(fun, **jit_kwargs)

    @functools.wraps(fun)
    def traced(*args, **kwargs):
        token = _CPU_OPTIONS_IN_FORCE.set(True)
        try:
            return fun(*args, **kwargs)
        finally:
            _CPU_OPTIONS_IN_FORCE.reset(token)

    return jax.jit(traced, compiler_options=options, **jit_kwargs)
