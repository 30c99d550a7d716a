"""Control over what XLA recomputes: :func:`materialize`.

Why. XLA fuses cheap elementwise producers (batch norm, ReLU, residual additions) into each
consumer instead of reading a value once written. That is usually right, but XLA:CPU's
kernel-gradient convolution wants its input with the channels first and the batch last, and
the transpose it inserts then recomputes the whole elementwise chain behind that input, read
in transposed order: in ResNet-18's step (batch 32, 2 cores) such transposes took a third of
the step, most of it in chains through several residual additions (see
``python -m experiments.benchmarks.profile``). A value written by a loop cannot be fused
into its consumers, so they read it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from jaxcnn.compilation import cpu_options_in_force


def _written_by_a_loop(x: jax.Array) -> jax.Array:
    # One image per iteration: XLA unrolls loops of very few iterations (and fuses through
    # them again). The rounding to float32's own precision changes no value (bfloat16 and
    # float16 have no more bits than it keeps) but is not an identity JAX or XLA removes,
    # so the loop is not simplified away either.
    def copy(carry, image):
        return carry, lax.reduce_precision(image, exponent_bits=8, mantissa_bits=23)

    _, images = lax.scan(copy, None, x)
    return images


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

    ``x`` ``(N, ...)``, any float dtype; values and derivatives are exactly those of the
    identity (forward and reverse mode). When it is differentiated on the CPU backend, in a
    computation compiled with jaxcnn's XLA options (:func:`jaxcnn.compilation.jit`, as the
    training loop compiles its steps), ``x`` is copied by a loop over its leading axis, which
    XLA cannot fuse through; otherwise (an evaluation step, another backend or XLA's default
    options, a leading axis of fewer than 2 entries) it is returned as is.

    Use it on the output of an elementwise chain that several heavy consumers read, such as
    a ResNet block's output (``jaxcnn.models.ResNet`` does): the copy costs one pass over
    ``x``, and saves recomputing the chain in every consumer XLA fuses it into. What it
    gained for ResNet-18 and why U-Net does not use it: the documentation's performance page.

    Args:
      x: a floating array ``(N, ...)``.

    Returns:
      ``x`` (the same values, shape and dtype).
    """
    x = jnp.asarray(x)
    if x.ndim == 0 or x.shape[0] < 2 or not jnp.issubdtype(x.dtype, jnp.floating):
        return x
    if jax.default_backend() != "cpu" or not cpu_options_in_force():
        return x
    return _written_once_when_differentiated(x)
