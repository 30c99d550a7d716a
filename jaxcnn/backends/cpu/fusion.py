"""A fusion hint for XLA:CPU: :func:`materialize`, a value written once so that XLA does not
recompute the elementwise chain behind it inside each consumer (see ``docs/cpu_backend.md``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from jaxcnn.functional import _backend


def _written_by_a_loop(x: jax.Array) -> jax.Array:
    # Slice by slice along axis 1 (an image's rows), never along the batch axis: data
    # parallelism splits the batch over devices, and a loop over it would make XLA gather the
    # whole batch on every device. XLA unrolls loops of very few iterations (and fuses through
    # them again), so the axis should not be tiny. The rounding to float32's own precision
    # changes no value (bfloat16 and float16 have no more bits than it keeps) but is not an
    # identity JAX or XLA removes, so the loop is not simplified away either.
    def copy(i, out):
        row = lax.reduce_precision(lax.dynamic_slice_in_dim(x, i, 1, axis=1), exponent_bits=8, mantissa_bits=23)
        return lax.dynamic_update_slice_in_dim(out, row, i, axis=1)

    return lax.fori_loop(0, x.shape[1], copy, jnp.zeros_like(x))


@jax.custom_jvp
def _written_once_when_differentiated(x: jax.Array) -> jax.Array:
    # Not differentiated (evaluation), nothing recomputes the chain in a transpose: no copy.
    return x


@_written_once_when_differentiated.defjvp
def _written_once_jvp(primals, tangents):
    (x,), (t,) = primals, tangents
    return _written_by_a_loop(x), t


def materialize(x: jax.Array) -> jax.Array:
    """``x`` unchanged, written once so that XLA:CPU does not recompute its producers.

    ``x`` ``(N, D, ...)``, any dtype; values and derivatives are exactly those of the identity
    (forward and reverse mode). Only when the CPU kernel backend is on for a computation
    compiled with :data:`CPU_OPTIONS` (:func:`jit`), lowered for CPU, and ``x`` is differentiated, ``x`` is copied by a loop over
    its axis 1, which XLA cannot fuse through; otherwise (backend off, another platform,
    an evaluation step, an axis 1 of fewer than 2 entries, a non-float dtype) it is
    returned as is. Use it on the output of an elementwise chain that several heavy consumers
    read, such as a ResNet block's output (``jaxcnn.models.ResNet`` does).
    """
    x = jnp.asarray(x)
    if x.ndim < 2 or x.shape[1] < 2 or not jnp.issubdtype(x.dtype, jnp.floating):
        return x
    backend = _backend.current()
    if backend is None or not backend.xla_options:
        return x
    return _backend.dispatch(_written_once_when_differentiated, lambda x: x, x)
