"""The model zoo: parameter counts (torchvision's published figures), shapes, training."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxcnn import functional as F
from jaxcnn.models import FCN, AllConvNet, LeNet5, SignalRegressor, SimpleCNN, UNet, get_model


def _count(variables):
    return sum(math.prod(p.shape) for p in jax.tree_util.tree_leaves(variables["params"]))


def _shapes(model, shape):
    """Variables' shapes without computing anything (eval_shape)."""
    return jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(shape), train=False))


@pytest.mark.parametrize(
    "name,count",
    [
        ("ResNet18", 11_689_512),
        ("ResNet34", 21_797_672),
        ("ResNet50", 25_557_032),
        ("ResNet101", 44_549_160),
        ("ResNet152", 60_192_808),
    ],
)
def test_resnet_parameter_counts_equal_torchvision(name, count):
    assert _count(_shapes(get_model(name), (1, 224, 224, 3))) == count


def test_simple_cnn_and_lenet_parameter_counts():
    assert _count(_shapes(SimpleCNN(num_classes=10), (1, 28, 28, 1))) == 1_668_490
    # LeNet-5 with 10 outputs: 156 + 2,416 + 48,120 + 10,164 + 850.
    assert _count(_shapes(LeNet5(), (1, 28, 28, 1))) == 61_706


def test_all_conv_net_parameter_count():
    # Bias-free convs 3x3x1x32, 3x3x32x32, 5x5x32x32, 3x3x32x64, 3x3x64x64, 5x5x64x64,
    # 4x4x64x128 = 323,872; seven batch norms (scale + bias) 2 * (3 * 32 + 3 * 64 + 128) = 832;
    # head 128 * 10 + 10 = 1,290.
    assert _count(_shapes(AllConvNet(), (1, 28, 28, 1))) == 325_994
    assert _count(_shapes(get_model("AllConvNet", num_classes=10), (1, 28, 28, 1))) == 325_994


def test_all_conv_net_bad_arguments():
    with pytest.raises(ValueError, match=r"AllConvNet: width must be a positive int, got 0"):
        AllConvNet(width=0)
    with pytest.raises(ValueError, match=r"AllConvNet: x must be \(N, H, W, C\), got shape \(28, 28\)"):
        AllConvNet().init(jax.random.key(0), jnp.zeros((28, 28)))


@pytest.mark.parametrize(
    "model,shape,out",
    [
        (get_model("ResNet18"), (1, 224, 224, 3), (1, 1000)),
        (get_model("ResNet50", num_classes=10), (1, 224, 224, 3), (1, 10)),
        (get_model("ResNet18", num_classes=10, small_input=True), (2, 32, 32, 3), (2, 10)),
        (get_model("ResNet18", num_classes=10, small_input=True), (2, 28, 28, 1), (2, 10)),
        (UNet(num_classes=11, features=(8, 16, 32)), (2, 64, 64, 1), (2, 64, 64, 11)),
        (UNet(num_classes=3, features=(8, 16, 32), decoder="upsample"), (1, 30, 27, 1), (1, 30, 27, 3)),
        (FCN(num_classes=11, small_input=True, width=8), (2, 64, 64, 1), (2, 64, 64, 11)),
        (FCN(num_classes=4, variant="32s", width=8), (1, 96, 80, 3), (1, 96, 80, 4)),
        (SignalRegressor(num_outputs=2), (3, 64, 1), (3, 2)),
        (SimpleCNN(num_classes=1), (2, 28, 28, 1), (2, 1)),
        (AllConvNet(num_classes=10), (2, 28, 28, 1), (2, 10)),
        (AllConvNet(num_classes=3, width=4), (2, 32, 32, 3), (2, 3)),
    ],
)
def test_output_shapes(model, shape, out):
    def apply():
        v = model.init(jax.random.key(0), jnp.zeros(shape), train=False)
        return model.apply(v, jnp.zeros(shape), train=False)

    assert jax.eval_shape(apply).shape == out


def test_init_is_deterministic_for_a_key():
    x = jnp.zeros((1, 28, 28, 1))
    a = LeNet5().init(jax.random.key(7), x)
    b = LeNet5().init(jax.random.key(7), x)
    c = LeNet5().init(jax.random.key(8), x)
    assert all(jax.tree_util.tree_leaves(jax.tree_util.tree_map(lambda u, v: bool(jnp.all(u == v)), a, b)))
    assert not np.array_equal(a["params"]["conv1"]["kernel"], c["params"]["conv1"]["kernel"])


