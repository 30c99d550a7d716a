"""jaxcnn.summary: parameters, shapes, FLOPs (against XLA's cost analysis) and receptive
fields (against hand-computed values and the gradient's support)."""

import json
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcnn import nn as jnn
from jaxcnn.backends import cpu
from jaxcnn.models import LeNet5, ResNet18, SimpleCNN, UNet
from jaxcnn.summary import LayerRow, Summary, summary


def _xla_flops(model, shape, train=False):
    """FLOPs of the compiled forward pass, by XLA's own cost analysis.

    Traced with the CPU kernels off (the reference program): XLA counts a convolution's
    FLOPs exactly, while the kernels' slices and matmuls are counted by the instructions that
    happen to implement them.
    """
    with cpu.kernels(False):
        return _compiled_flops(model, shape, train)


def _compiled_flops(model, shape, train):
    x = jax.ShapeDtypeStruct(shape, jnp.float32)
    variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), x)

    def forward(v, x):
        if train:
            return model.apply(v, x, train=True, mutable=["batch_stats"], rngs={"dropout": jax.random.key(1)})
        return model.apply(v, x, train=False)

    cost = jax.jit(forward).lower(variables, x).compile().cost_analysis()
    if isinstance(cost, list):  # older jax returned one dict per computation
        cost = cost[0]
    return cost.get("flops", 0.0)


def _random_variables(model, shape, seed=0):
    """Random parameters of either sign, away from 0, and unit running statistics
    (``model.init`` compiles slowly on CPU)."""
    rng = np.random.default_rng(seed)
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(shape), train=False))

    def draw(s):
        return jnp.asarray(rng.uniform(0.5, 1.5, s.shape) * rng.choice([-1.0, 1.0], s.shape), s.dtype)

    return {
        k: jax.tree_util.tree_map(draw if k == "params" else (lambda s: jnp.ones(s.shape, s.dtype)), v)
        for k, v in shapes.items()
    }


# ---------------------------------------------------------------------- parameters, shapes


def test_jaxcnn_summary_stays_callable():
    """Importing ``jaxcnn.summary`` binds the package attribute to the module; it must still be
    the function's way in, on every call (a notebook cell run twice), whatever was imported first."""
    import importlib

    import jaxcnn

    importlib.import_module("jaxcnn.summary")
    first = jaxcnn.summary(SimpleCNN(), (1, 28, 28, 1))
    second = jaxcnn.summary(SimpleCNN(), (1, 28, 28, 1))
    assert first == second == summary(SimpleCNN(), (1, 28, 28, 1))
    assert jaxcnn.summary.Summary is Summary


def test_simple_cnn_parameters_per_layer_and_total():
    s = summary(SimpleCNN(), (1, 28, 28, 1))
    assert s.total_params == 1_668_490
    assert sum(r.params for r in s.rows) == 1_668_490
    by_path = {r.path: r.params for r in s.rows}
    # 3*3*1*32 + 32; 3*3*32*64 + 64; 5*5*64*1024 + 1024; 1024*10 + 10.
    assert by_path == {
        "conv1": 320,
        "MaxPool_0": 0,
        "conv2": 18_496,
        "MaxPool_1": 0,
        "fc1": 1_639_424,
        "Dropout_0": 0,
        "fc2": 10_250,
    }
    assert s.output_shape == (1, 10)


def test_resnet_parameters_and_state_totals():
    s = summary(ResNet18(), (1, 224, 224, 3))
    assert s.total_params == 11_689_512  # torchvision's figure
    assert sum(r.params for r in s.rows) == s.total_params
    assert s.total_state == 2 * sum(r.output_shape[-1] for r in s.rows if r.type == "BatchNorm")


