"""conv / conv_transpose against naive NumPy loops, PyTorch and hand-computed values."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as torch_f
from jax.test_util import check_grads

from jaxcnn import functional as F

RNG = np.random.default_rng(0)


def _randn(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def _to_last(a):
    """(N, C, *spatial) -> (N, *spatial, C)."""
    return np.moveaxis(a, 1, -1)


def _kernel_to_last(w):
    """PyTorch conv kernel (O, I, *window) -> (*window, I, O)."""
    return np.moveaxis(w, (0, 1), (-1, -2))


def naive_conv2d(x, w, stride, padding, dilation, groups):
    """Direct NCHW cross-correlation loops (zero padding)."""
    n, c_in, h, wd = x.shape
    c_out, cpg, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    oh = (h + 2 * padding - dilation * (kh - 1) - 1) // stride + 1
    ow = (wd + 2 * padding - dilation * (kw - 1) - 1) // stride + 1
    out = np.zeros((n, c_out, oh, ow), np.float64)
    opg = c_out // groups
    for b, o, i, j in itertools.product(range(n), range(c_out), range(oh), range(ow)):
        g = o // opg
        for c, u, v in itertools.product(range(cpg), range(kh), range(kw)):
            out[b, o, i, j] += (
                xp[b, g * cpg + c, i * stride + u * dilation, j * stride + v * dilation] * w[o, c, u, v]
            )
    return out


def test_lecture_example_5x5_binary_image():
    image = np.array(
        [[1, 1, 1, 0, 0], [0, 1, 1, 1, 0], [0, 0, 1, 1, 1], [0, 0, 1, 1, 0], [0, 1, 1, 0, 0]], np.float32
    )
    filt = np.array([[1, 0, 1], [0, 1, 0], [1, 0, 1]], np.float32)
    y = F.conv(image[None, :, :, None], filt[:, :, None, None])
    np.testing.assert_array_equal(np.asarray(y)[0, :, :, 0], [[4, 3, 4], [2, 4, 3], [2, 3, 4]])


def test_hand_computed_1d_stride_and_padding():
    x = np.arange(1, 6, dtype=np.float32)  # 1 2 3 4 5
    k = np.array([1, 0, -1], np.float32)
    # Zero padding 1: [0 1 2 3 4 5 0]; windows at 0, 2, 4 -> 0-2, 2-4, 4-0.
    y = F.conv(x[None, :, None], k[:, None, None], stride=2, padding=1)
    np.testing.assert_array_equal(np.asarray(y)[0, :, 0], [-2, -2, 4])
    # Padding with ones instead: [1 1 2 3 4 5 1].
    y = F.conv(x[None, :, None], k[:, None, None], stride=2, padding=1, padding_mode="constant", pad_value=1.0)
    np.testing.assert_array_equal(np.asarray(y)[0, :, 0], [-1, -2, 3])


@pytest.mark.parametrize("stride,padding,dilation,groups", [(1, 0, 1, 1), (2, 1, 1, 2), (1, 2, 2, 1), (3, 1, 2, 4)])
def test_conv2d_matches_naive_loops(stride, padding, dilation, groups):
    x = _randn(2, 4, 7, 8)
    w = _randn(4, 4 // groups, 3, 2)
    ref = naive_conv2d(x, w, stride, padding, dilation, groups)
    y = F.conv(x, w, stride=stride, padding=padding, dilation=dilation, groups=groups, layout="NCHW")
    np.testing.assert_allclose(np.asarray(y), ref, rtol=1e-5, atol=1e-5)


_TORCH_CONV = {1: torch_f.conv1d, 2: torch_f.conv2d, 3: torch_f.conv3d}
_SPATIAL = {1: (11,), 2: (9, 8), 3: (6, 5, 7)}
_WINDOW = {1: (3,), 2: (3, 2), 3: (2, 3, 2)}

GRID = [
    # rank, stride, padding, dilation, groups, padding_mode
    (1, 1, 0, 1, 1, "zeros"),
    (1, 2, 2, 2, 2, "reflect"),
    (1, 3, 1, 1, 4, "circular"),
    (2, 1, "same", 1, 1, "zeros"),
    (2, 1, "same", 2, 2, "replicate"),
    (2, 2, 1, 1, 4, "zeros"),
    (2, (2, 1), (1, 0), (1, 2), 1, "reflect"),
    (2, 1, 1, 1, 2, "circular"),
    (2, 2, 2, 1, 1, "replicate"),
    (3, 1, 1, 1, 1, "zeros"),
    (3, 2, 1, 1, 2, "replicate"),
    (3, 1, "same", (1, 2, 1), 4, "circular"),
]


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("rank,stride,padding,dilation,groups,padding_mode", GRID)
def test_conv_matches_torch(rank, stride, padding, dilation, groups, padding_mode, layout):
    c_in, c_out = 4, 8
    x = _randn(2, c_in, *_SPATIAL[rank])
    w = _randn(c_out, c_in // groups, *_WINDOW[rank])
    b = _randn(c_out)
    # Non-zero padding modes go through torch's module, which owns that option.
    module = {1: torch.nn.Conv1d, 2: torch.nn.Conv2d, 3: torch.nn.Conv3d}[rank](
        c_in, c_out, _WINDOW[rank], stride=stride, padding=padding, dilation=dilation, groups=groups,
        padding_mode=padding_mode,
    )
    with torch.no_grad():
        module.weight.copy_(torch.tensor(w))
        module.bias.copy_(torch.tensor(b))
        ref = module(torch.tensor(x)).numpy()
    pad = padding.upper() if isinstance(padding, str) else padding
    kwargs = dict(stride=stride, padding=pad, dilation=dilation, groups=groups, padding_mode=padding_mode)
    if layout == "NCHW":
        y = np.asarray(F.conv(x, w, b, layout="NCHW", **kwargs))
    else:
        y = np.moveaxis(np.asarray(F.conv(_to_last(x), _kernel_to_last(w), b, **kwargs)), -1, 1)
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4)


def test_conv_constant_padding_with_ones_matches_torch_pad():
    x = _randn(1, 2, 5, 5)
    w = _randn(3, 2, 3, 3)
    ref = torch_f.conv2d(torch_f.pad(torch.tensor(x), (1, 1, 1, 1), value=1.0), torch.tensor(w)).numpy()
    y = F.conv(x, w, padding=1, padding_mode="constant", pad_value=1.0, layout="NCHW")
    np.testing.assert_allclose(np.asarray(y), ref, rtol=1e-5, atol=1e-5)


TRANSPOSE_GRID = [
    # rank, stride, padding, output_padding, dilation, groups
    (1, 2, 1, 1, 1, 1),
    (1, 3, 0, 2, 1, 2),
    (2, 2, 1, 1, 1, 1),
    (2, 2, 0, 0, 1, 4),
    (2, (3, 2), (1, 0), (2, 1), (1, 2), 2),
    (2, 1, 2, 0, 2, 1),
    (3, 2, 1, 1, 1, 2),
]


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("rank,stride,padding,output_padding,dilation,groups", TRANSPOSE_GRID)
def test_conv_transpose_matches_torch(rank, stride, padding, output_padding, dilation, groups, layout):
    c_in, c_out = 4, 8
    x = _randn(2, c_in, *_SPATIAL[rank])
    w = _randn(c_in, c_out // groups, *_WINDOW[rank])
    b = _randn(c_out)
    fn = {1: torch_f.conv_transpose1d, 2: torch_f.conv_transpose2d, 3: torch_f.conv_transpose3d}[rank]
    ref = fn(
        torch.tensor(x), torch.tensor(w), torch.tensor(b), stride=stride, padding=padding,
        output_padding=output_padding, groups=groups, dilation=dilation,
    ).numpy()
    kwargs = dict(stride=stride, padding=padding, output_padding=output_padding, dilation=dilation, groups=groups)
    if layout == "NCHW":
        y = np.asarray(F.conv_transpose(x, w, b, layout="NCHW", **kwargs))
    else:
        w_last = np.moveaxis(w, (0, 1), (-2, -1))  # (*window, C_in, C_out // groups)
        y = np.moveaxis(np.asarray(F.conv_transpose(_to_last(x), w_last, b, **kwargs)), -1, 1)
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4)


def test_conv_transpose_is_the_gradient_of_conv():
    x = _randn(2, 6, 6, 3)
    w = _randn(3, 3, 3, 5)
    y, vjp = jax.vjp(lambda x: F.conv(x, w, stride=2, padding=1), x)
    g = _randn(*y.shape)
    # The adjoint of conv with kernel (kh, kw, I, O) is conv_transpose with (kh, kw, O, I).
    expected = F.conv_transpose(g, np.swapaxes(w, 2, 3), stride=2, padding=1, output_padding=1)
    np.testing.assert_allclose(np.asarray(vjp(g)[0]), np.asarray(expected), rtol=1e-4, atol=1e-4)


def test_conv_transpose_same_padding_output_size():
    x = _randn(1, 5, 7, 2)
    w = _randn(4, 4, 2, 3)
    assert F.conv_transpose(x, w, stride=2, padding="SAME").shape == (1, 10, 14, 3)


def test_gradients():
    x = _randn(2, 5, 5, 2)
    w = _randn(3, 3, 2, 3)
    b = _randn(3)

    def fn(x, w, b):
        return F.conv(x, w, b, stride=2, padding=1, padding_mode="reflect")

    def fn_t(x, w):
        return F.conv_transpose(x, w, stride=2, padding=1)

    check_grads(fn, (x, w, b), order=1, modes=("rev",), atol=2e-2, rtol=2e-2)
    check_grads(fn_t, (x, _randn(3, 3, 2, 4)), order=1, modes=("rev",), atol=2e-2, rtol=2e-2)


def test_jit_equals_eager_and_vmap():
    x = _randn(3, 2, 6, 6, 2)
    w = _randn(3, 3, 1, 4)

    def fn(x):
        return F.conv(x, w, padding="SAME", groups=2)

    eager = np.stack([np.asarray(fn(xi)) for xi in x])
    np.testing.assert_allclose(np.asarray(jax.jit(fn)(x[0])), eager[0], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(np.asarray(jax.vmap(fn)(x)), eager, rtol=1e-5, atol=1e-5)


def test_bfloat16():
    x = _randn(2, 6, 6, 3)
    w = _randn(3, 3, 3, 4)
    y32 = F.conv(x, w, padding=1)
    y16 = F.conv(x.astype(jnp.bfloat16), w.astype(jnp.bfloat16), padding=1)
    assert y16.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(y16, np.float32), np.asarray(y32), rtol=5e-2, atol=1e-1)


def test_depthwise_conv_is_per_channel():
    x = _randn(1, 6, 6, 3)
    w = _randn(3, 3, 1, 3)
    y = F.conv(x, w, groups=3)
    for c in range(3):
        ref = F.conv(x[..., c : c + 1], w[..., c : c + 1])
        np.testing.assert_allclose(np.asarray(y[..., c]), np.asarray(ref[..., 0]), rtol=1e-5, atol=1e-5)


BAD = [
    (dict(x=np.zeros((4, 4), np.float32)), ValueError, r"conv: x must have rank 3 or 4 or 5.*\(4, 4\)"),
    (dict(kernel=np.zeros((3, 3, 2), np.float32)), ValueError, r"kernel must have rank 4.*\(3, 3, 2\)"),
    (dict(kernel=np.zeros((3, 3, 5, 4), np.float32)), ValueError, r"channel mismatch.*C_in=2"),
    (dict(groups=3), ValueError, r"groups=3 must divide the input channels C_in=2"),
    (dict(groups=0), ValueError, r"groups must be a positive int"),
    (dict(stride=0), ValueError, r"stride must be >= 1"),
    (dict(dilation=-1), ValueError, r"dilation must be >= 1"),
    (dict(stride=(1, 1, 1)), ValueError, r"stride=\(1, 1, 1\) has 3 entries.*2 spatial"),
    (dict(padding_mode="mirror"), ValueError, r"unknown padding_mode='mirror'"),
    (dict(layout="HWNC"), ValueError, r"unknown layout='HWNC'"),
    (dict(padding="FULL"), ValueError, r"padding='FULL' is not understood"),
    (dict(padding=-1), ValueError, r"padding must be non-negative"),
    (dict(kernel=np.zeros((9, 9, 2, 4), np.float32)), ValueError, r"kernel is larger than the padded input"),
    (dict(bias=np.zeros(3, np.float32)), ValueError, r"bias must have shape \(4,\)"),
    (dict(kernel=np.zeros((3, 3, 2, 4), np.float16)), TypeError, r"x has dtype float32 but kernel has dtype float16"),
    (dict(x=np.zeros((1, 5, 5, 2), np.int32)), TypeError, r"x must have a floating dtype"),
    (dict(padding=5, padding_mode="reflect"), ValueError, r"reflect padding \(5, 5\) must be smaller than the input size"),
    (dict(x="image"), TypeError, r"x must be an array"),
]


@pytest.mark.parametrize("override,error,match", BAD)
def test_conv_bad_input(override, error, match):
    kwargs = dict(x=np.zeros((1, 5, 5, 2), np.float32), kernel=np.zeros((3, 3, 2, 4), np.float32))
    kwargs.update(override)
    with pytest.raises(error, match=match):
        F.conv(kwargs.pop("x"), kwargs.pop("kernel"), **kwargs)


def test_conv_transpose_bad_input():
    x = np.zeros((1, 4, 4, 2), np.float32)
    with pytest.raises(ValueError, match=r"channel mismatch.*C_in=2"):
        F.conv_transpose(x, np.zeros((3, 3, 5, 4), np.float32))
    with pytest.raises(ValueError, match=r"output_padding=\(2, 2\) must be smaller than stride"):
        F.conv_transpose(x, np.zeros((3, 3, 2, 4), np.float32), stride=2, output_padding=2)
    with pytest.raises(ValueError, match=r"crops everything"):
        F.conv_transpose(x, np.zeros((1, 1, 2, 4), np.float32), padding=3)
    with pytest.raises(ValueError, match=r"layout='NCW' is for 1 spatial"):
        F.conv_transpose(x, np.zeros((3, 3, 2, 4), np.float32), layout="NCW")


@pytest.mark.parametrize("pairs", [-1, ((1, -1), (0, 0)), ((1, 1),), ((1, 1), (0, 1.5))])
def test_pad_spatial_rejects_pairs_that_are_not_one_non_negative_pair_per_axis(pairs):
    with pytest.raises(ValueError, match=r"pad_spatial: pairs must be one \(lo, hi\) pair of ints >= 0 per spatial axis \(2"):
        F.pad_spatial(np.zeros((1, 4, 4, 1), np.float32), pairs)
