"""The CPU kernel backend: faster XLA:CPU formulations of jaxcnn's ops, switched on explicitly.

Off by default: every op of :mod:`jaxcnn.functional` is then its plain ``lax`` program. Switched
on, an op asks this backend for a kernel for its shapes and dtype, and stages it with
``lax.platform_dependent``: the kernel where the computation is lowered for CPU, the ``lax``
program everywhere else (a function traced with the backend on and lowered for ``cuda`` or
``tpu`` holds only the ``lax`` program). Values and gradients agree with the ``lax`` program
up to float rounding. The switch is read while a function is traced and is part of
``jax.jit``'s cache key: a jitted function called after a switch traces again.
``docs/cpu_backend.md`` describes each kernel and when it is used.

Example::

    from jaxcnn.backends import cpu

    with cpu.kernels():                  # scoped
        loss, grads = jax.jit(jax.value_and_grad(loss_fn))(params, batch)
    step = cpu.jit(train_step)           # + XLA:CPU options; kernels planned for them
    cpu.enable()                         # process-wide (what `jaxcnn train` does); cpu.disable()

Contents: the switch (:func:`kernels`, :func:`enable`, :func:`disable`, :func:`enabled`), the
XLA options (:func:`compiler_options`, :func:`jit`, :data:`CPU_OPTIONS`), a fusion hint
(:func:`materialize`) and the host allocator setting (:func:`keep_freed_memory`).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from typing import Any

from jaxcnn.backends.cpu import conv as _conv
from jaxcnn.backends.cpu import pooling as _pooling
from jaxcnn.backends.cpu.fusion import materialize
from jaxcnn.backends.cpu.host_memory import keep_freed_memory
from jaxcnn.backends.cpu.options import CHOICES, CPU_OPTIONS, compiler_options, jit, resolve_choice
from jaxcnn.functional import _backend

__all__ = [
    "CHOICES",
    "CPU_OPTIONS",
    "Kernels",
    "compiler_options",
    "disable",
    "enable",
    "enabled",
    "jit",
    "keep_freed_memory",
    "kernels",
    "materialize",
    "resolve_choice",
    "state",
]


@dataclasses.dataclass(frozen=True)
class Kernels:
    """The CPU backend as the ops see it while tracing (hashable: a static argument).

    ``xla_options``: whether the computation is compiled with :data:`CPU_OPTIONS` (set by
    :func:`jit`); the convolution planner picks its passes for those options or XLA's defaults.
    """

    xla_options: bool = False

    def with_xla_options(self, xla_options: bool) -> Kernels:
        return dataclasses.replace(self, xla_options=xla_options)

    def conv(self, impl: str, x_shape, dtype, window, c_out, stride, pads, dilation, groups, precision, *,
             channels_last: bool):
        """A kernel ``(x, kernel) -> y`` for :func:`jaxcnn.functional.conv`, or ``None``."""
        return _conv.conv_kernel(impl, x_shape, dtype, window, c_out, stride, pads, dilation, groups, precision,
                                 channels_last=channels_last, xla_options=self.xla_options)

    def conv_transpose(self, impl: str, dtype, window, stride, pads, dilation, output_padding, out_spatial, groups,
                       precision, *, channels_last: bool):
        """A kernel ``(x, kernel) -> y`` for :func:`jaxcnn.functional.conv_transpose`, or ``None``."""
        return _conv.conv_transpose_kernel(impl, dtype, window, stride, pads, dilation, output_padding, out_spatial,
                                           groups, precision, channels_last=channels_last)

    def extremum_pool(self, geometry: Any, is_max: bool):
        """A kernel ``x -> y`` for :func:`jaxcnn.functional.max_pool` / ``min_pool``, or ``None``."""
        return _pooling.extremum_pool_kernel(geometry, is_max)


@contextlib.contextmanager
def kernels(on: bool = True) -> Iterator[None]:
    """Switches the CPU kernels on (``on=False``: off) for the functions traced inside.

    Scoped to this thread/context and restored on exit, whatever :func:`enable` set.
    """
    with _backend.scoped(Kernels() if on else None):
        yield


def enable() -> str:
    """Switches the CPU kernels on for the whole process (outside :func:`kernels` scopes);
    returns :func:`state`."""
    _backend.set_process_default(Kernels())
    return state()


def disable() -> str:
    """Switches the CPU kernels off for the whole process; returns :func:`state`."""
    _backend.set_process_default(None)
    return state()


def enabled() -> bool:
    """Whether the CPU kernels are on for the code traced now."""
    return isinstance(_backend.current(), Kernels)


def state() -> str:
    """One line for logs: whether the kernels are on and how to change that."""
    if enabled():
        return "on (jaxcnn.backends.cpu kernels where lowered for CPU; lax elsewhere)"
    return "off (every op is its plain lax program)"