@pytest.mark.parametrize(
    "model,shape",
    [
        (SimpleCNN(), (2, 28, 28, 1)),
        (ResNet18(num_classes=5, small_input=True, width=8), (2, 16, 16, 3)),
        (UNet(num_classes=3, features=(8, 16, 32), decoder="upsample"), (1, 20, 18, 1)),
    ],
)
def test_output_shapes_equal_the_real_outputs(model, shape):
    run = jax.jit(
        lambda v, x: model.apply(v, x, train=False, capture_intermediates=True, mutable=["intermediates"])
    )
    out, state = run(_random_variables(model, shape), jax.random.normal(jax.random.key(0), shape))
    s = summary(model, shape)
    assert s.output_shape == out.shape
    assert len(s.rows) > 3
    for row in s.rows:
        node = state["intermediates"]
        for name in row.path.split("/"):
            node = node[name]
        (real,) = node["__call__"]
        assert row.output_shape == real.shape, row.path


# ------------------------------------------------------------------------------- FLOPs


@pytest.mark.parametrize(
    "model,shape",
    [
        (SimpleCNN(), (1, 28, 28, 1)),
        (LeNet5(), (2, 28, 28, 1)),
        (ResNet18(num_classes=10, small_input=True, width=16), (2, 32, 32, 3)),
        (UNet(num_classes=3, features=(8, 16, 32)), (1, 32, 32, 1)),
    ],
)
def test_total_flops_agree_with_xla_cost_analysis(model, shape):
    ours, xla = summary(model, shape).total_flops, _xla_flops(model, shape)
    # Only activations, residual sums and the like between layers are left out.
    assert ours <= xla
    assert ours == pytest.approx(xla, rel=0.03)


def test_training_flops_agree_with_xla_cost_analysis():
    model, shape = ResNet18(num_classes=10, small_input=True, width=16), (2, 16, 16, 3)
    ours = summary(model, shape, train=True).total_flops
    assert ours == pytest.approx(_xla_flops(model, shape, train=True), rel=0.03)
    assert ours > summary(model, shape).total_flops  # batch statistics cost more


def test_conv_flops_by_hand():
    # 26*26 outputs x 32 filters x 9 taps: 194,688 multiply-adds, 2 FLOPs each, + 21,632 bias adds.
    assert summary(jnn.Conv(32, 3), (1, 28, 28, 1)).total_flops == 2 * 26 * 26 * 32 * 9 + 26 * 26 * 32
    # Padding taps are not work: a 3x3 'SAME' conv on 4x4 has 36 real taps per axis pair...
    # per axis, the 4 outputs see 2 + 3 + 3 + 2 = 10 real inputs, so 10 * 10 taps in 2D.
    assert summary(jnn.Conv(1, 3, padding=1, use_bias=False), (1, 4, 4, 1)).total_flops == 2 * 10 * 10


