"""The CPU backend's kernels give the reference program's numbers: values and gradients, over
a grid. Every test here runs with the backend switched on (``jaxcnn.backends.cpu.kernels()``).

Reference paths: ``impl="lax"`` (one ``lax.conv_general_dilated``) for convolutions,
``lax.reduce_window`` for pooling, PyTorch for tie-breaking and NaNs. Only the summation
order differs, so float32 results agree to rounding (relative 1e-5 of the output's scale).
"""

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as torch_f
from jax import lax

from jaxcnn import functional as F
from jaxcnn import nn as jnn
from jaxcnn.backends import cpu
from jaxcnn.backends.cpu import conv as cpu_conv

RTOL = 2e-5


@pytest.fixture(autouse=True)
def _kernels_on():
    with cpu.kernels():
        yield


def _close(actual, expected, rtol=RTOL):
    """Elementwise within ``rtol`` of the expected array's largest magnitude (sums of products)."""
    for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected)):
        a, e = np.asarray(a), np.asarray(e)
        assert a.shape == e.shape and a.dtype == e.dtype
        scale = max(float(np.max(np.abs(e))), 1.0) if e.size else 1.0
        np.testing.assert_allclose(a, e, rtol=rtol, atol=rtol * scale)


def _random(shape, seed):
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape).astype(np.float32))


def _value_and_derivatives(f, x, w, seed=1):
    """Output, reverse-mode gradients, a forward-mode tangent and a second-order gradient.

    All in one jitted computation, as in a train step (and one compilation per case).
    """
    ct = _random(jax.eval_shape(f, x, w).shape, seed)
    tx, tw = _random(x.shape, seed + 1), _random(w.shape, seed + 2)

    @jax.jit
    def run(x, w):
        y, pullback = jax.vjp(f, x, w)
        tangent = jax.jvp(f, (x, w), (tx, tw))[1]
        second = jax.grad(lambda x, w: jnp.sum(jax.grad(lambda x: jnp.vdot(f(x, w), ct))(x) ** 2), argnums=1)(x, w)
        return y, pullback(ct), tangent, second

    return run(x, w)


# (input spatial, C_in, C_out, window, stride, padding, dilation): every rank, strides,
# asymmetric and "SAME" padding, dilation, 1x1 windows (one matmul under "auto", every rank)
# and thin channels (where "auto" also uses im2col for the forward pass and the input
# gradient); single-channel inputs, whose
# forward pass "auto" takes as a sum over taps (up to 16 outputs) or by lax (more); the last
# four are strided layers whose input gradient "auto" takes by input phase.
CONV_GRID = [
    ((9, 8), 3, 4, (3, 3), 1, 1, 1),
    ((9, 8), 1, 5, (3, 3), 1, 0, 1),
    ((10, 9), 1, 6, (5, 4), (2, 1), ((2, 1), (0, 2)), (1, 2)),
    ((12,), 1, 3, (3,), 1, "SAME", 2),
    ((9, 8), 1, 20, (3, 3), 1, 1, 1),
    ((10, 9), 6, 7, (5, 5), 1, 2, 1),
    ((11, 10), 5, 4, (3, 2), (2, 3), ((1, 2), (0, 1)), (1, 2)),
    ((8, 8), 16, 2, (3, 3), 1, "SAME", 1),
    ((8, 7), 4, 8, (3, 3), 2, "SAME", 1),
    ((8, 8), 5, 6, (1, 1), 2, 0, 1),
    ((8, 8), 5, 6, (1, 1), 1, 0, 1),
    ((12,), 4, 3, (1,), 3, 0, 1),
    ((4, 5, 3), 3, 5, (1, 1, 1), (1, 2, 1), 0, 2),
    ((12,), 2, 3, (5,), 3, 2, 2),
    ((5, 6, 4), 2, 3, (3, 1, 2), (2, 1, 1), ((1, 0), (0, 0), (1, 1)), (1, 1, 2)),
    ((9, 8), 10, 12, (3, 3), 2, 1, 1),
    ((11, 10), 9, 10, (5, 4), (2, 3), ((2, 1), (1, 2)), 1),
    ((13,), 9, 9, (4,), 3, "SAME", 1),
    ((6, 5, 7), 9, 10, (3, 2, 3), (2, 2, 1), 1, 1),
]


