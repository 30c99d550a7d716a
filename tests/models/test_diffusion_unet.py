"""DiffusionUNet: shapes, jit, grad, conditioning, and that a few steps of the diffusion objective lower the loss.

One tiny configuration on 8x8x1 serves every test, so the network compiles once for the
forward pass and once for the loss gradient; the full-size shapes are checked by tracing only.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxcnn import diffusion as D
from jaxcnn.models import DiffusionUNet, get_model

TINY = dict(base_features=8, channel_multipliers=(1, 2), num_groups=4)
SCHEDULE = D.make_schedule("cosine", 100)


def randomised(params, seed=0):
    """Every parameter redrawn ~N(0, 0.3^2): the zero-initialised output layers would hide the conditioning.

    Drawn by NumPy on the host: threefry for every leaf would cost a long compile.
    """
    rng = np.random.default_rng(seed)
    return jax.tree_util.tree_map(lambda x: jnp.asarray(0.3 * rng.normal(size=x.shape), jnp.float32), params)


@pytest.fixture(scope="module")
def setup():
    """Two "classes" of 8x8 pictures in [-1, 1] (a square, a bar), the model, its apply and its loss gradient."""
    model = DiffusionUNet(num_classes=2, **TINY)
    x0 = -np.ones((8, 8, 8, 1), np.float32)
    x0[0::2, 2:6, 2:6] = 1.0
    x0[1::2, :, 3:5] = 1.0
    x0 += 0.05 * np.random.default_rng(0).normal(size=x0.shape).astype(np.float32)
    labels = jnp.array([0, 1] * 4, jnp.int32)
    params = jax.jit(model.init)(jax.random.PRNGKey(0), x0, jnp.zeros(8, jnp.int32), labels)["params"]
    apply = jax.jit(lambda p, x, t, y: model.apply({"params": p}, x, t, y))
    loss_and_grad = jax.jit(jax.value_and_grad(
        lambda p, k: D.diffusion_loss(model.apply_params, p, k, x0, SCHEDULE, labels=labels, num_classes=2,
                                      label_dropout=0.2)))
    return dict(model=model, x0=x0, labels=labels, params=params, apply=apply, loss_and_grad=loss_and_grad)


def shape_of(model, x, labels=None):
    t = jnp.zeros((x.shape[0],), jnp.int32)
    return jax.eval_shape(lambda: model.apply(model.init(jax.random.PRNGKey(0), x, t, labels), x, t, labels)).shape


def test_output_shape_equals_input_for_mnist_and_cifar_shapes(setup):
    out = setup["apply"](setup["params"], setup["x0"], jnp.arange(8, dtype=jnp.int32), setup["labels"])
    assert out.shape == setup["x0"].shape and out.dtype == jnp.float32 and np.isfinite(np.asarray(out)).all()
    default = DiffusionUNet(num_classes=10)  # the default widths, levels 28 -> 14 -> 7
    assert shape_of(default, jnp.ones((2, 28, 28, 1)), jnp.array([0, 10])) == (2, 28, 28, 1)
    assert shape_of(DiffusionUNet(channel_multipliers=(1, 2, 2, 2)), jnp.ones((1, 32, 32, 3))) == (1, 32, 32, 3)
    odd = DiffusionUNet(out_channels=2, channel_multipliers=(1, 2, 2), base_features=8, num_groups=4)
    assert shape_of(odd, jnp.ones((1, 13, 10, 1))) == (1, 13, 10, 2)  # padded to 16x12 inside, cropped back


def test_time_and_class_conditioning_change_the_output(setup):
    apply, params, x = setup["apply"], randomised(setup["params"]), setup["x0"]
    t = jnp.full((8,), 10, jnp.int32)
    y = jnp.zeros((8,), jnp.int32)
    base = np.asarray(apply(params, x, t, y))
    other_t = np.asarray(apply(params, x, t.at[0].set(90), y))
    other_y = np.asarray(apply(params, x, t, y.at[1].set(1)))
    diff = lambda a: np.abs(a - base).max(axis=(1, 2, 3))  # noqa: E731
    assert diff(other_t)[0] > 1e-2 and diff(other_t)[1:].max() < 1e-6  # only the changed example moves
    assert diff(other_y)[1] > 1e-2 and np.delete(diff(other_y), 1).max() < 1e-6


def test_gradient_reaches_every_parameter(setup):
    loss, grads = setup["loss_and_grad"](randomised(setup["params"]), jax.random.PRNGKey(0))
    maxima = {jax.tree_util.keystr(p): float(jnp.abs(g).max()) for p, g in jax.tree_util.tree_leaves_with_path(grads)}
    assert np.isfinite(float(loss)) and all(np.isfinite(v) for v in maxima.values())
    assert all(v > 0 for v in maxima.values()), [k for k, v in maxima.items() if v == 0]


def test_a_few_training_steps_lower_the_diffusion_loss(setup):
    loss_and_grad, params = setup["loss_and_grad"], setup["params"]
    optimizer = optax.adam(3e-3)

    @jax.jit
    def update(params, opt_state, grads):
        with jax.numpy_dtype_promotion("standard"):  # optax mixes its int32 step count with floats
            updates, opt_state = optimizer.update(grads, opt_state)
        return optax.apply_updates(params, updates), opt_state

    evaluate = lambda p: np.mean([float(loss_and_grad(p, jax.random.PRNGKey(1000 + i))[0]) for i in range(8)])  # noqa: E731
    before = evaluate(params)
    opt_state = jax.jit(optimizer.init)(params)
    for i in range(30):
        _, grads = loss_and_grad(params, jax.random.PRNGKey(i))
        params, opt_state = update(params, opt_state, grads)
    after = evaluate(params)
    assert after < 0.7 * before, (before, after)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(num_groups=3), "num_groups=3 must divide"),
        (dict(channel_multipliers=()), "channel_multipliers"),
        (dict(num_classes=0), "num_classes"),
    ],
)
def test_bad_fields_name_the_field(kwargs, match):
    with pytest.raises(ValueError, match=match):
        get_model("DiffusionUNet", **{**TINY, **kwargs})


def test_bad_inputs_name_the_argument():
    model = DiffusionUNet(**TINY)
    x = jnp.ones((2, 8, 8, 1))
    with pytest.raises(ValueError, match="unconditional"):
        model.init(jax.random.PRNGKey(0), x, jnp.array([0, 1]), jnp.array([0, 1]))
    with pytest.raises(ValueError, match=r"t must be \(N,\)"):
        model.init(jax.random.PRNGKey(0), x, jnp.array([0]))
    with pytest.raises(ValueError, match="x must be"):
        model.init(jax.random.PRNGKey(0), jnp.ones((8, 8, 1)), jnp.array([0]))