# One entry per layer type (and the variants that change the count): the summary's FLOPs for
# the layer alone must equal XLA's. Structural counts (conv, dense, pooling) are exact; the
# elementwise counts of normalisation and resizing depend on the op's implementation, so
# they get 5%.
LAYERS = [
    ("conv", jnn.Conv(8, 3), (2, 9, 9, 4), False, 0),
    ("conv stride pad", jnn.Conv(8, 3, stride=2, padding=1), (2, 9, 9, 4), False, 0),
    ("conv same", jnn.Conv(8, (3, 5), stride=2, padding="SAME"), (2, 9, 10, 4), False, 0),
    ("conv dilated", jnn.Conv(8, 3, padding=2, dilation=2), (2, 9, 9, 4), False, 0),
    ("conv groups", jnn.Conv(8, 3, padding=1, groups=2, use_bias=False), (2, 9, 9, 4), False, 0),
    ("conv reflect", jnn.Conv(8, 3, padding=1, padding_mode="reflect"), (2, 9, 9, 4), False, 0),
    ("conv 1d", jnn.Conv(8, 5, padding="SAME"), (2, 20, 4), False, 0),
    ("conv 3d", jnn.Conv(8, 3, stride=2, padding=1), (2, 6, 6, 6, 4), False, 0),
    ("conv nchw", jnn.Conv(8, 3, padding=1, layout="NCHW"), (2, 4, 9, 9), False, 0),
    ("conv_transpose", jnn.ConvTranspose(8, 2, stride=2), (2, 5, 5, 4), False, 0),
    (
        "conv_transpose pad",
        jnn.ConvTranspose(8, 3, stride=2, padding=1, output_padding=1),
        (2, 5, 5, 4),
        False,
        0,
    ),
    (
        "conv_transpose dilated",
        jnn.ConvTranspose(8, 3, stride=2, dilation=2, padding=1),
        (2, 5, 5, 4),
        False,
        0,
    ),
    (
        "conv_transpose groups",
        jnn.ConvTranspose(8, 3, stride=2, groups=2, padding="SAME"),
        (2, 5, 5, 4),
        False,
        0,
    ),
    ("conv_transpose stride 3", jnn.ConvTranspose(8, 2, stride=3, use_bias=False), (2, 5, 5, 4), False, 0),
    ("dense", jnn.Dense(10), (3, 64), False, 0),
    ("dense per pixel", jnn.Dense(10, use_bias=False), (2, 4, 4, 16), False, 0),
    ("avg_pool", jnn.AvgPool(2), (2, 8, 8, 16), False, 0),
    ("avg_pool pad", jnn.AvgPool(3, stride=1, padding=1, count_include_pad=False), (2, 8, 8, 16), False, 0),
    ("global_avg_pool", jnn.GlobalAvgPool(), (2, 8, 8, 16), False, 0),
    ("global_max_pool", jnn.GlobalMaxPool(), (2, 8, 8, 16), False, 0),
    ("flatten", jnn.Flatten(), (2, 8, 8, 16), False, 0),
    ("dropout eval", jnn.Dropout(0.5), (2, 8, 8, 16), False, 0),
    ("batch_norm eval", jnn.BatchNorm(), (2, 8, 8, 16), False, 0.05),
    ("batch_norm eval plain", jnn.BatchNorm(use_scale=False, use_bias=False), (2, 8, 8, 16), False, 0.05),
    ("batch_norm eval nchw", jnn.BatchNorm(layout="NCHW"), (2, 16, 8, 8), False, 0.05),
    ("batch_norm train", jnn.BatchNorm(), (2, 8, 8, 16), True, 0.05),
    ("batch_norm train plain", jnn.BatchNorm(use_scale=False, use_bias=False), (2, 8, 8, 16), True, 0.05),
    ("group_norm", jnn.GroupNorm(4), (2, 8, 8, 16), False, 0.05),
    ("layer_norm", jnn.LayerNorm(), (2, 8, 8, 16), False, 0.05),
    ("layer_norm 3 axes", jnn.LayerNorm(3, use_bias=False), (2, 8, 8, 16), False, 0.05),
    ("upsample nearest", jnn.Upsample(scale_factor=2), (2, 8, 8, 16), False, 0),
    ("upsample bilinear", jnn.Upsample(scale_factor=2, method="bilinear"), (2, 8, 8, 16), False, 0.05),
    ("upsample bilinear 1.5", jnn.Upsample(scale_factor=1.5, method="bilinear"), (2, 8, 8, 16), False, 0.05),
    ("upsample area", jnn.Upsample(size=(4, 4), method="area"), (2, 8, 8, 16), False, 0.05),
]


@pytest.mark.parametrize("name,layer,shape,train,rel", LAYERS, ids=[entry[0] for entry in LAYERS])
def test_layer_flops_equal_xla(name, layer, shape, train, rel):
    s = summary(layer, shape, train=train)
    assert len(s.rows) == 1 and s.rows[0].flops is not None
    assert s.total_flops == pytest.approx(_xla_flops(layer, shape, train=train), rel=rel, abs=0)


# Max/min pooling: one comparison per window tap after the first, for every output. Counted
# by hand because on CPU the pooling is a running select (compare, NaN test, select), which
# XLA's cost analysis counts as several FLOPs per tap.
@pytest.mark.parametrize(
    "layer, shape, out_hw, taps",
    [
        (jnn.MaxPool(2), (2, 8, 8, 16), (4, 4), 4),
        (jnn.MaxPool(2), (2, 9, 9, 16), (4, 4), 4),
        (jnn.MaxPool(3, stride=2, padding=1), (2, 8, 8, 16), (4, 4), 9),
        (jnn.MaxPool(3, stride=2, ceil_mode=True), (2, 8, 8, 16), (4, 4), 9),
        (jnn.MinPool(2), (2, 8, 8, 16), (4, 4), 4),
    ],
    ids=["max_pool", "max_pool odd", "max_pool 3/2 pad", "max_pool ceil", "min_pool"],
)
def test_extremum_pool_flops_by_hand(layer, shape, out_hw, taps):
    outputs = shape[0] * out_hw[0] * out_hw[1] * shape[-1]
    assert summary(layer, shape).total_flops == outputs * (taps - 1)