@pytest.mark.parametrize("impl", ["auto", "im2col"])
@pytest.mark.parametrize("spatial, c_in, c_out, window, stride, padding, dilation", CONV_GRID)
def test_conv_fast_path_matches_lax(impl, spatial, c_in, c_out, window, stride, padding, dilation):
    x = _random((3, *spatial, c_in), 0)
    w = _random((*window, c_in, c_out), 1) / np.float32(np.sqrt(np.prod(window) * c_in))
    kw = dict(stride=stride, padding=padding, dilation=dilation)
    fast = lambda x, w: F.conv(x, w, impl=impl, **kw)  # noqa: E731
    ref = lambda x, w: F.conv(x, w, impl="lax", **kw)  # noqa: E731
    _close(_value_and_derivatives(fast, x, w), _value_and_derivatives(ref, x, w))


@pytest.mark.parametrize("spatial, c_in, c_out, window, stride, padding, dilation", [
    ((9, 8), 3, 12, (3, 3), 1, 1, 1),  # RGB into many maps: im2col input and kernel gradients
    ((10, 9), 6, 10, (5, 5), 1, 0, 1),  # LeNet's second layer: im2col input gradient only
    ((8, 8), 16, 2, (3, 3), 1, "SAME", 1),  # few outputs: lax everywhere
    ((9, 8), 10, 12, (3, 3), 2, 1, 1),  # strided: input gradient by phase
])
def test_conv_fast_path_under_the_options_matches_lax(spatial, c_in, c_out, window, stride, padding, dilation):
    """The plans taken when compiled with jaxcnn's CPU options (the training loop's)."""
    x = _random((3, *spatial, c_in), 0)
    w = _random((*window, c_in, c_out), 1) / np.float32(np.sqrt(np.prod(window) * c_in))
    kw = dict(stride=stride, padding=padding, dilation=dilation)
    fast = lambda x, w: F.conv(x, w, impl="auto", **kw)  # noqa: E731
    ref = lambda x, w: F.conv(x, w, impl="lax", **kw)  # noqa: E731
    ct = _random(jax.eval_shape(fast, x, w).shape, 2)

    def run(f):
        return cpu.jit(lambda x, w: (f(x, w), jax.vjp(f, x, w)[1](ct)))(x, w)

    _close(run(fast), run(ref))


# (input spatial, window, stride, padding, dilation): the phase decomposition on its own,
# including dilations that share a factor with the stride (fewer, denser phases), windows
# smaller than the stride (fewer phases than the stride) and one-tap phases.
PHASE_GRID = [
    ((11, 10), (3, 3), (2, 2), ((1, 1), (1, 1)), (1, 1)),
    ((11, 10), (5, 4), (3, 2), ((2, 0), (1, 2)), (2, 2)),
    ((12, 9), (3, 2), (2, 3), ((0, 1), (2, 2)), (3, 1)),
    ((10, 10), (2, 2), (3, 3), ((0, 0), (1, 0)), (1, 1)),
    ((16,), (4,), (4,), ((2, 1),), (2,)),
    ((7, 6, 5), (3, 2, 2), (2, 2, 2), ((1, 1), (0, 1), (1, 0)), (1, 1, 1)),
]


@pytest.mark.parametrize("spatial, window, stride, pads, dilation", PHASE_GRID)
def test_phase_conv_matches_lax(spatial, window, stride, pads, dilation):
    x = _random((2, *spatial, 3), 0)
    w = _random((*window, 3, 4), 1)
    phase = cpu_conv.Plan(stride, pads, dilation, None, "phase", "phase", "lax", 1)
    ref = cpu_conv.Plan(stride, pads, dilation, None, "lax", "lax", "lax", 1)
    _close(
        _value_and_derivatives(lambda x, w: cpu_conv.conv_fast(x, w, phase), x, w),
        _value_and_derivatives(lambda x, w: cpu_conv.lax_conv(x, w, ref), x, w),
    )


