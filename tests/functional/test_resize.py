"""upsample against torch.nn.functional.interpolate and hand-computed values."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from jax.test_util import check_grads

from jaxcnn.functional.resize import upsample

SPATIAL = {1: (5,), 2: (4, 5), 3: (3, 4, 3)}
LINEAR_NAME = {1: "linear", 2: "bilinear", 3: "trilinear"}
# Spatial rank and layout are independent; both layouts at rank 2 and one each elsewhere.
RANK_LAYOUTS = [(1, "NCHW"), (2, "NHWC"), (2, "NCHW"), (3, "NHWC")]
# (size, scale_factor): integer and fractional factors, up and down, per-axis values.
RESIZES = [
    (None, 2),
    (None, 1.7),
    (None, 0.6),
    ("odd", None),  # an explicit size per axis: 2 * in + 1 (5 -> 11 ...), not a round factor
    ("down", None),  # in - 1
]


def _random(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _nchw(x, layout):
    return x if layout == "NCHW" else np.moveaxis(x, -1, 1)


def _from_nchw(y, layout):
    y = y.detach().numpy() if isinstance(y, torch.Tensor) else y
    return y if layout == "NCHW" else np.moveaxis(y, 1, -1)


def _input(n, layout, seed=0):
    shape = (2, 3) + SPATIAL[n] if layout == "NCHW" else (2,) + SPATIAL[n] + (3,)
    return _random(shape, seed)


def _size(kind, n):
    if kind is None:
        return None
    change = {"odd": lambda s: 2 * s + 1, "down": lambda s: s - 1, "same": lambda s: s}[kind]
    return tuple(change(s) for s in SPATIAL[n])


@pytest.mark.parametrize("n, layout", RANK_LAYOUTS)
@pytest.mark.parametrize("size_kind, scale_factor", RESIZES)
@pytest.mark.parametrize(
    "method, align_corners",
    [("nearest", False), ("nearest-exact", False), ("linear", False), ("linear", True)],
)
def test_matches_torch(method, align_corners, size_kind, scale_factor, n, layout):
    x = _input(n, layout)
    size = _size(size_kind, n)
    mode = LINEAR_NAME[n] if method == "linear" else method
    ref = F.interpolate(
        torch.from_numpy(_nchw(x, layout)),
        size=size,
        scale_factor=scale_factor,
        mode=mode,
        align_corners=align_corners if method == "linear" else None,
    )
    y = upsample(x, scale_factor, size, method=mode, align_corners=align_corners, layout=layout)
    if method == "linear":
        np.testing.assert_allclose(np.asarray(y), _from_nchw(ref, layout), rtol=1e-6, atol=1e-6)
    else:  # nearest picks the very same cells
        np.testing.assert_array_equal(np.asarray(y), _from_nchw(ref, layout))


@pytest.mark.parametrize("method", ["nearest", "linear", "area"])
@pytest.mark.parametrize("scale_factor", [1.7, (0.6, 2.5)])
def test_recompute_scale_factor_matches_torch(method, scale_factor):
    x = _input(2, "NCHW", seed=1)
    ref = F.interpolate(
        torch.from_numpy(x),
        scale_factor=scale_factor,
        mode="bilinear" if method == "linear" else method,
        recompute_scale_factor=True,
    )
    y = upsample(x, scale_factor, method=method, recompute_scale_factor=True, layout="NCHW")
    np.testing.assert_allclose(np.asarray(y), ref.numpy(), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("size", [(2, 3), (4, 5), (7, 3)])
def test_area_matches_torch(size):
    x = _input(2, "NHWC")
    ref = F.interpolate(torch.from_numpy(_nchw(x, "NHWC")), size=size, mode="area")
    np.testing.assert_allclose(
        upsample(x, size=size, method="area"), _from_nchw(ref, "NHWC"), rtol=1e-6, atol=1e-6
    )


def test_hand_computed():
    x = jnp.array([[[0.0, 1.0]]])  # NCW
    # align_corners=False: sources (dst + 0.5) / 2 - 0.5 = -0.25 (clamped to 0), 0.25, 0.75, 1.25 (edge).
    np.testing.assert_allclose(
        upsample(x, size=4, method="linear", layout="NCHW")[0, 0], [0.0, 0.25, 0.75, 1.0]
    )
    np.testing.assert_allclose(
        upsample(x, size=4, method="linear", align_corners=True, layout="NCHW")[0, 0],
        [0.0, 1 / 3, 2 / 3, 1.0],
    )
    np.testing.assert_array_equal(upsample(x, 2, layout="NCHW")[0, 0], [0.0, 0.0, 1.0, 1.0])
    # nearest 3 -> 5: floor(dst * 3 / 5) = 0, 0, 1, 1, 2;
    # nearest-exact: floor((dst + .5) * .6) = 0, 0, 1, 2, 2.
    x3 = jnp.array([[[0.0, 1.0, 2.0]]])
    np.testing.assert_array_equal(upsample(x3, size=5, layout="NCHW")[0, 0], [0.0, 0.0, 1.0, 1.0, 2.0])
    np.testing.assert_array_equal(
        upsample(x3, size=5, method="nearest-exact", layout="NCHW")[0, 0], [0, 0, 1, 2, 2]
    )
    # 2x2 -> 3x3 with aligned corners: the centre is the mean of all four.
    x22 = jnp.array([[[[1.0], [2.0]], [[3.0], [4.0]]]])  # NHWC
    np.testing.assert_allclose(
        upsample(x22, size=3, method="bilinear", align_corners=True)[0, :, :, 0],
        [[1.0, 1.5, 2.0], [2.0, 2.5, 3.0], [3.0, 3.5, 4.0]],
    )


def test_integer_input_nearest():
    x = np.arange(6, dtype=np.int32).reshape(1, 2, 3, 1)
    y = upsample(x, 2)
    assert y.dtype == jnp.int32
    np.testing.assert_array_equal(y[0, :, :, 0], np.repeat(np.repeat(x[0, :, :, 0], 2, 0), 2, 1))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"scale_factor": 2},  # the broadcast (repeat) path
        {"size": (7, 4)},  # the gather path
        {"scale_factor": 2, "method": "bilinear"},
        {"size": (3, 7), "method": "bilinear", "align_corners": True},
    ],
)
def test_gradients_match_torch(kwargs):
    x = _input(2, "NCHW", seed=2)
    kw = dict(kwargs)
    method = kw.pop("method", "nearest")
    align = kw.pop("align_corners", False)
    xt = torch.from_numpy(x).requires_grad_(True)
    ref = F.interpolate(xt, mode=method, align_corners=align if method == "bilinear" else None, **kw)
    cot = _random(tuple(ref.shape), seed=3)
    ref.backward(torch.from_numpy(cot))

    def f(x):
        return upsample(x, method=method, align_corners=align, layout="NCHW", **kw)

    grad = jax.vjp(f, jnp.asarray(x))[1](jnp.asarray(cot))[0]
    np.testing.assert_allclose(grad, xt.grad.numpy(), rtol=1e-5, atol=1e-5)
    check_grads(f, (jnp.asarray(x),), order=1, modes=("fwd", "rev"), atol=1e-2, rtol=1e-2)


OPS = {
    "nearest_2x": lambda x: upsample(x, 2),
    "nearest_size": lambda x: upsample(x, size=(7, 3)),
    "bilinear": lambda x: upsample(x, 1.5, method="bilinear"),
    "bilinear_corners": lambda x: upsample(
        x, size=(6, 9), method="bilinear", align_corners=True, layout="NCHW"
    ),
    "area": lambda x: upsample(x, size=(2, 3), method="area"),
}


@pytest.mark.parametrize("name", list(OPS))
def test_jit_vmap_bfloat16(name):
    op = OPS[name]
    x = jnp.asarray(_random((2, 4, 5, 3)))
    eager = op(x)
    # Linear modes may differ in the last bit: XLA fuses multiply-adds differently.
    np.testing.assert_allclose(jax.jit(op)(x), eager, rtol=1e-6, atol=1e-6)
    batched = jax.vmap(op)(jnp.stack([x, 2.0 * x]))
    np.testing.assert_allclose(batched[0], eager, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(batched[1], op(2.0 * x), rtol=1e-6, atol=1e-6)
    low = op(x.astype(jnp.bfloat16))
    assert low.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(low, np.float32), eager, rtol=2e-2, atol=2e-2)


X4 = np.zeros((1, 4, 4, 1), np.float32)


@pytest.mark.parametrize(
    "call, error, match",
    [
        (
            lambda: upsample(np.zeros((4, 4), np.float32), 2),
            ValueError,
            r"upsample: x must have rank 3 or 4 or 5.*\(4, 4\)",
        ),
        (lambda: upsample(X4, 2, layout="CHWN"), ValueError, r"unknown layout='CHWN'"),
        (lambda: upsample(X4, 2, method="lanczos"), ValueError, r"unknown method='lanczos'"),
        (
            lambda: upsample(X4, 2, method="trilinear"),
            ValueError,
            r"method='trilinear' is for 3 spatial.*\(1, 4, 4, 1\)",
        ),
        (lambda: upsample(np.zeros((1, 4, 1)), 2, method="bilinear"), ValueError, r"'bilinear' is for 2"),
        (
            lambda: upsample(X4, 2, align_corners=True),
            ValueError,
            r"align_corners=True only applies to linear",
        ),
        (
            lambda: upsample(X4, 2, align_corners=1, method="linear"),
            TypeError,
            r"align_corners must be a bool",
        ),
        (lambda: upsample(X4), ValueError, r"exactly one of size and scale_factor"),
        (lambda: upsample(X4, 2, (8, 8)), ValueError, r"exactly one of size and scale_factor"),
        (lambda: upsample(X4, -2), ValueError, r"scale_factor must be positive"),
        (lambda: upsample(X4, (2, 2, 2)), ValueError, r"scale_factor=\(2, 2, 2\) has 3 entries"),
        (lambda: upsample(X4, "2"), TypeError, r"scale_factor must be a number"),
        (lambda: upsample(X4, 0.1), ValueError, r"shrinks spatial size \(4, 4\) to \(0, 0\)"),
        (lambda: upsample(X4, size=(0, 4)), ValueError, r"size must be >= 1"),
        (lambda: upsample(X4, size=(8, 8, 8)), ValueError, r"size=\(8, 8, 8\) has 3 entries"),
        (
            lambda: upsample(X4.astype(np.int32), 2, method="linear"),
            TypeError,
            r"x must have a floating dtype",
        ),
        (lambda: upsample(np.zeros((1, 0, 4, 1)), 2), ValueError, r"empty spatial axis"),
    ],
)
def test_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()


# ----------------------------------------------------------------------------- bicubic


# (input H x W, size or None, scale_factor or None, recompute_scale_factor)
BICUBIC_GRID = [
    ((4, 5), None, 2, False),
    ((4, 5), None, 1.7, False),
    ((7, 6), None, 0.6, False),  # down: the source positions fall between and beyond cells
    ((7, 6), None, (0.5, 2.5), False),
    ((4, 5), (9, 11), None, False),
    ((6, 5), (3, 2), None, False),
    ((1, 4), (3, 7), None, False),  # a single row: every tap clamps to it
    ((5, 5), (5, 5), None, False),
    ((5, 4), None, 1.3, True),
]


@pytest.mark.parametrize("align_corners", [False, True])
def test_bicubic_matches_torch(align_corners):
    for spatial, size, scale_factor, recompute in BICUBIC_GRID:
        x = _random((2, 3) + spatial, seed=3)
        kwargs = dict(size=size, scale_factor=scale_factor, align_corners=align_corners)
        want = F.interpolate(torch.from_numpy(x), mode="bicubic", recompute_scale_factor=recompute or None, **kwargs)
        got = upsample(x, method="bicubic", recompute_scale_factor=recompute, layout="NCHW", **kwargs)
        assert got.shape == want.shape, (spatial, kwargs)
        np.testing.assert_allclose(np.asarray(got), want.numpy(), rtol=1e-5, atol=1e-5, err_msg=str((spatial, kwargs)))


@pytest.mark.parametrize("spatial, size, scale_factor, align_corners",
                         [((4, 5), None, 1.7, False), ((7, 6), (3, 8), None, True)])
def test_bicubic_gradient_and_nhwc_match_torch(spatial, size, scale_factor, align_corners):
    x = _random((2, 3) + spatial, seed=3)
    kwargs = dict(size=size, scale_factor=scale_factor, align_corners=align_corners)
    xt = torch.from_numpy(x).requires_grad_(True)
    want = F.interpolate(xt, mode="bicubic", **kwargs)
    got_nhwc = upsample(np.moveaxis(x, 1, -1), method="bicubic", **kwargs)
    np.testing.assert_allclose(np.moveaxis(np.asarray(got_nhwc), -1, 1), want.detach().numpy(), rtol=1e-5, atol=1e-5)
    cotangent = _random(tuple(want.shape), seed=4)
    want.backward(torch.from_numpy(cotangent))
    _, vjp = jax.vjp(lambda v: upsample(v, method="bicubic", layout="NCHW", **kwargs), jnp.asarray(x))
    np.testing.assert_allclose(np.asarray(vjp(jnp.asarray(cotangent))[0]), xt.grad.numpy(), rtol=1e-4, atol=1e-4)


def test_bicubic_hand_computed_and_rank_checked():
    # A step 0, 0, 1, 1 doubled without align_corners: output cell 3 sits at source 1.25, so
    # t = 0.25 and taps 0, 1, 2, 3 weigh (-0.10546875, 0.87890625, 0.26171875, -0.03515625)
    # (Keys' kernel with A = -0.75 at distances 1.25, 0.25, 0.75, 1.75).
    x = np.array([0.0, 0.0, 1.0, 1.0], np.float32).reshape(1, 1, 1, 4)
    y = upsample(x, size=(1, 8), method="bicubic", layout="NCHW")
    np.testing.assert_allclose(float(y[0, 0, 0, 3]), 0.26171875 - 0.03515625, rtol=1e-6)
    with pytest.raises(ValueError, match=r"method='bicubic' is for 2 spatial dimension\(s\)"):
        upsample(np.zeros((1, 4, 3), np.float32), 2, method="bicubic")