# --------------------------------------------------------------------- receptive fields


def test_simple_cnn_receptive_fields_by_hand():
    s = summary(SimpleCNN(), (1, 28, 28, 1))
    rf = {r.path: (r.receptive_field, r.jump) for r in s.rows}
    # r_out = r_in + (k - 1) * j_in, j_out = j_in * s: conv3 -> 3, pool2 -> 3 + 1 = 4 (jump 2),
    # conv3 -> 4 + 2 * 2 = 8, pool2 -> 8 + 1 * 2 = 10 (jump 4).
    assert rf["conv1"] == ((3, 3), (1, 1))
    assert rf["MaxPool_0"] == ((4, 4), (2, 2))
    assert rf["conv2"] == ((8, 8), (2, 2))
    assert rf["MaxPool_1"] == ((10, 10), (4, 4))
    # The dense layer sees the whole flattened 5x5 map: 10 + 4 * 4 = 26 = 28 - 2 lost by conv1.
    assert rf["fc1"] == ((26, 26), None)


def test_resnet18_receptive_field_follows_the_main_path_not_the_shortcut():
    rows = {r.path: r for r in summary(ResNet18(), (1, 224, 224, 3)).rows}
    # Stem 7/2 -> 7 (j 2), max pool 3/2 -> 11 (j 4); each 3x3 adds 2 * jump: layer1 -> 43,
    # layer2 -> 99 (j 8), layer3 -> 211 (j 16), layer4 -> 435 (j 32), the published value.
    assert rows["MaxPool_0"].receptive_field == (11, 11)
    assert rows["layer1_1/bn2"].receptive_field == (43, 43)
    assert rows["layer2_1/bn2"].receptive_field == (99, 99)
    assert rows["layer3_1/bn2"].receptive_field == (211, 211)
    assert (rows["layer4_1/bn2"].receptive_field, rows["layer4_1/bn2"].jump) == ((435, 435), (32, 32))
    # The 1x1/2 projection reads the block input (field 43, jump 4): same field, jump 8, and
    # the next block continues from the 3x3 path (51 -> 67 -> 83), not from the shortcut.
    assert (rows["layer2_0/downsample_conv"].receptive_field, rows["layer2_0/downsample_conv"].jump) == (
        (43, 43),
        (8, 8),
    )
    assert rows["layer2_0/bn2"].receptive_field == (67, 67)
    assert rows["layer2_1/conv1"].receptive_field == (83, 83)


class _Branchy(nn.Module):
    """tanh and average pooling keep every path's gradient non-zero, so the gradient's support
    is exactly the receptive field; has a strided shortcut, dilation and a transposed conv."""

    @nn.compact
    def __call__(self, x, train=False):
        y = jnn.AvgPool(2, name="p1")(jnp.tanh(jnn.Conv(3, 3, name="c1")(x)))
        z = jnp.tanh(jnn.Conv(3, 3, dilation=2, padding=2, name="c2")(y))
        z = jnn.Conv(3, 3, stride=2, padding=1, name="c3")(z)
        z = jnp.tanh(z + jnn.Conv(3, 1, stride=2, name="proj")(y))
        z = jnn.ConvTranspose(3, 2, stride=2, name="up")(z)
        return jnn.Conv(2, (3, 1), padding=((1, 1), (0, 0)), name="c4")(jnp.tanh(z))