def test_phase_conv_against_numpy_loops():
    """An independent check of the decomposition: a direct sum over windows in float64."""
    rng = np.random.default_rng(3)
    x, w = rng.standard_normal((2, 9, 8, 3)), rng.standard_normal((3, 4, 3, 5))
    stride, pads, dilation = (2, 3), ((1, 2), (0, 1)), (2, 1)
    padded = np.pad(x, ((0, 0), *pads, (0, 0)))
    out = cpu_conv.out_sizes((9, 8), (3, 4), stride, pads, dilation)
    expected = np.zeros((2, *out, 5))
    for i, j in np.ndindex(*out):
        for a, b in np.ndindex(3, 4):
            cell = padded[:, i * stride[0] + a * dilation[0], j * stride[1] + b * dilation[1], :]
            expected[:, i, j, :] += cell @ w[a, b]
    p = cpu_conv.Plan(stride, pads, dilation, None, "phase", "phase", "lax", 1)
    got = cpu_conv.phase_conv(jnp.asarray(x, jnp.float32), jnp.asarray(w, jnp.float32), p)
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-5, atol=1e-4)


def test_conv_fast_path_eagerly():
    """Without a surrounding jit (op-by-op dispatch, other fusion), the same numbers."""
    x, w = _random((2, 7, 6, 3), 0), _random((3, 3, 3, 5), 1)
    for impl in ("auto", "im2col"):
        fast = lambda x, w: F.conv(x, w, padding=1, impl=impl)  # noqa: E731
        ref = lambda x, w: F.conv(x, w, padding=1, impl="lax")  # noqa: E731
        _close(jax.vjp(fast, x, w)[1](fast(x, w)), jax.vjp(ref, x, w)[1](ref(x, w)))


# (input spatial, C_in, C_out, window, stride, padding, dilation, groups): depthwise with
# multipliers 1 and 3, grouped (split per group up to SPLIT_GROUPS, one batched matmul
# above), every rank.
GROUPED_GRID = [
    ((9, 8), 4, 4, (3, 3), 1, 1, 1, 4),
    ((9, 8), 4, 12, (3, 2), 2, ((1, 0), (1, 1)), (1, 2), 4),
    ((9, 8), 6, 4, (3, 3), 1, "SAME", 1, 2),
    ((10,), 6, 9, (3,), 2, 1, 1, 3),
    ((5, 6, 4), 4, 4, (3, 1, 2), 1, 1, 1, 2),
    ((6, 5), 2 * (cpu_conv.SPLIT_GROUPS + 1), cpu_conv.SPLIT_GROUPS + 1, (3, 3), 1, 1, 1,
     cpu_conv.SPLIT_GROUPS + 1),
]


