"""Pooling and unpooling against PyTorch, naive NumPy loops and hand-computed values."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from jax import lax
from jax.test_util import check_grads

from jaxcnn.backends import cpu
from jaxcnn.functional.pooling import (
    adaptive_avg_pool,
    adaptive_max_pool,
    avg_pool,
    global_avg_pool,
    global_max_pool,
    max_pool,
    max_pool_with_indices,
    max_unpool,
    min_pool,
)

# Spatial shapes per rank: odd and uneven sizes, so ceil_mode and cropping matter.
SPATIAL = {1: (9,), 2: (7, 6), 3: (5, 4, 5)}
TORCH_MAX = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}
TORCH_AVG = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}
TORCH_UNPOOL = {1: F.max_unpool1d, 2: F.max_unpool2d, 3: F.max_unpool3d}
TORCH_ADAPTIVE_AVG = {1: F.adaptive_avg_pool1d, 2: F.adaptive_avg_pool2d, 3: F.adaptive_avg_pool3d}
TORCH_ADAPTIVE_MAX = {1: F.adaptive_max_pool1d, 2: F.adaptive_max_pool2d, 3: F.adaptive_max_pool3d}

# (window, stride, padding, dilation, ceil_mode); an int applies to every spatial axis.
MAX_CASES = [
    (2, None, 0, 1, False),  # stride == window: the reshape fast path (with cropping)
    (2, None, 0, 1, True),  # ceil_mode on odd sizes adds a partial window
    (3, 2, 1, 1, False),
    (3, 2, 1, 1, True),
    (3, 1, 1, 2, False),
    (2, 3, 1, 2, True),
    (3, 3, 1, 1, True),  # a last window starting in the padding is dropped
    (1, 2, 0, 1, True),
]
AVG_CASES = [c for c in MAX_CASES if c[3] == 1] + [(3, 2, 0, 1, True), (2, 1, 1, 1, True)]
# Spatial rank and layout are independent; both layouts at rank 2 and one each elsewhere.
RANK_LAYOUTS = [(1, "NCHW"), (2, "NHWC"), (2, "NCHW"), (3, "NHWC")]


def _per_axis(value, n, bump):
    """An int, or per-axis ints varied by ``bump`` so axes differ (kept within torch's rules)."""
    if value is None or n == 1 or bump == 0:
        return value
    return tuple(value + (bump if i == n - 1 else 0) for i in range(n))


def _random(shape, seed=0, dtype=np.float32):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def _distinct(shape, seed=0):
    """Distinct values 0.1 apart, so a small finite-difference step never changes a max."""
    values = np.random.default_rng(seed).permutation(int(np.prod(shape))).astype(np.float32)
    return (0.1 * values - 0.05 * values.size).reshape(shape)


def _nchw(x, layout):
    return x if layout == "NCHW" else np.moveaxis(x, -1, 1)


def _from_nchw(y, layout):
    y = y.detach().numpy() if isinstance(y, torch.Tensor) else y
    return y if layout == "NCHW" else np.moveaxis(y, 1, -1)


def _input(n, layout, seed=0, distinct=False):
    shape = (2, 3) + SPATIAL[n] if layout == "NCHW" else (2,) + SPATIAL[n] + (3,)
    return _distinct(shape, seed) if distinct else _random(shape, seed)


def _torch_args(window, stride, padding, dilation):
    stride = window if stride is None else stride
    return {"kernel_size": window, "stride": stride, "padding": padding, "dilation": dilation}


# ---------------------------------------------------------------------------------------------
# PyTorch parity over a grid


@pytest.mark.parametrize("n, layout", RANK_LAYOUTS)
@pytest.mark.parametrize("case", MAX_CASES)
def test_max_pool_and_indices_match_torch(case, n, layout):
    window, stride, padding, dilation, ceil_mode = case
    if n > 1 and case == MAX_CASES[2]:  # one per-axis variant: different window and stride per axis
        window, stride = _per_axis(window, n, -1), _per_axis(stride, n, -1)
    x = _input(n, layout)
    ref, ref_idx = TORCH_MAX[n](
        torch.from_numpy(_nchw(x, layout)),
        **_torch_args(window, stride, padding, dilation),
        ceil_mode=ceil_mode,
        return_indices=True,
    )
    kw = {"dilation": dilation, "ceil_mode": ceil_mode, "layout": layout}
    y = max_pool(x, window, stride, padding, **kw)
    np.testing.assert_array_equal(np.asarray(y), _from_nchw(ref, layout))
    values, indices = max_pool_with_indices(x, window, stride, padding, **kw)
    np.testing.assert_array_equal(np.asarray(values), _from_nchw(ref, layout))
    np.testing.assert_array_equal(np.asarray(indices), _from_nchw(ref_idx, layout))
    assert indices.dtype == jnp.int32
    if n != 2:
        return
    # min_pool is max_pool's mirror (padding is +inf).
    ref_min = -TORCH_MAX[n](
        torch.from_numpy(-_nchw(x, layout)),
        **_torch_args(window, stride, padding, dilation),
        ceil_mode=ceil_mode,
    )
    np.testing.assert_array_equal(
        np.asarray(min_pool(x, window, stride, padding, **kw)), _from_nchw(ref_min, layout)
    )


@pytest.mark.parametrize("n, layout", RANK_LAYOUTS)
@pytest.mark.parametrize("case", AVG_CASES)
def test_avg_pool_matches_torch(case, n, layout):
    window, stride, padding, _, ceil_mode = case
    if n > 1 and case == AVG_CASES[2]:
        window, stride = _per_axis(window, n, -1), _per_axis(stride, n, -1)
    x = _input(n, layout)
    xt = torch.from_numpy(_nchw(x, layout))
    targs = _torch_args(window, stride, padding, 1)
    del targs["dilation"]
    for count_include_pad, divisor_override in [(True, None), (False, None), (True, 5)]:
        if n == 1 and divisor_override is not None:
            continue  # avg_pool1d has no divisor_override
        extra = {} if divisor_override is None else {"divisor_override": divisor_override}
        ref = TORCH_AVG[n](xt, **targs, ceil_mode=ceil_mode, count_include_pad=count_include_pad, **extra)
        y = avg_pool(
            x,
            window,
            stride,
            padding,
            ceil_mode=ceil_mode,
            count_include_pad=count_include_pad,
            divisor_override=divisor_override,
            layout=layout,
        )
        np.testing.assert_allclose(np.asarray(y), _from_nchw(ref, layout), rtol=1e-6, atol=1e-6)


def test_ceil_mode_window_larger_than_input_matches_torch():
    # PyTorch accepts this in ceil mode (one window); in floor mode it is an error.
    x = np.array([[[1.0, 2.0]]], np.float32)
    np.testing.assert_array_equal(
        max_pool(x, 3, 2, ceil_mode=True, layout="NCHW"),
        F.max_pool1d(torch.from_numpy(x), 3, 2, ceil_mode=True),
    )
    np.testing.assert_allclose(
        avg_pool(x, 3, 2, ceil_mode=True, layout="NCHW"),
        F.avg_pool1d(torch.from_numpy(x), 3, 2, ceil_mode=True),
    )


def test_same_padding():
    # "SAME" output is ceil(in / stride), padding at the end where uneven: like explicit pairs.
    x = _random((2, 7, 6, 3))
    y = max_pool(x, 3, 2, "SAME")
    assert y.shape == (2, 4, 3, 3)
    np.testing.assert_array_equal(y, max_pool(x, 3, 2, ((1, 1), (0, 1))))
    np.testing.assert_allclose(avg_pool(x, 2, 1, "same"), avg_pool(x, 2, 1, ((0, 1), (0, 1))))
    np.testing.assert_array_equal(max_pool(x, 2, 2, "VALID"), max_pool(x, 2))


@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
@pytest.mark.parametrize(
    "n, window, stride, padding, output_size",
    [
        (1, 2, None, 0, None),
        (1, 3, 2, 1, (10,)),
        (2, 2, None, 0, None),
        (2, 2, None, 0, (7, 6)),  # the odd row/column the pooling dropped comes back as zeros
        (2, 3, 2, 1, (7, 6)),
        (2, (2, 3), (2, 2), (1, 0), (7, 6)),  # the default size would be (6, 5)
        (3, 2, None, 0, (5, 5, 5)),
    ],
)
def test_max_unpool_matches_torch(n, window, stride, padding, output_size, layout):
    x = _input(n, layout, distinct=True)
    targs = _torch_args(window, stride, padding, 1)
    del targs["dilation"]
    xt = torch.from_numpy(_nchw(x, layout))
    pooled, idx = TORCH_MAX[n](xt, **targs, return_indices=True)
    ref = TORCH_UNPOOL[n](pooled, idx, **targs, output_size=output_size)
    values, indices = max_pool_with_indices(x, window, stride, padding, layout=layout)
    y = max_unpool(values, indices, window, stride, padding, output_size=output_size, layout=layout)
    np.testing.assert_array_equal(np.asarray(y), _from_nchw(ref, layout))
    if output_size is not None:  # the full shape is accepted too, as in PyTorch
        full = (2, 3) + output_size if layout == "NCHW" else (2,) + output_size + (3,)
        y_full = max_unpool(values, indices, window, stride, padding, output_size=full, layout=layout)
        np.testing.assert_array_equal(y_full, y)


@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
@pytest.mark.parametrize(
    "n, output_size",
    [
        (1, 4),
        (1, 12),
        (2, (3, 4)),
        (2, (2, 2)),
        (2, (7, 6)),
        (2, (1, 1)),
        (2, (4, None)),
        (2, (10, 5)),
        (3, (2, 3, 4)),
    ],
)
def test_adaptive_pools_match_torch(n, output_size, layout):
    x = _input(n, layout)
    xt = torch.from_numpy(_nchw(x, layout))
    ref_avg = TORCH_ADAPTIVE_AVG[n](xt, output_size)
    ref_max = TORCH_ADAPTIVE_MAX[n](xt, output_size)
    np.testing.assert_allclose(
        np.asarray(adaptive_avg_pool(x, output_size, layout=layout)),
        _from_nchw(ref_avg, layout),
        rtol=1e-6,
        atol=1e-6,
    )
    np.testing.assert_array_equal(
        np.asarray(adaptive_max_pool(x, output_size, layout=layout)), _from_nchw(ref_max, layout)
    )


@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
@pytest.mark.parametrize("n", [1, 2, 3])
def test_global_pools(n, layout):
    x = _input(n, layout)
    axes = tuple(range(1, n + 1)) if layout == "NHWC" else tuple(range(2, n + 2))
    np.testing.assert_allclose(global_avg_pool(x, layout=layout), x.mean(axis=axes), rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(global_max_pool(x, layout=layout), x.max(axis=axes))
    kept = global_avg_pool(x, keepdims=True, layout=layout)
    assert kept.shape == x.mean(axis=axes, keepdims=True).shape
    assert global_max_pool(x, keepdims=True, layout=layout).shape == kept.shape
    # Same as PyTorch's adaptive pooling to size 1.
    ref = TORCH_ADAPTIVE_AVG[n](torch.from_numpy(_nchw(x, layout)), 1)
    np.testing.assert_allclose(kept, _from_nchw(ref, layout), rtol=1e-6, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# Naive NumPy loops and hand-computed values


def _naive_pool2d(x, k, s, p, ceil_mode, kind, count_include_pad=True):
    """PyTorch's 2D max/avg pooling, one window at a time, for NHWC input."""
    n, h, w, c = x.shape

    def out_size(size):
        span = size + 2 * p - k
        out = (-(-span // s) if ceil_mode else span // s) + 1
        if ceil_mode and (out - 1) * s >= size + p:
            out -= 1
        return out

    oh, ow = out_size(h), out_size(w)
    y = np.zeros((n, oh, ow, c), x.dtype)
    for i, j in itertools.product(range(oh), range(ow)):
        h0, w0 = i * s - p, j * s - p
        h1, w1 = min(h0 + k, h + p), min(w0 + k, w + p)
        pool_size = (h1 - h0) * (w1 - w0)
        cells = x[:, max(h0, 0) : min(h1, h), max(w0, 0) : min(w1, w), :]
        if kind == "max":
            y[:, i, j, :] = cells.max(axis=(1, 2))
        else:
            divisor = pool_size if count_include_pad else cells.shape[1] * cells.shape[2]
            y[:, i, j, :] = cells.sum(axis=(1, 2)) / divisor
    return y


@pytest.mark.parametrize(
    "k, s, p, ceil_mode", [(2, 2, 0, False), (3, 2, 1, True), (2, 1, 1, False), (3, 3, 1, True)]
)
def test_against_naive_loops(k, s, p, ceil_mode):
    x = _random((2, 6, 7, 3), seed=3)
    np.testing.assert_array_equal(
        max_pool(x, k, s, p, ceil_mode=ceil_mode), _naive_pool2d(x, k, s, p, ceil_mode, "max")
    )
    for cip in (True, False):
        np.testing.assert_allclose(
            avg_pool(x, k, s, p, ceil_mode=ceil_mode, count_include_pad=cip),
            _naive_pool2d(x, k, s, p, ceil_mode, "avg", cip),
            rtol=1e-6,
            atol=1e-6,
        )


def test_hand_computed_2d():
    x = jnp.arange(1.0, 10.0).reshape(1, 3, 3, 1)  # [[1, 2, 3], [4, 5, 6], [7, 8, 9]]
    np.testing.assert_array_equal(avg_pool(x, 2, 1)[0, :, :, 0], [[3.0, 4.0], [6.0, 7.0]])
    # window 2, stride 2, padding 1: windows cover rows/cols {-1, 0} and {1, 2}.
    np.testing.assert_array_equal(avg_pool(x, 2, 2, 1)[0, :, :, 0], [[0.25, 1.25], [2.75, 7.0]])
    np.testing.assert_array_equal(
        avg_pool(x, 2, 2, 1, count_include_pad=False)[0, :, :, 0], [[1.0, 2.5], [5.5, 7.0]]
    )
    values, indices = max_pool_with_indices(x, 2, 2, 1)
    np.testing.assert_array_equal(values[0, :, :, 0], [[1.0, 3.0], [7.0, 9.0]])
    np.testing.assert_array_equal(indices[0, :, :, 0], [[0, 2], [6, 8]])
    np.testing.assert_array_equal(
        max_unpool(values, indices, 2, 2, 1, output_size=(3, 3))[0, :, :, 0],
        [[1, 0, 3], [0, 0, 0], [7, 0, 9]],
    )
    np.testing.assert_array_equal(global_avg_pool(x), [[5.0]])


def test_hand_computed_ceil_mode_1d():
    x = jnp.array([[[1.0, 2.0, 3.0, 4.0]]])  # NCW
    # window 3, stride 2, padding 1, ceil: windows {-1,0,1}, {1,2,3}, {3,4,5}; the last one
    # counts the explicit pad (4) but not the ceil region (5): divisor 2.
    np.testing.assert_array_equal(avg_pool(x, 3, 2, 1, ceil_mode=True, layout="NCHW")[0, 0], [1.0, 3.0, 2.0])
    np.testing.assert_array_equal(
        avg_pool(x, 3, 2, 1, ceil_mode=True, count_include_pad=False, layout="NCHW")[0, 0], [1.5, 3.0, 4.0]
    )
    np.testing.assert_array_equal(max_pool(x, 3, 2, 1, ceil_mode=True, layout="NCHW")[0, 0], [2.0, 4.0, 4.0])
    x5 = jnp.array([[[1.0, 2.0, 3.0, 4.0, 5.0]]])
    np.testing.assert_array_equal(avg_pool(x5, 2, ceil_mode=True, layout="NCHW")[0, 0], [1.5, 3.5, 5.0])
    np.testing.assert_array_equal(max_pool(x5, 2, ceil_mode=True, layout="NCHW")[0, 0], [2.0, 4.0, 5.0])


def test_adaptive_bins_hand_computed():
    # 5 -> 3 bins: [0, 2), [1, 4), [3, 5).
    x = jnp.array([[[1.0, 2.0, 3.0, 4.0, 10.0]]])
    np.testing.assert_allclose(adaptive_avg_pool(x, 3, layout="NCHW")[0, 0], [1.5, 3.0, 7.0])
    np.testing.assert_array_equal(adaptive_max_pool(x, 3, layout="NCHW")[0, 0], [2.0, 4.0, 10.0])


def test_indices_ties_and_integers():
    # Ties: the first maximum in row-major window order wins, as in PyTorch.
    x = np.array([[[[1, 5, 5], [5, 2, 5], [0, 5, 1]]]], np.float32)
    _, indices = max_pool_with_indices(x, 2, 1, layout="NCHW")
    _, ref = F.max_pool2d(torch.from_numpy(x), 2, 1, return_indices=True)
    np.testing.assert_array_equal(indices, ref.numpy())
    np.testing.assert_array_equal(indices[0, 0], [[1, 1], [3, 5]])
    xi = np.arange(24, dtype=np.int32).reshape(1, 4, 6, 1)
    np.testing.assert_array_equal(max_pool(xi, 2)[0, :, :, 0], [[7, 9, 11], [19, 21, 23]])
    np.testing.assert_array_equal(min_pool(xi, 3, 2, 1)[0, :, :, 0], [[0, 1, 3], [6, 7, 9]])
    np.testing.assert_array_equal(max_pool_with_indices(xi, 3, 2, 1)[0], max_pool(xi, 3, 2, 1))


# ---------------------------------------------------------------------------------------------
# Gradients


@pytest.mark.parametrize(
    "window, stride, padding, ceil_mode, count_include_pad",
    [
        (2, None, 0, False, True),
        (3, 2, 1, True, True),
        (3, 2, 1, True, False),
        ((2, 3), (1, 2), (1, 0), False, True),
    ],
)
def test_avg_pool_check_grads(window, stride, padding, ceil_mode, count_include_pad):
    x = jnp.asarray(_random((2, 5, 6, 2)))

    def f(x):
        return avg_pool(x, window, stride, padding, ceil_mode=ceil_mode, count_include_pad=count_include_pad)

    # Second order once: it caught reduce_window losing its monoid under jit + linearize.
    order = 2 if ceil_mode else 1
    check_grads(f, (x,), order=order, modes=("fwd", "rev"), atol=1e-2, rtol=1e-2)


@pytest.mark.parametrize(
    "window, stride, padding, dilation, ceil_mode",
    [(2, None, 0, 1, False), (2, None, 0, 1, True), (3, 2, 1, 1, True), (2, 1, 0, 2, False)],
)
def test_max_pool_check_grads(window, stride, padding, dilation, ceil_mode):
    x = jnp.asarray(_distinct((2, 5, 6, 2)))
    kw = {"dilation": dilation, "ceil_mode": ceil_mode}
    check_grads(
        lambda x: max_pool(x, window, stride, padding, **kw), (x,), order=1, modes=("fwd", "rev"), eps=1e-2
    )
    if stride is not None:  # the overlapping windows: also the other paths
        check_grads(
            lambda x: max_pool_with_indices(x, window, stride, padding, **kw)[0],
            (x,),
            order=1,
            modes=("rev",),
            eps=1e-2,
        )
        check_grads(
            lambda x: min_pool(x, window, stride, padding, **kw), (x,), order=1, modes=("rev",), eps=1e-2
        )


def test_other_pools_check_grads():
    x = jnp.asarray(_distinct((2, 5, 7, 2)))
    for f in [
        lambda x: adaptive_max_pool(x, (2, 3)),
        lambda x: adaptive_avg_pool(x, (3, 4)),
        lambda x: global_max_pool(x),
        lambda x: global_avg_pool(x, layout="NCHW"),
        lambda x: max_unpool(*max_pool_with_indices(x, 2), 2),
    ]:
        check_grads(f, (x,), order=1, modes=("fwd", "rev"), eps=1e-2)


@pytest.mark.parametrize(
    "n, layout, is_max", [(n, layout, n != 1) for n, layout in RANK_LAYOUTS] + [(2, "NHWC", False)]
)
def test_fast_path_equals_reduce_window(n, layout, is_max):
    """With the CPU backend on, ``stride == window`` takes its reshape kernel: same values and
    gradients as reduce_window."""
    x = jnp.asarray(_input(n, layout, distinct=True))  # odd sizes: the remainder is cropped
    dims = (1, *(2,) * n, 1) if layout == "NHWC" else (1, 1, *(2,) * n)

    def reference(x):
        return lax.reduce_window(
            x, -np.inf if is_max else np.inf, lax.max if is_max else lax.min, dims, dims, "VALID"
        )

    def fast(x):
        return (max_pool if is_max else min_pool)(x, 2, layout=layout)

    @jax.jit
    def value_vjp_jvp(x, cotangent):
        out = {}
        for name, f in [("fast", fast), ("reference", reference)]:
            y, pullback = jax.vjp(f, x)
            out[name] = (y, pullback(cotangent)[0], jax.jvp(f, (x,), (x,))[1])
        return out

    cotangent = jnp.asarray(_random(reference(x).shape, 7))
    with cpu.kernels():
        out = value_vjp_jvp(x, cotangent)
    for a, b in zip(out["fast"], out["reference"]):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("window, stride, padding", [(2, None, 0), (3, 2, 1), (2, 1, 0)])
def test_max_pool_gradient_with_ties_matches_torch(window, stride, padding):
    # ReLU-like input with many exact ties: the whole gradient goes to the first maximum.
    x = np.maximum(np.round(_random((2, 3, 6, 7), seed=5)), 0.0).astype(np.float32)
    xt = torch.from_numpy(x).requires_grad_(True)
    cot = _random(tuple(F.max_pool2d(xt, window, stride, padding).shape), seed=6)
    F.max_pool2d(xt, window, stride, padding).backward(torch.from_numpy(cot))
    for fn in (max_pool, lambda *a, **k: max_pool_with_indices(*a, **k)[0]):

        def pool(x, fn=fn):
            return fn(x, window, stride, padding, layout="NCHW")

        grad = jax.vjp(pool, jnp.asarray(x))[1](jnp.asarray(cot))[0]
        np.testing.assert_array_equal(grad, xt.grad.numpy())
    if stride is not None:
        return
    xg = torch.from_numpy(x).requires_grad_(True)
    F.adaptive_max_pool2d(xg, (3, 3)).sum().backward()
    grad = jax.grad(lambda x: adaptive_max_pool(x, (3, 3), layout="NCHW").sum())(jnp.asarray(x))
    np.testing.assert_array_equal(grad, xg.grad.numpy())


def test_tiled_max_pool_gradient_goes_to_first_nan_or_first_tie():
    # The CPU backend's reshape kernel. Hand-computed, 2x2 windows in row-major order: (0,0) (0,1) / (1,0) (1,1).
    nan = np.nan
    x = np.array(
        [
            [1.0, nan, 5.0, 5.0],
            [nan, 2.0, 5.0, 1.0],
            [0.0, 0.0, 3.0, 4.0],
            [0.0, 0.0, 9.0, 2.0],
        ],
        np.float32,
    )[None, :, :, None]
    with cpu.kernels():
        y, pullback = jax.vjp(lambda x: max_pool(x, 2), jnp.asarray(x))
    np.testing.assert_array_equal(y[0, :, :, 0], [[nan, 5.0], [0.0, 9.0]])
    expected = np.zeros((4, 4), np.float32)
    expected[0, 1] = 1.0  # the first NaN, not the second
    expected[0, 2] = 2.0  # the first of three fives
    expected[2, 0] = 3.0  # the first of four zeros
    expected[3, 2] = 4.0
    grad = pullback(jnp.asarray(np.array([[1.0, 2.0], [3.0, 4.0]], np.float32)[None, :, :, None]))[0]
    np.testing.assert_array_equal(grad[0, :, :, 0], expected)


# ---------------------------------------------------------------------------------------------
# jit, vmap, bfloat16: every op through one table

OPS = {
    "max_pool": lambda x: max_pool(x, 3, 2, 1, ceil_mode=True),
    "max_pool_fast": lambda x: max_pool(x, 2),
    "min_pool": lambda x: min_pool(x, (2, 3), 1, dilation=(2, 1)),
    "avg_pool": lambda x: avg_pool(x, 3, 2, 1, ceil_mode=True, count_include_pad=False),
    "global_avg_pool": lambda x: global_avg_pool(x),
    "global_max_pool": lambda x: global_max_pool(x, keepdims=True),
    "adaptive_avg_pool": lambda x: adaptive_avg_pool(x, (3, 2)),
    "adaptive_max_pool": lambda x: adaptive_max_pool(x, (4, 3), layout="NCHW"),
    "max_pool_with_indices": lambda x: max_pool_with_indices(x, 3, 2, 1, layout="NCHW"),
    "max_unpool": lambda x: max_unpool(*max_pool_with_indices(x, 2), 2, output_size=(5, 7)),
}


@pytest.mark.parametrize("name", list(OPS))
def test_jit_vmap_bfloat16(name):
    op = OPS[name]
    x = jnp.asarray(_distinct((2, 5, 7, 3)))
    eager = op(x)
    jax.tree.map(np.testing.assert_array_equal, jax.jit(op)(x), eager)
    batch = jnp.stack([x, 2.0 * x])
    batched = jax.vmap(op)(batch)
    jax.tree.map(lambda b, e: np.testing.assert_array_equal(b[0], e), batched, eager)
    jax.tree.map(lambda b, e: np.testing.assert_array_equal(b[1], e), batched, op(2.0 * x))
    low = op(x.astype(jnp.bfloat16))
    for lo, hi in zip(jax.tree.leaves(low), jax.tree.leaves(eager)):
        if jnp.issubdtype(hi.dtype, jnp.floating):
            assert lo.dtype == jnp.bfloat16
            np.testing.assert_allclose(np.asarray(lo, np.float32), hi, rtol=2e-2, atol=2e-2)


# ---------------------------------------------------------------------------------------------
# Argument validation: clear errors before XLA


@pytest.mark.parametrize(
    "call, error, match",
    [
        (
            lambda: max_pool(np.zeros((4, 4), np.float32), 2),
            ValueError,
            r"max_pool: x must have rank 3 or 4 or 5.*\(4, 4\)",
        ),
        (
            lambda: avg_pool(np.zeros((1, 2, 3, 4, 5, 6), np.float32), 2),
            ValueError,
            r"avg_pool: x must have rank",
        ),
        (lambda: max_pool(np.zeros((1, 4, 4, 1)), 2, layout="HWNC"), ValueError, r"unknown layout='HWNC'"),
        (
            lambda: max_pool(np.zeros((1, 4, 4, 1)), 2, layout="NCW"),
            ValueError,
            r"is for 1 spatial dimension",
        ),
        (lambda: max_pool(np.zeros((1, 4, 4, 1)), 0), ValueError, r"max_pool: window must be >= 1"),
        (lambda: max_pool(np.zeros((1, 4, 4, 1)), (2, -1)), ValueError, r"window must be >= 1"),
        (lambda: avg_pool(np.zeros((1, 4, 4, 1)), 2, 0), ValueError, r"avg_pool: stride must be >= 1"),
        (lambda: max_pool(np.zeros((1, 4, 4, 1)), 2, dilation=0), ValueError, r"dilation must be >= 1"),
        (
            lambda: max_pool(np.zeros((1, 4, 4, 1)), (2, 2, 2)),
            ValueError,
            r"window=\(2, 2, 2\) has 3 entries",
        ),
        (lambda: max_pool(np.zeros((1, 4, 4, 1)), 2.5), TypeError, r"window must be an int"),
        (
            lambda: max_pool(np.zeros((1, 3, 3, 1)), 4),
            ValueError,
            r"window is larger than the padded input.*\(1, 3, 3, 1\)",
        ),
        (lambda: max_pool(np.zeros((1, 3, 3, 1)), 3, dilation=2), ValueError, r"dilated window 5"),
        (
            lambda: max_pool(np.zeros((1, 8, 8, 1)), 2, padding=2),
            ValueError,
            r"padding must be at most half the window.*\(2, 2\).*window 2",
        ),
        (
            lambda: avg_pool(np.zeros((1, 8, 8, 1)), 3, padding=((1, 2), (0, 0))),
            ValueError,
            r"at most half the window",
        ),
        (
            lambda: max_pool(np.zeros((1, 8, 8, 1)), 2, padding=-1),
            ValueError,
            r"padding must be non-negative",
        ),
        (
            lambda: max_pool(np.zeros((1, 8, 8, 1)), 2, padding="FULL"),
            ValueError,
            r"padding='FULL' is not understood",
        ),
        (lambda: max_pool(np.zeros((1, 8, 8, 1)), 2, ceil_mode=1), TypeError, r"ceil_mode must be a bool"),
        (
            lambda: avg_pool(np.zeros((1, 4, 4, 1), np.int32), 2),
            TypeError,
            r"avg_pool: x must have a floating dtype",
        ),
        (lambda: max_pool(np.zeros((1, 4, 4, 1), bool), 2), TypeError, r"floating or integer dtype"),
        (
            lambda: avg_pool(np.zeros((1, 4, 4, 1)), 2, divisor_override=0),
            ValueError,
            r"divisor_override must be",
        ),
        (
            lambda: avg_pool(np.zeros((1, 4, 4, 1)), 2, count_include_pad=None),
            TypeError,
            r"count_include_pad must be a bool",
        ),
        (
            lambda: max_pool_with_indices(np.zeros((1, 3, 3, 1)), 4),
            ValueError,
            r"max_pool_with_indices: window is larger",
        ),
        (lambda: global_avg_pool(np.zeros((4, 4))), ValueError, r"global_avg_pool: x must have rank"),
        (lambda: global_max_pool(np.zeros((1, 4, 4, 1)), layout="XY"), ValueError, r"unknown layout"),
        (lambda: adaptive_avg_pool(np.zeros((1, 4, 4, 1)), 0), ValueError, r"output_size must be >= 1"),
        (
            lambda: adaptive_max_pool(np.zeros((1, 4, 4, 1)), (2, 2, 2)),
            ValueError,
            r"output_size=\(2, 2, 2\) has 3",
        ),
        (lambda: adaptive_avg_pool(np.zeros((1, 0, 4, 1)), 2), ValueError, r"spatial axis 0 of x is empty"),
        (
            lambda: max_unpool(np.zeros((1, 2, 2, 1)), np.zeros((1, 2, 3, 1), np.int32), 2),
            ValueError,
            r"indices must have x's shape \(1, 2, 2, 1\), got shape \(1, 2, 3, 1\)",
        ),
        (lambda: max_unpool(np.zeros((1, 2, 2, 1)), np.zeros((1, 2, 2, 1)), 2), TypeError, r"integer dtype"),
        (
            lambda: max_unpool(
                np.zeros((1, 2, 2, 1)), np.zeros((1, 2, 2, 1), np.int32), 2, output_size=(6, 4)
            ),
            ValueError,
            r"output_size=\(6, 4\) is out of range on spatial axis 0: must lie strictly between 2 and 6",
        ),
        (
            lambda: max_unpool(np.zeros((1, 2, 2, 1)), np.zeros((1, 2, 2, 1), np.int32), 2, padding="SAME"),
            ValueError,
            r"SAME",
        ),
    ],
)
def test_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()


# ---------------------------------------------------------------------------------------------
# Parity with PyTorch where its sample inputs found gaps


@pytest.mark.parametrize("n, layout", [(1, "NCHW"), (2, "NCHW"), (2, "NHWC"), (3, "NCHW")])
def test_max_unpool_gradient_with_repeated_indices_matches_torch(n, layout):
    """Window 3, stride 2: neighbouring windows share a maximum, so indices repeat. PyTorch's
    input gradient gathers grad_out at each index: every duplicate receives it."""
    spatial = {1: (9,), 2: (7, 6), 3: (5, 5, 5)}[n]
    rng = np.random.default_rng(n)
    x = rng.integers(0, 4, size=(2, 3) + spatial).astype(np.float32)  # ties make repeats likely
    pooled, idx = TORCH_MAX[n](torch.from_numpy(x), 3, stride=2, return_indices=True)
    flat = idx.reshape(6, -1).numpy()
    assert any(len(np.unique(r)) < len(r) for r in flat)  # the case under test occurs
    out_size = tuple((s - 3) // 2 * 2 + 3 for s in spatial)
    grad_out = rng.standard_normal((2, 3) + out_size).astype(np.float32)
    values = pooled.detach().clone().requires_grad_(True)
    TORCH_UNPOOL[n](values, idx, 3, stride=2, output_size=out_size).backward(torch.from_numpy(grad_out))
    expected = values.grad.numpy()

    def to_layout(a):
        return a if layout == "NCHW" else np.moveaxis(a, 1, -1)

    def unpool(v):
        return max_unpool(v, to_layout(idx.numpy()), 3, 2, output_size=out_size, layout=layout)

    _, vjp = jax.vjp(unpool, jnp.asarray(to_layout(pooled.detach().numpy())))
    (got,) = vjp(jnp.asarray(to_layout(grad_out)))
    np.testing.assert_allclose(np.asarray(got), to_layout(expected), rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(jax.jit(unpool)(to_layout(pooled.detach().numpy()))),
                                  to_layout(TORCH_UNPOOL[n](pooled, idx, 3, stride=2, output_size=out_size).numpy()))
