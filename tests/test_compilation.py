"""Per-computation XLA options of the CPU backend (``jaxcnn.backends.cpu``): what they are,
that they take effect, and that they change no number beyond float32 rounding (references:
plain ``jax.jit`` and the ``lax`` convolution)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxcnn
from jaxcnn import functional as F
from jaxcnn.backends import cpu
from jaxcnn.backends.cpu import conv as cpu_conv
from jaxcnn.backends.cpu import options as compilation
from jaxcnn.train import DataParallel, default_config, validate_config

ON_CPU = jax.default_backend() == "cpu"


def test_compiler_options_by_choice_and_backend(monkeypatch):
    monkeypatch.delenv(compilation.ENV_VAR, raising=False)
    expected = {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_DOT,LIBRARY_FUSION_TYPE_REDUCE"}
    assert compilation.compiler_options("auto", "cpu") == expected
    assert jaxcnn.compiler_options(backend="cpu") == expected  # "auto" by default
    assert compilation.compiler_options("none", "cpu") is None
    assert compilation.compiler_options("auto", "gpu") is None
    assert compilation.compiler_options("auto", "tpu") is None
    # A copy: callers may edit what they get.
    compilation.compiler_options("auto", "cpu")["x"] = "y"
    assert "x" not in compilation.CPU_OPTIONS
    monkeypatch.setenv(compilation.ENV_VAR, "none")
    assert compilation.compiler_options(backend="cpu") is None
    assert compilation.compiler_options("auto", "cpu") == expected  # an explicit choice wins


def test_bad_choice_names_its_source(monkeypatch):
    with pytest.raises(ValueError, match=r"choice='fast'.*\('auto', 'none'\)"):
        compilation.compiler_options("fast")
    monkeypatch.setenv(compilation.ENV_VAR, "fastest")
    with pytest.raises(ValueError, match=r"\$JAXCNN_XLA_OPTIONS='fastest'"):
        compilation.compiler_options()
    config = default_config()
    config.xla_options = "fast"
    with pytest.raises(ValueError, match=r"config.xla_options='fast'"):
        validate_config(config)


def test_jit_passes_its_options_to_the_kernels_only_when_they_are_on():
    seen = []

    def make():  # a new function each time: jax.jit caches traces per function
        def f(x):
            seen.append(cpu._backend.current())
            return x * 2

        return f

    with cpu.kernels(False):
        np.testing.assert_array_equal(compilation.jit(make())(jnp.arange(3.0)), [0.0, 2.0, 4.0])
    with cpu.kernels():
        compilation.jit(make())(jnp.arange(3.0))
        compilation.jit(make(), xla_options="none")(jnp.arange(3.0))
        jax.jit(make())(jnp.arange(3.0))
        assert cpu._backend.current() == cpu.Kernels(xla_options=False)  # reset after tracing
    on = cpu.Kernels(xla_options=ON_CPU)
    assert seen == [None, on, cpu.Kernels(), cpu.Kernels()]
    # jax.jit's keyword arguments pass through (static_argnames needs the wrapped signature).
    g = compilation.jit(lambda x, n: x * n, static_argnames="n")
    np.testing.assert_array_equal(g(jnp.ones(2), n=3), [3.0, 3.0])
    # The former module names the same objects.
    from jaxcnn import compilation as former

    assert former.jit is cpu.jit and former.CPU_OPTIONS is cpu.CPU_OPTIONS


@pytest.mark.skipif(not ON_CPU, reason="the options are CPU-only")
def test_options_take_convolutions_from_ynnpack():
    """The options reach XLA: the compiled convolution is XLA's own, not a YNNPACK fusion
    (YNNPACK takes convolutions of this size by default; smaller ones it leaves to XLA)."""
    x, w = jnp.ones((8, 16, 16, 32)), jnp.ones((3, 3, 32, 64))
    f = lambda x, w: F.conv(x, w, impl="lax")  # noqa: E731
    default = jax.jit(f).lower(x, w).compile().as_text()
    ours = compilation.jit(f).lower(x, w).compile().as_text()
    assert "__ynn_fusion" in default
    assert "__ynn_fusion" not in ours and "convolution(" in ours


def test_plan_under_the_options_keeps_im2col_for_few_channels_only():
    def plan(c_in, c_out, window=(3, 3), xla_options=True):
        pads = ((1, 1), (1, 1)) if window == (3, 3) else ((0, 0), (0, 0))
        return cpu_conv.plan(
            "auto", (8, 16, 16, c_in), jnp.float32, window, c_out, (1, 1), pads, (1, 1), None,
            channels_last=True, groups=1, xla_options=xla_options,
        )

    assert plan(64, 64) is None and plan(64, 64, (1, 1)) is None and plan(16, 32) is None
    thin_in, grey, thin_out, lenet2 = plan(3, 32), plan(1, 32), plan(64, 4), plan(6, 16)
    # XLA's forward pass everywhere; im2col keeps the input gradient into few channels and
    # the kernel gradient of a grey or RGB input into many maps (see plan).
    assert (thin_in.forward, thin_in.input_grad, thin_in.kernel_grad) == ("lax", "im2col", "im2col")
    assert (grey.forward, grey.input_grad, grey.kernel_grad) == ("lax", "im2col", "im2col")
    assert thin_out is None
    assert (lenet2.forward, lenet2.input_grad, lenet2.kernel_grad) == ("lax", "im2col", "lax")
    assert plan(64, 64, xla_options=False) is not None  # outside the options: the YNNPACK-era plan


@pytest.mark.parametrize("c_in, c_out", [(16, 24), (1, 8), (3, 16)])
def test_conv_under_the_options_matches_the_reference(c_in, c_out):
    """Value and both gradients, compiled with the options, against plain jit of ``impl="lax"``."""
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((4, 9, 9, c_in)).astype(np.float32))
    w = jnp.asarray(rng.standard_normal((3, 3, c_in, c_out)).astype(np.float32))
    ct = jnp.asarray(rng.standard_normal((4, 9, 9, c_out)).astype(np.float32))

    def value_and_grads(impl):
        return lambda x, w: jax.value_and_grad(
            lambda x, w: jnp.vdot(F.conv(x, w, padding=1, impl=impl), ct), argnums=(0, 1)
        )(x, w)

    with cpu.kernels():
        ours = compilation.jit(value_and_grads(None))(x, w)
    ref = jax.jit(value_and_grads("lax"))(x, w)
    for a, e in zip(jax.tree.leaves(ours), jax.tree.leaves(ref)):
        scale = float(np.max(np.abs(e)))
        np.testing.assert_allclose(a, e, rtol=2e-5, atol=2e-5 * scale)


def test_data_parallel_compiles_with_the_chosen_options(monkeypatch):
    monkeypatch.delenv(compilation.ENV_VAR, raising=False)
    devices = jax.devices("cpu")[:1]
    assert DataParallel("none", devices).compiler_options == compilation.CPU_OPTIONS
    assert DataParallel("none", devices, "none").compiler_options is None
    assert DataParallel("pmap", devices, "auto").compiler_options is None  # jax.pmap takes none
    monkeypatch.setenv(compilation.ENV_VAR, "none")
    assert DataParallel("none", devices).compiler_options is None
    seen = []

    def step(state, batch):
        seen.append(cpu._backend.current())
        return state + batch["x"].sum(), {"loss": batch["x"].sum()}

    parallel = DataParallel("none", devices, "auto")
    with cpu.kernels():
        state, metrics = parallel.compile_train_step(step)(jnp.zeros(()), {"x": jnp.ones(4)})
    assert float(state) == 4.0 and float(metrics["loss"]) == 4.0
    assert seen == [cpu.Kernels(xla_options=ON_CPU)]