TRAINABLE = [
    ("SimpleCNN", SimpleCNN(num_classes=4, dropout_rate=0.1), (8, 28, 28, 1), "class"),
    ("LeNet5", LeNet5(num_classes=4), (8, 28, 28, 1), "class"),
    ("AllConvNet", AllConvNet(num_classes=4, width=4, dropout_rate=0.1), (8, 28, 28, 1), "class"),
    ("ResNet18-small", get_model("ResNet18", num_classes=4, small_input=True, width=8), (8, 16, 16, 3), "class"),
    ("ResNet50-small", get_model("ResNet50", num_classes=4, small_input=True, width=4), (8, 16, 16, 3), "class"),
    ("UNet", UNet(num_classes=3, features=(4, 8)), (4, 16, 16, 1), "seg"),
    ("FCN", FCN(num_classes=3, small_input=True, width=4), (4, 16, 16, 1), "seg"),
    ("SignalRegressor", SignalRegressor(num_outputs=1, features=(4, 8)), (8, 32, 1), "reg"),
]


@pytest.mark.parametrize("name,model,shape,kind", TRAINABLE, ids=[t[0] for t in TRAINABLE])
def test_model_jits_differentiates_and_trains_with_falling_loss(name, model, shape, kind):
    kx, ky = jax.random.split(jax.random.key(0))
    x = jax.random.normal(kx, shape)
    if kind == "class":
        y = jax.random.randint(ky, (shape[0],), 0, 4)
    elif kind == "seg":
        y = (x[..., 0] > 0).astype(jnp.int32) + (x[..., 0] > 1).astype(jnp.int32)
    else:
        y = jnp.mean(x, axis=1)  # (N, 1): the mean of each signal
    variables = model.init(jax.random.key(1), x, train=False)
    params, stats = variables["params"], variables.get("batch_stats", {})
    tx = optax.adam(1e-2 if kind == "seg" else 3e-3)
    opt = tx.init(params)

    def loss_fn(params, stats, key):
        out, updates = model.apply(
            {"params": params, "batch_stats": stats}, x, train=True, mutable=["batch_stats"], rngs={"dropout": key}
        )
        loss = F.mse(out, y) if kind == "reg" else F.cross_entropy(out, y)
        return loss, updates.get("batch_stats", {})

    @jax.jit
    def step(params, stats, opt, key):
        (loss, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, stats, key)
        # optax mixes its int32 step count with floats, which strict promotion rejects.
        with jax.numpy_dtype_promotion("standard"):
            upd, opt = tx.update(grads, opt, params)
        return optax.apply_updates(params, upd), stats, opt, loss

    losses = []
    for i in range(8):
        params, stats, opt, loss = step(params, stats, opt, jax.random.key(100 + i))
        losses.append(float(loss))
    assert all(np.isfinite(losses))
    assert losses[-1] < 0.8 * losses[0], losses


def test_get_model_errors():
    with pytest.raises(ValueError, match=r"unknown model name='VGG'"):
        get_model("VGG")
    with pytest.raises(TypeError, match=r"bad arguments for SimpleCNN"):
        get_model("SimpleCNN", depth=3)


def test_unet_and_fcn_bad_input():
    with pytest.raises(ValueError, match=r"UNet: x must be \(N, H, W, C\), got shape \(64, 64\)"):
        UNet(3).init(jax.random.key(0), jnp.zeros((64, 64)))
    with pytest.raises(ValueError, match=r"decoder must be 'transpose' or 'upsample'"):
        UNet(3, decoder="bicubic").init(jax.random.key(0), jnp.zeros((1, 16, 16, 1)))
    with pytest.raises(ValueError, match=r"variant must be '32s', '16s' or '8s'"):
        FCN(3, variant="4s").init(jax.random.key(0), jnp.zeros((1, 32, 32, 1)))


def test_resnet_variants_document_themselves_and_build_what_resnet_builds():
    import pydoc

    from flax import serialization

    from jaxcnn.models import BasicBlock, Bottleneck, ResNet, ResNet18, ResNet50, ResNet152

    text = pydoc.render_doc(ResNet18, renderer=pydoc.plaintext)
    assert "ResNet-18" in text and "partial(func" not in text
    assert "Bottlenecks, stages (3, 8, 36, 3)" in ResNet152.__doc__
    small = ResNet18(num_classes=10, small_input=True, width=4)
    plain = ResNet(stage_sizes=(2, 2, 2, 2), block=BasicBlock, num_classes=10, small_input=True, width=4)
    assert isinstance(small, ResNet) and ResNet50().block is Bottleneck
    x = jnp.ones((1, 16, 16, 3))
    variables = small.init(jax.random.key(0), x)
    reference = plain.init(jax.random.key(0), x)
    jax.tree.map(np.testing.assert_array_equal, variables, reference)
    restored = serialization.from_bytes(reference, serialization.to_bytes(variables))
    np.testing.assert_array_equal(small.apply(restored, x), plain.apply(reference, x))