def _support(model, variables, x, path, position):
    """Extent per spatial axis of the input pixels that move the given output pixel."""

    def pixel(x):
        _, state = model.apply(variables, x, capture_intermediates=True, mutable=["intermediates"])
        (y,) = state["intermediates"][path]["__call__"]
        return jnp.sum(y[(0, *position)])

    grad = np.abs(np.asarray(jax.grad(pixel)(x)))[0].sum(-1)
    extents = []
    for axis in range(grad.ndim):
        hit = np.nonzero(grad.sum(axis=1 - axis) > 0)[0]
        extents.append(int(hit[-1] - hit[0] + 1))
    return tuple(extents)


def test_receptive_fields_equal_the_gradient_support():
    model, shape = _Branchy(), (1, 64, 64, 1)
    x = jax.random.normal(jax.random.key(0), shape)
    variables = _random_variables(model, shape)
    rows = summary(model, shape).rows
    assert [r.path for r in rows] == ["c1", "p1", "c2", "c3", "proj", "up", "c4"]
    for row in rows:
        centre = tuple(n // 2 for n in row.output_shape[1:3])
        assert row.receptive_field == _support(model, variables, x, row.path, centre), row.path
    by_path = {r.path: r for r in rows}
    assert by_path["proj"].receptive_field == (4, 4)  # the shortcut: p1's field, jump 4
    assert by_path["up"].jump == (2, 2)  # a stride-2 transposed conv halves the jump
    assert by_path["c4"].receptive_field == (20, 16)  # (3, 1) kernel at jump 2: +4 on H only


def test_fields_are_unknown_when_a_lifted_transform_hides_the_data_flow():
    class Remat(nn.Module):
        @nn.compact
        def __call__(self, x, train=False):
            return jnn.Conv(2, 3)(nn.remat(jnn.Conv)(2, 3)(x))

    s = summary(Remat(), (1, 8, 8, 1))
    assert [r.receptive_field for r in s.rows] == [None, None]
    assert s.total_params == 2 * 3 * 3 * 1 + 2 + 2 * 3 * 3 * 2 + 2


# ------------------------------------------------------------------------------ the data


def test_summary_is_data_and_prints_a_table():
    s = summary(SimpleCNN(), (1, 28, 28, 1))
    assert isinstance(s, Summary) and all(isinstance(r, LayerRow) for r in s.rows)
    d = s.to_dict()
    json.dumps(d)
    assert d["total_params"] == 1_668_490 and d["rows"][0]["path"] == "conv1"
    assert d["total_flops"] == sum(r["flops"] for r in d["rows"])
    text = str(s)
    for piece in ("Layer", "Output shape", "FLOPs", "RF", "conv1", "1x26x26x32", "1,668,490", "MaxPool_1"):
        assert piece in text
    assert len(text.splitlines()) == len(s.rows) + 7


def test_sequential_is_a_container_and_nchw_fields():
    model = jnn.Sequential(
        [
            jnn.Conv(4, 3, layout="NCHW"),
            jnn.BatchNorm(layout="NCHW"),
            jnn.MaxPool(2, layout="NCHW"),
            jnn.Flatten(),
            jnn.Dense(3),
        ]
    )
    s = summary(model, (2, 1, 10, 10))
    assert [r.type for r in s.rows] == ["Conv", "BatchNorm", "MaxPool", "Flatten", "Dense"]
    assert [r.receptive_field for r in s.rows] == [(3, 3), (3, 3), (4, 4), (4 + 3 * 2,) * 2, (10, 10)]
    assert s.rows[3].output_shape == (2, 64)


def test_argument_errors():
    with pytest.raises(TypeError, match="model"):
        summary(lambda x: x, (1, 28, 28, 1))
    with pytest.raises(TypeError, match="input_shape"):
        summary(SimpleCNN(), "1x28x28x1")
    with pytest.raises(ValueError, match="input_shape"):
        summary(SimpleCNN(), (1, 0, 28, 1))
    with pytest.raises(TypeError, match="train"):
        summary(SimpleCNN(), (1, 28, 28, 1), train="yes")
    with pytest.raises(TypeError, match="dtype"):
        summary(SimpleCNN(), (1, 28, 28, 1), dtype="not-a-dtype")
    assert math.prod(summary(SimpleCNN(), [1, 28, 28, 1]).input_shape) == 784
