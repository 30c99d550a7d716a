"""Shape arithmetic against real torch / jax ops, and receptive fields against known numbers."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from jax import lax

from jaxcnn import shapes
from jaxcnn.functional import conv, conv_transpose
from jaxcnn.shapes import LayerSpec


def _torch_or_none(fn, *args, **kwargs):
    """Output spatial shape of a torch op, None where torch refuses (output would be empty)."""
    try:
        with torch.no_grad():
            return tuple(fn(*args, **kwargs).shape[2:])
    except RuntimeError:
        return None


def _ours_or_none(fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except ValueError:
        return None


def test_conv_output_size_matches_torch_grid():
    grid = list(itertools.product([1, 2, 4, 7], [1, 2, 3], [1, 2, 3], [0, 1, 2], [1, 2]))
    for i, (size, k, s, p, d) in enumerate(grid):
        # The second axis takes another grid point, so per-axis tuples are exercised too.
        size2, k2, s2, p2, d2 = grid[(i * 7 + 3) % len(grid)]
        x = torch.zeros(1, 1, size, size2)
        w = torch.zeros(1, 1, k, k2)
        ref = _torch_or_none(F.conv2d, x, w, stride=(s, s2), padding=(p, p2), dilation=(d, d2))
        ours = _ours_or_none(shapes.conv_output_size, (size, size2), (k, k2), (s, s2), (p, p2), (d, d2))
        assert ours == ref, (size, k, s, p, d, size2, k2, s2, p2, d2)
        x1, w1 = torch.zeros(1, 1, size), torch.zeros(1, 1, k)
        ref1 = _torch_or_none(F.conv1d, x1, w1, stride=s, padding=p, dilation=d)
        assert _ours_or_none(shapes.conv_output_size, size, k, s, p, d) == (None if ref1 is None else ref1[0])


def test_pool_output_size_matches_torch_ceil_mode():
    checked = 0
    for size, k, s, p, d, ceil in itertools.product(
        [1, 2, 3, 5, 6, 9], [1, 2, 3], [1, 2, 3], [0, 1], [1, 2], [False, True]
    ):
        if p > k // 2:  # PyTorch refuses padding larger than half the kernel
            continue
        x = torch.zeros(1, 1, size, 1)
        ref = _torch_or_none(
            F.max_pool2d, x, (k, 1), stride=(s, 1), padding=(p, 0), dilation=(d, 1), ceil_mode=ceil
        )
        ours = _ours_or_none(shapes.pool_output_size, size, k, s, p, d, ceil_mode=ceil)
        assert ours == (None if ref is None else ref[0]), (size, k, s, p, d, ceil)
        checked += ref is not None
    assert checked > 100
    # The classic case where ceil_mode drops the window that would start in the padding.
    assert shapes.pool_output_size(6, 2, 2, padding=1, ceil_mode=True) == 4
    assert shapes.pool_output_size(5, 2, 2, padding=1, ceil_mode=True) == 3
    assert shapes.pool_output_size((7, 8), 3) == (2, 2)  # stride defaults to the kernel


def test_conv_transpose_output_size_matches_torch():
    for size, k, s, p, op, d in itertools.product(
        [1, 2, 5], [1, 2, 3], [1, 2, 3], [0, 1, 2], [0, 1, 2], [1, 2]
    ):
        x = torch.zeros(1, 1, size, 1)
        w = torch.zeros(1, 1, k, 1)
        ref = _torch_or_none(
            F.conv_transpose2d, x, w, stride=(s, 1), padding=(p, 0), output_padding=(op, 0), dilation=(d, 1)
        )
        ours = _ours_or_none(shapes.conv_transpose_output_size, size, k, s, p, op, d)
        assert ours == (None if ref is None else ref[0]), (size, k, s, p, op, d)


@pytest.mark.parametrize(
    "size,k,s,padding,d",
    [
        ((9, 8), (3, 2), (2, 3), "SAME", (1, 2)),
        ((9, 8), (3, 2), (2, 3), "VALID", (1, 1)),
        ((9, 8), 3, 2, ((0, 2), (1, 0)), 1),
        ((5, 6), (4, 1), 1, "same", 1),
        ((1, 2), 3, 3, "SAME", 1),
    ],
)
def test_conv_sizes_match_jaxcnn_conv(size, k, s, padding, d):
    kk = k if isinstance(k, tuple) else (k, k)
    x = jax.ShapeDtypeStruct((1, *size, 1), jnp.float32)
    w = jax.ShapeDtypeStruct((*kk, 1, 1), jnp.float32)
    y = jax.eval_shape(lambda x, w: conv(x, w, stride=s, padding=padding, dilation=d), x, w)
    assert shapes.conv_output_size(size, k, s, padding, d) == y.shape[1:3]
    # Pooling with the same window: lax.reduce_window pads the same way.
    if d == 1 and isinstance(padding, str):
        ss = s if isinstance(s, tuple) else (s, s)
        z = jax.eval_shape(
            lambda x: lax.reduce_window(x, -jnp.inf, lax.max, (1, *kk, 1), (1, *ss, 1), padding.upper()), x
        )
        assert shapes.pool_output_size(size, k, s, padding) == z.shape[1:3]


@pytest.mark.parametrize(
    "size,k,s,padding,op,d",
    [
        ((4, 3), (3, 4), (2, 3), "SAME", (1, 0), 1),
        ((4, 3), 3, 2, ((1, 0), (0, 2)), 0, (1, 2)),
        (5, 2, 2, "VALID", 1, 1),
    ],
)
def test_conv_transpose_sizes_match_jaxcnn(size, k, s, padding, op, d):
    sz = size if isinstance(size, tuple) else (size, size)
    kk = k if isinstance(k, tuple) else (k, k)
    x = jax.ShapeDtypeStruct((1, *sz, 1), jnp.float32)
    w = jax.ShapeDtypeStruct((*kk, 1, 1), jnp.float32)
    y = jax.eval_shape(
        lambda x, w: conv_transpose(x, w, stride=s, padding=padding, output_padding=op, dilation=d), x, w
    )
    ours = shapes.conv_transpose_output_size(size, k, s, padding, op, d)
    assert (ours if isinstance(ours, tuple) else (ours, ours)) == y.shape[1:3]


# ---------------------------------------------------------------------- receptive fields


def test_two_3x3_convs():
    rf = shapes.receptive_fields([LayerSpec("c1", 3), LayerSpec("c2", 3)])
    assert [(f.size, f.jump, f.start) for f in rf] == [(3, 1, 1.0), (5, 1, 2.0)]
    padded = shapes.receptive_fields([LayerSpec("c1", 3, padding=1), LayerSpec("c2", 3, padding=1)], 10)
    assert [(f.size, f.start, f.output_size) for f in padded] == [(3, 0.0, 10), (5, 0.0, 10)]


def test_conv_pool_conv():
    rf = shapes.receptive_fields([LayerSpec("conv1", 3), LayerSpec("pool", 2, 2), LayerSpec("conv2", 3)], 12)
    assert [f.size for f in rf] == [3, 4, 8]
    assert [f.jump for f in rf] == [1, 2, 2]
    assert [f.start for f in rf] == [1.0, 1.5, 3.5]
    assert [f.output_size for f in rf] == [10, 5, 3]


def test_vgg16_known_numbers():
    specs = []
    for block, convs in enumerate([2, 2, 3, 3, 3], start=1):
        specs += [LayerSpec(f"conv{block}_{i + 1}", 3, padding=1) for i in range(convs)]
        specs.append(LayerSpec(f"pool{block}", 2, 2))
    rf = {f.name: f for f in shapes.receptive_fields(specs, (224, 224))}
    assert rf["pool1"].size == (6, 6) and rf["pool2"].size == (16, 16) and rf["pool3"].size == (44, 44)
    assert rf["conv5_3"].size == (196, 196)
    assert rf["pool5"].size == (212, 212) and rf["pool5"].jump == (32, 32)
    assert rf["pool5"].output_size == (7, 7)


def test_alexnet_known_numbers():
    specs = [
        LayerSpec("conv1", 11, 4, 2),
        LayerSpec("pool1", 3, 2),
        LayerSpec("conv2", 5, 1, 2),
        LayerSpec("pool2", 3, 2),
        LayerSpec("conv3", 3, 1, 1),
        LayerSpec("conv4", 3, 1, 1),
        LayerSpec("conv5", 3, 1, 1),
        LayerSpec("pool5", 3, 2),
    ]
    rf = shapes.receptive_fields(specs, 224)
    assert [f.size for f in rf] == [11, 19, 51, 67, 99, 131, 163, 195]
    assert [f.jump for f in rf] == [4, 8, 8, 16, 16, 16, 16, 32]
    assert [f.output_size for f in rf] == [55, 27, 27, 13, 13, 13, 13, 6]  # torchvision's AlexNet


def test_receptive_field_is_the_nonzero_gradient():
    # Ones kernels and a linear stack: every path is positive, so the input pixels with a
    # non-zero gradient of one output are exactly its receptive field.
    specs = [
        LayerSpec("a", (3, 2), 1, ((1, 1), (0, 1))),
        LayerSpec("b", 2, (2, 1)),
        LayerSpec("c", (3, 3), 1, 2, dilation=(2, 1)),
        LayerSpec("d", (2, 3), (2, 2), ((0, 1), (1, 1))),
        LayerSpec("e", 3, 1, 0),
    ]
    size = (40, 30)
    rf = shapes.receptive_fields(specs, size)

    def net(x):
        for s in specs:
            k = s.kernel if isinstance(s.kernel, tuple) else (s.kernel, s.kernel)
            x = conv(
                x, jnp.ones((*k, 1, 1), jnp.float32), stride=s.stride, padding=s.padding, dilation=s.dilation
            )
        return x

    x = jnp.zeros((1, *size, 1), jnp.float32)
    out_shape = jax.eval_shape(net, x).shape
    assert out_shape[1:3] == rf[-1].output_size
    m = tuple(o // 2 for o in out_shape[1:3])
    grad = jax.grad(lambda x: net(x)[0, m[0], m[1], 0])(x)[0, :, :, 0]
    rows, cols = np.nonzero(np.asarray(grad))
    for axis, idx in enumerate((rows, cols)):
        r, j, start = rf[-1].size[axis], rf[-1].jump[axis], rf[-1].start[axis]
        centre = start + m[axis] * j
        lo, hi = centre - (r - 1) / 2, centre + (r - 1) / 2
        assert 0 <= lo and hi < size[axis]  # fully inside, so nothing is clipped
        assert (idx.min(), idx.max()) == (lo, hi), axis
        assert idx.max() - idx.min() + 1 == r
    assert len(rows) == rf[-1].size[0] * rf[-1].size[1]  # a full rectangle


def test_same_padding_needs_input_size_for_stride():
    assert shapes.receptive_fields([LayerSpec("s", 4, 1, "SAME")])[0].start == 0.5  # pad (1, 2): pixels -1..2
    with pytest.raises(ValueError, match="layer 0 \\('s'\\).*pass input_size"):
        shapes.receptive_fields([LayerSpec("s", 3, 2, "SAME")])
    rf = shapes.receptive_fields([LayerSpec("s", 3, 2, "SAME")], 8)[0]  # pad (0, 1)
    assert (rf.start, rf.output_size) == (1.0, 4)


# ---------------------------------------------------------------------- parameter counts


@pytest.mark.parametrize(
    "c_in,c_out,kernel,groups,bias",
    [
        (3, 16, 3, 1, True),
        (4, 8, (5, 3), 2, False),
        (6, 6, 3, 6, True),
        (2, 4, (3,), 1, True),
        (2, 3, (2, 3, 1), 1, True),
    ],
)
def test_conv_params_match_torch(c_in, c_out, kernel, groups, bias):
    cls = {1: torch.nn.Conv1d, 2: torch.nn.Conv2d, 3: torch.nn.Conv3d}[
        len(kernel) if isinstance(kernel, tuple) else 2
    ]
    layer = cls(c_in, c_out, kernel, groups=groups, bias=bias)
    assert shapes.conv_params(c_in, c_out, kernel, groups, bias) == sum(p.numel() for p in layer.parameters())


def test_dense_and_batch_norm_params_match_torch():
    assert shapes.dense_params(784, 10) == sum(p.numel() for p in torch.nn.Linear(784, 10).parameters())
    assert shapes.dense_params(5, 3, bias=False) == 15
    bn = torch.nn.BatchNorm2d(32)
    assert shapes.batch_norm_params(32) == sum(p.numel() for p in bn.parameters()) == 64
    assert shapes.batch_norm_params(32, affine=False) == 0


# ---------------------------------------------------------------------------- errors


def test_errors():
    with pytest.raises(ValueError, match="conv_output_size: in_size must be positive, got 0"):
        shapes.conv_output_size(0, 3)
    with pytest.raises(ValueError, match="kernel must be positive, got -1"):
        shapes.conv_output_size(5, -1)
    with pytest.raises(ValueError, match="stride\\[1\\] must be positive"):
        shapes.conv_output_size((5, 5), 3, (1, 0))
    with pytest.raises(ValueError, match="padding must be >= 0, got -1"):
        shapes.conv_output_size(5, 3, padding=-1)
    with pytest.raises(ValueError, match=r"output size would be -1 <= 0: kernel=5.*in_size=3"):
        shapes.conv_output_size(3, 5)
    with pytest.raises(ValueError, match=r"on axis 1: kernel=3 \(dilated to 5\)"):
        shapes.conv_output_size((9, 4), 3, dilation=2)
    with pytest.raises(ValueError, match="has 3 entries, expected 2"):
        shapes.conv_output_size((9, 4), (3, 3, 3))
    with pytest.raises(ValueError, match="padding='full'"):
        shapes.conv_output_size(9, 3, padding="full")
    with pytest.raises(TypeError, match="in_size must be an int, got 2.5"):
        shapes.conv_output_size(2.5, 3)
    with pytest.raises(TypeError, match="must be an int, got True"):
        shapes.pool_output_size(4, True)
    with pytest.raises(ValueError, match="output_padding=2 must be smaller than stride=2"):
        shapes.conv_transpose_output_size(4, 3, 2, output_padding=2)
    with pytest.raises(ValueError, match=r"output size would be -2 <= 0.*padding=\(2, 2\)"):
        shapes.conv_transpose_output_size(1, 2, padding=2)
    with pytest.raises(ValueError, match=r"receptive_fields: layer 1 \('p'\): output size would be 0 <= 0"):
        shapes.receptive_fields([LayerSpec("c", 3), LayerSpec("p", 4, 2)], 5)
    with pytest.raises(ValueError, match=r"layer 0 \('c'\): dilation must be positive"):
        shapes.receptive_fields([LayerSpec("c", 3, dilation=0)])
    with pytest.raises(TypeError, match="specs\\[1\\] must be a LayerSpec"):
        shapes.receptive_fields([LayerSpec("c", 3), (3, 1)])
    with pytest.raises(ValueError, match="input_size must be positive"):
        shapes.receptive_fields([LayerSpec("c", 3)], -4)
    with pytest.raises(ValueError, match="groups=4 must divide c_in=6"):
        shapes.conv_params(6, 8, 3, groups=4)
    with pytest.raises(ValueError, match="c_out must be positive, got 0"):
        shapes.conv_params(3, 0, 3)
    with pytest.raises(ValueError, match="in_features must be positive"):
        shapes.dense_params(0, 3)
    with pytest.raises(ValueError, match="channels must be positive"):
        shapes.batch_norm_params(-1)
