"""``jaxcnn.backends.cpu.materialize`` is the identity in values and derivatives, and a loop
only where it should be: backend on, compiled with its options, lowered for CPU, differentiated."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcnn.backends import cpu

ON_CPU = jax.default_backend() == "cpu"


@pytest.fixture(autouse=True)
def _kernels_on():
    with cpu.kernels():
        yield


def _chain(x):
    # An elementwise chain like a batch norm, ReLU and residual addition.
    return jax.nn.relu(x * 1.5 - 0.25) + x


def test_values_and_derivatives_are_the_identity_under_the_options():
    x = jnp.asarray(np.random.default_rng(0).standard_normal((4, 3, 5)).astype(np.float32))
    t = jnp.asarray(np.random.default_rng(1).standard_normal((4, 3, 5)).astype(np.float32))

    def run(x, t):
        y = cpu.materialize(_chain(x))
        grad = jax.grad(lambda x: jnp.sum(cpu.materialize(_chain(x)) ** 2))(x)
        tangent = jax.jvp(lambda x: cpu.materialize(_chain(x)), (x,), (t,))[1]
        return y, grad, tangent

    got = cpu.jit(run, xla_options="auto")(x, t)
    # The reference: the same chain by NumPy and its derivatives by hand.
    xn, tn = np.asarray(x), np.asarray(t)
    pre = xn * 1.5 - 0.25
    y = np.maximum(pre, 0) + xn
    dy_dx = (pre > 0) * 1.5 + 1.0
    np.testing.assert_allclose(got[0], y, rtol=1e-6)
    np.testing.assert_allclose(got[1], 2 * y * dy_dx, rtol=1e-5)
    np.testing.assert_allclose(got[2], dy_dx * tn, rtol=1e-6)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.float16])
def test_the_copy_changes_no_bit(dtype):
    rng = np.random.default_rng(2)
    x = jnp.asarray(rng.standard_normal((3, 7)) * 10.0 ** rng.integers(-30, 30, (3, 7)), dtype)
    x = x.at[0, 0].set(jnp.nan).at[1, 1].set(-jnp.inf).at[2, 2].set(-0.0)
    if dtype == jnp.float32:
        x = x.at[0, 1].set(np.float32(1e-40))  # subnormal
    # Under jax.jvp the primal output is the loop's copy.
    got = cpu.jit(lambda x: jax.jvp(cpu.materialize, (x,), (x,))[0], xla_options="auto")(x)
    np.testing.assert_array_equal(np.asarray(got).view(np.uint8), np.asarray(x).view(np.uint8))


@pytest.mark.skipif(not ON_CPU, reason="the loop is for XLA:CPU only")
def test_a_loop_only_when_differentiated_on_cpu_under_the_options_and_with_the_kernels_on():
    def hlo(jit, shape=(4, 8), dtype=jnp.float32, differentiate=True):
        def f(x):
            return cpu.materialize(x + x)

        g = jax.grad(lambda x: jnp.sum(f(x) * x)) if differentiate else f
        return jit(g).lower(jax.ShapeDtypeStruct(shape, dtype)).compile().as_text()

    assert "while" in hlo(cpu.jit)
    assert "while" not in hlo(cpu.jit, differentiate=False)  # evaluation: no copy
    assert "while" not in hlo(jax.jit)  # XLA's defaults: no loop
    assert "while" not in hlo(cpu.jit, shape=(8, 1))  # nothing to loop over
    assert "while" not in hlo(cpu.jit, dtype=jnp.int32, differentiate=False)  # not a float
    with cpu.kernels(False):
        assert "while" not in hlo(cpu.jit)  # backend off: no copy


def test_no_loop_when_lowered_for_another_platform():
    def g(x):
        return jnp.sum(cpu.materialize(x + x) * x)

    traced = cpu.jit(jax.grad(g), backend="cpu").trace(jax.ShapeDtypeStruct((4, 8), jnp.float32))
    assert "while" in traced.lower(lowering_platforms=("cpu",)).as_text()
    for platform in ("cuda", "tpu"):
        assert "while" not in traced.lower(lowering_platforms=(platform,)).as_text()