@pytest.mark.parametrize("spatial, c_in, c_out, window, stride, padding, dilation, groups", GROUPED_GRID)
def test_grouped_conv_fast_path_matches_lax(spatial, c_in, c_out, window, stride, padding, dilation, groups):
    x = _random((3, *spatial, c_in), 0)
    w = _random((*window, c_in // groups, c_out), 1)
    kw = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    fast = lambda x, w: F.conv(x, w, impl="im2col", **kw)  # noqa: E731
    ref = lambda x, w: F.conv(x, w, impl="lax", **kw)  # noqa: E731
    assert "conv_general_dilated" not in str(jax.make_jaxpr(fast)(x, w))
    _close(_value_and_derivatives(fast, x, w), _value_and_derivatives(ref, x, w))


# Under "auto": few channels per group, or more than SPLIT_GROUPS groups, within
# BLOCK_DIAGONAL_MAX_CHANNELS take one dense convolution with a block-diagonal kernel; the
# last case (16 channels per group, 4 groups) keeps the split.
BLOCK_DIAGONAL_GRID = [
    ((9, 8), 8, 8, (3, 3), 1, 1, 1, 4, True),
    ((9, 8), 8, 12, (3, 2), 2, ((1, 0), (1, 1)), (1, 2), 2, True),
    ((10,), 18, 9, (3,), 1, "SAME", 1, 9, True),
    ((4, 5, 3), 6, 6, (1, 1, 1), 1, 0, 1, 3, True),
    ((7, 6), 64, 64, (3, 3), 1, 1, 1, 4, False),
]


@pytest.mark.parametrize("spatial, c_in, c_out, window, stride, padding, dilation, groups, dense", BLOCK_DIAGONAL_GRID)
def test_grouped_conv_block_diagonal_matches_lax(
    monkeypatch, spatial, c_in, c_out, window, stride, padding, dilation, groups, dense
):
    x = _random((2, *spatial, c_in), 0)
    w = _random((*window, c_in // groups, c_out), 1) / np.float32(np.sqrt(np.prod(window) * c_in / groups))
    kw = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    calls = []
    real = cpu_conv.block_diagonal
    monkeypatch.setattr(cpu_conv, "block_diagonal", lambda k, g: calls.append(g) or real(k, g))
    fast = lambda x, w: F.conv(x, w, impl="auto", **kw)  # noqa: E731
    ref = lambda x, w: F.conv(x, w, impl="lax", **kw)  # noqa: E731
    _close(_value_and_derivatives(fast, x, w), _value_and_derivatives(ref, x, w))
    assert bool(calls) == dense


def test_block_diagonal_kernel_against_numpy_loops():
    kernel = np.asarray(_random((2, 3, 2, 6), 0))  # 3 groups: 2 input and 2 output channels each
    expected = np.zeros((2, 3, 6, 6), np.float32)
    for g in range(3):
        for c in range(2):
            for j in range(2):
                expected[:, :, 2 * g + c, 2 * g + j] = kernel[:, :, c, 2 * g + j]
    np.testing.assert_array_equal(np.asarray(cpu_conv.block_diagonal(jnp.asarray(kernel), 3)), expected)


def test_conv_chunks_over_the_batch(monkeypatch):
    """The forward pass and the input gradient build patches a few images at a time (a scan
    over interleaved chunks); chunking changes no number."""
    x, w = _random((6, 7, 7, 3), 0), _random((3, 3, 3, 4), 1)
    ref = _value_and_derivatives(lambda x, w: F.conv(x, w, padding=1, impl="lax"), x, w)
    for chunk_bytes in (1, 2 * 7 * 7 * 27 * 4, 1 << 30):  # one image, two images, everything
        monkeypatch.setattr(cpu_conv, "WIDE_CHUNK_BYTES", chunk_bytes)
        plan = cpu_conv.plan(
            "im2col", x.shape, x.dtype, (3, 3), 4, (1, 1), ((1, 1), (1, 1)), (1, 1), None,
            channels_last=True, groups=1,
        )
        assert plan.wide_chunk == {1: 1, 2 * 7 * 7 * 27 * 4: 2, 1 << 30: 6}[chunk_bytes]
        _close(_value_and_derivatives(lambda x, w: F.conv(x, w, padding=1, impl="im2col"), x, w), ref)


def test_depthwise_chunks_over_the_batch(monkeypatch):
    """The depthwise forward loops over batch chunks; the chunk sizes change no number."""
    x, w = _random((6, 7, 7, 3), 0), _random((3, 3, 1, 6), 1)
    kw = dict(padding=1, groups=3)
    ref = _value_and_derivatives(lambda x, w: F.conv(x, w, impl="lax", **kw), x, w)
    per_image = 7 * 7 * 3 * 4
    for chunk_bytes, chunk in ((1, 1), (2 * per_image, 2), (1 << 30, 3)):
        monkeypatch.setattr(cpu_conv, "WIDE_CHUNK_BYTES", 8 * chunk_bytes)
        plan = cpu_conv.depthwise_plan(x.shape, x.dtype, (3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1), None)
        assert plan.wide_chunk == chunk  # the forward always loops: at most half the batch
        _close(_value_and_derivatives(lambda x, w: F.conv(x, w, impl="im2col", **kw), x, w), ref)


@pytest.mark.parametrize(
    "spatial, window, stride, padding, output_padding, dilation",
    [
        ((5, 6), (2, 2), 2, 0, 0, 1),
        ((5, 6), (3, 3), 2, 1, 1, 1),
        ((4, 5), (3, 2), (2, 3), ((1, 0), (0, 1)), (1, 2), 1),
        ((6, 5), (3, 3), 1, 1, 0, 2),
        ((7,), (4,), 3, ((1, 2),), 2, 2),
    ],
)
def test_conv_transpose_fast_path_matches_lax(spatial, window, stride, padding, output_padding, dilation):
    x = _random((2, *spatial, 3), 0)
    w = _random((*window, 3, 4), 1)
    kw = dict(stride=stride, padding=padding, output_padding=output_padding, dilation=dilation)
    fast = lambda x, w: F.conv_transpose(x, w, impl="im2col", **kw)  # noqa: E731
    ref = lambda x, w: F.conv_transpose(x, w, impl="lax", **kw)  # noqa: E731
    _close(_value_and_derivatives(fast, x, w), _value_and_derivatives(ref, x, w))


def test_conv_transpose_input_gradient_gathers_taps_by_one_concatenation():
    # The input gradient alone (a frozen kernel) once summed one full-size pad per tap, which
    # XLA:CPU wrote out before the matmul: 10x slower than with the kernel gradient beside it.
    x, w = _random((2, 4, 5, 3), 0), _random((3, 3, 3, 4), 1)
    op = lambda x: F.conv_transpose(x, w, stride=2, padding=1, output_padding=1, impl="im2col")  # noqa: E731
    y, vjp = jax.vjp(op, x)
    text = str(jax.make_jaxpr(vjp)(jnp.ones_like(y)))
    assert "concatenate" in text
    assert "[2,4,5,9,3]" not in text  # no per-tap array of every tap's columns


def _uses_fast_path(f, *args) -> bool:
    return "custom_jvp_call" in str(jax.make_jaxpr(f)(*args))


def test_auto_selection_rules():
    """With the kernels on, "auto" stages a kernel beside the lax program; off, only lax."""
    x, w = jnp.ones((2, 8, 8, 4)), jnp.ones((3, 3, 4, 8))
    assert _uses_fast_path(lambda x, w: F.conv(x, w), x, w)
    assert not _uses_fast_path(lambda x, w: F.conv(x, w, impl="lax"), x, w)
    with cpu.kernels(False):
        assert not _uses_fast_path(lambda x, w: F.conv(x, w), x, w)
        assert _uses_fast_path(lambda x, w: F.conv(x, w, impl="im2col"), x, w)  # an explicit request
    # Unsupported: channels first, half precision under "auto"; groups take their own path.
    xc, wc = jnp.ones((2, 4, 8, 8)), jnp.ones((8, 4, 3, 3))
    assert not _uses_fast_path(lambda x, w: F.conv(x, w, layout="NCHW"), xc, wc)
    grouped = str(jax.make_jaxpr(lambda x, w: F.conv(x, w, groups=2))(x, jnp.ones((3, 3, 2, 8))))
    assert "platform_index" in grouped
    xb, wb = x.astype(jnp.bfloat16), w.astype(jnp.bfloat16)
    assert not _uses_fast_path(lambda x, w: F.conv(x, w), xb, wb)
    # A 1x1 convolution without padding is a matmul, in every derivative.
    w1 = jnp.ones((1, 1, 4, 8))
    pointwise = jax.jit(jax.grad(lambda x, w: F.conv(x, w, stride=2).sum(), argnums=(0, 1)))
    text = pointwise.trace(x, w1).lower(lowering_platforms=("cpu",)).as_text()
    assert "convolution" not in text and "dot_general" in text
    # The module goes through the same op.
    module = jnn.Conv(8, 3)
    variables = jax.eval_shape(module.init, jax.random.PRNGKey(0), x)
    assert _uses_fast_path(lambda v, x: module.apply(v, x), variables, x)


def test_auto_plan_per_pass():
    def plan(c_in, c_out, window=(3, 3)):
        pads = ((1, 1), (1, 1)) if window == (3, 3) else ((0, 0), (0, 0))
        return cpu_conv.plan(
            "auto", (8, 16, 16, c_in), jnp.float32, window, c_out, (1, 1), pads, (1, 1), None,
            channels_last=True, groups=1,
        )

    wide, thin_in, thin_out, pointwise = plan(64, 64), plan(3, 64), plan(64, 2), plan(64, 64, (1, 1))
    assert (wide.forward, wide.input_grad, wide.kernel_grad) == ("lax", "lax", "im2col")
    assert (thin_in.forward, thin_in.input_grad, thin_in.kernel_grad) == ("im2col", "im2col", "im2col")
    thin_both, grey = plan(1, 6), plan(1, 32)
    assert (thin_both.forward, thin_both.input_grad, thin_both.kernel_grad) == ("taps", "im2col", "lax")
    assert (grey.forward, grey.input_grad, grey.kernel_grad) == ("lax", "im2col", "im2col")
    # The sum over taps loops over chunks of at most half the batch (see taps_conv).
    assert thin_both.wide_chunk <= 4 and plan(3, 6).wide_chunk == 8
    assert (thin_out.forward, thin_out.input_grad, thin_out.kernel_grad) == ("im2col", "lax", "im2col")
    # A 1x1 window without padding is one matmul under "auto" (use_pointwise); the plan,
    # were it asked, would treat it as any other wide layer.
    assert (pointwise.forward, pointwise.input_grad, pointwise.kernel_grad) == ("lax", "lax", "im2col")
    assert cpu_conv.use_pointwise("auto", jnp.float32, (1, 1), ((0, 0),) * 2, channels_last=True, groups=1)
    assert not cpu_conv.use_pointwise("auto", jnp.float32, (1, 1), ((1, 1),) * 2, channels_last=True, groups=1)
    assert not cpu_conv.use_pointwise("im2col", jnp.float32, (1,), ((0, 0),), channels_last=True, groups=1)
    assert not cpu_conv.use_pointwise("auto", jnp.float32, (1, 1), ((0, 0),) * 2, channels_last=True, groups=2)
    assert not cpu_conv.use_pointwise("auto", jnp.bfloat16, (1, 1), ((0, 0),) * 2, channels_last=True, groups=1)


def test_auto_plan_takes_strided_input_gradients_by_phase():
    """Both compilation modes: XLA's defaults and jaxcnn's CPU options (where the planner
    otherwise leaves non-thin layers to lax)."""
    def plan(c_in, c_out, window=(5, 5), stride=(2, 2), dilation=(1, 1), xla_options=False):
        return cpu_conv.plan(
            "auto", (8, 16, 16, c_in), jnp.float32, window, c_out, stride, tuple((k // 2, k // 2) for k in window),
            dilation, None, channels_last=True, groups=1, xla_options=xla_options,
        )

    def passes(xla_options):
        return {
            "allconv": plan(32, 32, xla_options=xla_options), "wide": plan(64, 128, xla_options=xla_options),
            "unstrided": plan(32, 32, stride=(1, 1), xla_options=xla_options),
            "dilated": plan(32, 32, dilation=(2, 2), xla_options=xla_options),
            "thin": plan(3, 32, xla_options=xla_options), "pointwise": plan(32, 32, window=(1, 1), xla_options=xla_options),
        }

    default = passes(False)
    assert default["allconv"][4:7] == ("lax", "phase", "im2col")
    assert default["wide"].input_grad == "phase"
    assert default["unstrided"].input_grad == default["dilated"].input_grad == "lax"
    assert default["thin"].input_grad == "im2col"
    found = passes(True)
    assert found["allconv"][4:7] == ("lax", "phase", "lax")
    assert found["wide"][4:7] == ("lax", "phase", "lax")
    assert found["unstrided"] is found["dilated"] is found["pointwise"] is None
    assert found["thin"].input_grad == "im2col"
    # Single-channel inputs follow the same rule under both: a sum over taps up to 16 outputs.
    assert (plan(1, 6, xla_options=True).forward, plan(1, 32, xla_options=True).forward) == ("taps", "lax")


def test_jit_tells_the_kernels_its_options_and_never_switches_them_on():
    seen = []
    cpu.jit(lambda x: seen.append((cpu.enabled(), cpu._backend.current())) or x, backend="cpu")(jnp.zeros(()))
    with cpu.kernels(False):
        cpu.jit(lambda x: seen.append((cpu.enabled(), cpu._backend.current())) or x, backend="cpu")(jnp.zeros(1))
    assert seen == [(True, cpu.Kernels(xla_options=True)), (False, None)]
    assert cpu._backend.current() == cpu.Kernels(xla_options=False)  # restored after tracing


def test_no_environment_variable_changes_an_op(monkeypatch):
    x, w = jnp.ones((2, 8, 8, 4)), jnp.ones((3, 3, 4, 8))
    monkeypatch.setenv("JAXCNN_CONV_IMPL", "im2col")
    with cpu.kernels(False):
        assert not _uses_fast_path(lambda x, w: F.conv(x, w), x, w)
    with pytest.raises(ValueError, match="impl"):
        F.conv_transpose(x, w, impl="cudnn")
    with pytest.raises(ValueError, match="impl"):
        F.conv(x, w, impl="fastest")


def test_import_changes_no_global_setting():
    code = (
        "import os, jax\n"
        "before = (os.environ.get('XLA_FLAGS'), jax.config.jax_enable_x64, jax.config.jax_default_matmul_precision,"
        " jax.config.jax_numpy_dtype_promotion)\n"
        "import jaxcnn, jaxcnn.functional, jaxcnn.nn, jaxcnn.models\n"
        "after = (os.environ.get('XLA_FLAGS'), jax.config.jax_enable_x64, jax.config.jax_default_matmul_precision,"
        " jax.config.jax_numpy_dtype_promotion)\n"
        "assert before == after, (before, after)\n"
        "assert 'JAXCNN_CONV_IMPL' not in os.environ\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


# --------------------------------------------------------------------------- pooling


def _reduce_window_max(x, window, stride, padding):
    dims = (1, window, window, 1)
    return lax.reduce_window(x, -jnp.inf, lax.max, dims, (1, stride, stride, 1), ((0, 0), (padding,) * 2, (padding,) * 2, (0, 0)))


@pytest.mark.parametrize(
    "shape, window, stride, padding",
    [((2, 8, 8, 3), 2, 2, 0), ((2, 9, 7, 3), 2, 2, 0), ((2, 9, 9, 2), 3, 3, 0), ((2, 9, 8, 3), 3, 2, 1), ((1, 7, 7, 2), 3, 1, 1)],
)
def test_max_pool_matches_reduce_window(shape, window, stride, padding):
    """Distinct values: same output and gradient as the select-and-scatter reference."""
    x = jnp.asarray(np.random.default_rng(0).permutation(np.prod(shape)).reshape(shape).astype(np.float32))
    ours = lambda x: F.max_pool(x, window, stride, padding)  # noqa: E731
    ref = lambda x: _reduce_window_max(x, window, stride, padding)  # noqa: E731
    y = ref(x)
    ct = _random(y.shape, 3)
    np.testing.assert_array_equal(ours(x), y)
    np.testing.assert_array_equal(jax.vjp(ours, x)[1](ct)[0], jax.vjp(ref, x)[1](ct)[0])
    t = _random(x.shape, 4)
    np.testing.assert_array_equal(jax.jvp(ours, (x,), (t,))[1], jax.jvp(ref, (x,), (t,))[1])
    np.testing.assert_array_equal(jax.jit(jax.grad(lambda x: jnp.vdot(ours(x), ct)))(x), jax.vjp(ref, x)[1](ct)[0])


@pytest.mark.parametrize("window, stride, padding", [(2, 2, 0), (3, 3, 0), (3, 2, 1)])
def test_max_pool_ties_and_nans_follow_torch(window, stride, padding):
    """Ties: the first maximum (row-major) takes the gradient; a NaN wins the window.

    Which NaN takes the gradient: the last, as in PyTorch, for overlapping or padded
    windows; the first when ``stride == window`` (the reshape path, ``jnp.argmax``'s rule).
    """
    rng = np.random.default_rng(5)
    x = np.maximum(np.round(rng.standard_normal((2, 3, 9, 9))), 0.0).astype(np.float32)
    x[0, 0, 1, 1] = x[1, 2, 4, 3] = x[1, 2, 4, 4] = np.nan  # two NaNs share a window
    xt = torch.from_numpy(x).requires_grad_(True)
    yt = torch_f.max_pool2d(xt, window, stride, padding)
    ct = rng.standard_normal(tuple(yt.shape)).astype(np.float32)
    yt.backward(torch.from_numpy(ct))
    expected = xt.grad.numpy().copy()
    if window == stride and 3 // stride == 4 // stride:  # both NaNs in one window
        expected[1, 2, 4, 3], expected[1, 2, 4, 4] = expected[1, 2, 4, 4], expected[1, 2, 4, 3]
    y, pullback = jax.vjp(lambda x: F.max_pool(x, window, stride, padding, layout="NCHW"), jnp.asarray(x))
    np.testing.assert_array_equal(y, yt.detach().numpy())
    np.testing.assert_array_equal(pullback(jnp.asarray(ct))[0], expected)


@pytest.mark.parametrize("impl", ["auto", "im2col"])
def test_empty_batch_gives_an_empty_result(impl):
    x = jnp.zeros((0, 8, 8, 3), jnp.float32)
    assert F.conv(x, jnp.zeros((3, 3, 3, 4), jnp.float32), impl=impl).shape == (0, 6, 6, 4)
    assert F.conv_transpose(x, jnp.zeros((3, 3, 3, 2), jnp.float32), stride=2, impl=impl).shape == (0, 17, 17, 2)
    assert F.max_pool(x, 2).shape == (0, 4, 4, 3)
