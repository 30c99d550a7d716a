"""jaxcnn.nn: each module equals its functional op with the module's own parameters.

One table of module descriptors drives every cross-cutting check (jit == eager, grad,
vmap, bfloat16): adding a module to the table adds it to every test.
"""

from typing import Any, Callable, NamedTuple

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcnn import functional as F
from jaxcnn import nn as jnn


class Case(NamedTuple):
    name: str
    module: Any
    shape: tuple
    reference: Callable  # (variables, x) -> y, written with jaxcnn.functional only
    train: bool = False


def _p(v, *path):
    for key in path:
        v = v[key]
    return v


CASES = [
    Case("conv2d", jnn.Conv(4, 3, stride=2, padding=1), (2, 7, 7, 3),
         lambda v, x: F.conv(x, _p(v, "params", "kernel"), _p(v, "params", "bias"), stride=2, padding=1)),
    Case("conv1d_reflect", jnn.Conv(4, 3, padding=1, padding_mode="reflect"), (2, 9, 2),
         lambda v, x: F.conv(x, _p(v, "params", "kernel"), _p(v, "params", "bias"), padding=1, padding_mode="reflect")),
    Case("conv3d_nchw_groups", jnn.Conv(4, 2, groups=2, layout="NCHW"), (2, 2, 4, 4, 4),
         lambda v, x: F.conv(x, _p(v, "params", "kernel"), _p(v, "params", "bias"), groups=2, layout="NCHW")),
    Case("conv_transpose", jnn.ConvTranspose(3, 3, stride=2, padding=1, output_padding=1), (2, 4, 4, 2),
         lambda v, x: F.conv_transpose(x, _p(v, "params", "kernel"), _p(v, "params", "bias"), stride=2, padding=1,
                                       output_padding=1)),
    Case("dense", jnn.Dense(5), (3, 4),
         lambda v, x: F.dense(x, _p(v, "params", "kernel"), _p(v, "params", "bias"))),
    Case("batch_norm_eval", jnn.BatchNorm(), (4, 3, 3, 2),
         lambda v, x: F.batch_norm(x, _p(v, "params", "scale"), _p(v, "params", "bias"), _p(v, "batch_stats", "mean"),
                                   _p(v, "batch_stats", "var"), train=False)[0]),
    Case("batch_norm_train", jnn.BatchNorm(), (4, 3, 3, 2),
         lambda v, x: F.batch_norm(x, _p(v, "params", "scale"), _p(v, "params", "bias"), _p(v, "batch_stats", "mean"),
                                   _p(v, "batch_stats", "var"), train=True)[0], train=True),
    Case("group_norm", jnn.GroupNorm(2), (2, 3, 3, 4),
         lambda v, x: F.group_norm(x, 2, _p(v, "params", "scale"), _p(v, "params", "bias"))),
    Case("layer_norm", jnn.LayerNorm(), (2, 3, 5),
         lambda v, x: F.layer_norm(x, _p(v, "params", "scale"), _p(v, "params", "bias"), normalized_shape=(5,))),
    Case("max_pool", jnn.MaxPool(2), (2, 6, 6, 3), lambda v, x: F.max_pool(x, 2)),
    Case("max_pool_ceil", jnn.MaxPool(3, stride=2, padding=1, ceil_mode=True), (2, 6, 6, 3),
         lambda v, x: F.max_pool(x, 3, stride=2, padding=1, ceil_mode=True)),
    Case("min_pool", jnn.MinPool(2), (2, 6, 6, 3), lambda v, x: F.min_pool(x, 2)),
    Case("avg_pool", jnn.AvgPool(3, stride=2, padding=1, count_include_pad=False), (2, 6, 6, 3),
         lambda v, x: F.avg_pool(x, 3, stride=2, padding=1, count_include_pad=False)),
    Case("global_avg_pool", jnn.GlobalAvgPool(), (2, 5, 5, 3), lambda v, x: F.global_avg_pool(x)),
    Case("global_max_pool", jnn.GlobalMaxPool(), (2, 5, 5, 3), lambda v, x: F.global_max_pool(x)),
    Case("upsample_bilinear", jnn.Upsample(scale_factor=2, method="bilinear"), (2, 3, 3, 2),
         lambda v, x: F.upsample(x, scale_factor=2, method="bilinear")),
    Case("flatten", jnn.Flatten(), (2, 3, 3, 2), lambda v, x: F.flatten(x)),
    Case("dropout_eval", jnn.Dropout(0.5), (2, 8), lambda v, x: x),
    Case("sequential", jnn.Sequential([jnn.Conv(3, 3), F.relu, jnn.Flatten()]), (2, 5, 5, 2),
         lambda v, x: F.flatten(F.relu(F.conv(x, _p(v, "params", "layers_0", "kernel"),
                                              _p(v, "params", "layers_0", "bias"))))),
]
IDS = [c.name for c in CASES]


def _init(case, dtype=jnp.float32):
    x = jax.random.normal(jax.random.key(1), case.shape, dtype)
    variables = case.module.init({"params": jax.random.key(0), "dropout": jax.random.key(2)}, x, train=False)
    return variables, x


def _apply(case, variables, x):
    if case.train:
        y, _ = case.module.apply(variables, x, train=True, mutable=["batch_stats"])
        return y
    return case.module.apply(variables, x, train=False)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_module_equals_functional_op_exactly(case):
    variables, x = _init(case)
    np.testing.assert_array_equal(np.asarray(_apply(case, variables, x)), np.asarray(case.reference(variables, x)))


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_jit_equals_eager(case):
    variables, x = _init(case)
    eager = _apply(case, variables, x)
    jitted = jax.jit(lambda v, x: _apply(case, v, x))(variables, x)
    np.testing.assert_allclose(np.asarray(jitted), np.asarray(eager), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_grad_is_finite_and_nonzero(case):
    variables, x = _init(case)

    def loss(v, x):
        return jnp.sum(jnp.sin(_apply(case, v, x)))

    g_vars, g_x = jax.grad(loss, argnums=(0, 1))(variables, x)
    leaves = jax.tree_util.tree_leaves(g_vars.get("params", {})) + [g_x]
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in leaves)
    assert float(jnp.abs(g_x).sum()) > 0


@pytest.mark.parametrize("case", [c for c in CASES if not c.train], ids=[c.name for c in CASES if not c.train])
def test_vmap_over_an_extra_batch_axis(case):
    variables, x = _init(case)
    xs = jnp.stack([x, 2 * x, -x])
    batched = jax.vmap(lambda x: _apply(case, variables, x))(xs)
    looped = jnp.stack([_apply(case, variables, xi) for xi in xs])
    np.testing.assert_allclose(np.asarray(batched), np.asarray(looped), rtol=1e-5, atol=1e-5)


BF16_CASES = [c for c in CASES if "dtype" in type(c.module).__dataclass_fields__]


@pytest.mark.parametrize("case", BF16_CASES, ids=[c.name for c in BF16_CASES])
def test_bfloat16_compute_with_float32_params(case):
    module = case.module.clone(dtype=jnp.bfloat16)
    x = jax.random.normal(jax.random.key(1), case.shape, jnp.float32)
    variables = module.init(jax.random.key(0), x, train=False)
    assert all(p.dtype == jnp.float32 for p in jax.tree_util.tree_leaves(variables["params"]))
    bf = Case(case.name, module, case.shape, case.reference, case.train)
    y16 = _apply(bf, variables, x)
    y32 = _apply(case, variables, x)
    assert y16.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(y16, np.float32), np.asarray(y32), rtol=0.1, atol=0.1)


def test_batch_norm_updates_running_stats_like_the_functional_op():
    bn = jnn.BatchNorm(momentum=0.2)
    x = jax.random.normal(jax.random.key(0), (8, 3, 3, 2)) * 3 + 1
    variables = bn.init(jax.random.key(1), x)
    _, updates = bn.apply(variables, x, train=True, mutable=["batch_stats"])
    _, mean, var = F.batch_norm(x, None, None, jnp.zeros(2), jnp.ones(2), train=True, momentum=0.2)
    np.testing.assert_allclose(np.asarray(updates["batch_stats"]["mean"]), np.asarray(mean), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(updates["batch_stats"]["var"]), np.asarray(var), rtol=1e-6)


def test_dropout_in_training_uses_the_dropout_rng():
    drop = jnn.Dropout(0.25)
    x = jnp.ones((20, 100))
    y = drop.apply({}, x, train=True, rngs={"dropout": jax.random.key(3)})
    again = drop.apply({}, x, train=True, rngs={"dropout": jax.random.key(3)})
    other = drop.apply({}, x, train=True, rngs={"dropout": jax.random.key(4)})
    values = np.unique(np.asarray(y))
    # Kept entries are scaled by 1 / (1 - 0.25); about a quarter are dropped.
    np.testing.assert_allclose(values, [0.0, 1 / 0.75], rtol=1e-6)
    assert 0.2 < float(jnp.mean(y == 0)) < 0.3
    np.testing.assert_array_equal(np.asarray(y), np.asarray(again))
    assert not np.array_equal(np.asarray(y), np.asarray(other))
    np.testing.assert_array_equal(np.asarray(drop.apply({}, x, train=False)), np.asarray(x))



def test_dropout_masks_follow_the_global_example_index():
    """8 rows at once == 4 devices of 2 rows (a vmapped axis named like a data axis), and a row's
    mask does not depend on the other rows; the "global_dropout" stream wins over "dropout"."""
    x = jnp.ones((8, 50))
    rngs = {"dropout": jax.random.key(1), "global_dropout": jax.random.key(3)}
    whole = jnn.Dropout(0.5).apply({}, x, train=True, rngs=rngs)
    per_device = jax.vmap(
        lambda rows: jnn.Dropout(0.5, axis_name="data").apply({}, rows, train=True, rngs=rngs), axis_name="data"
    )(x.reshape(4, 2, 50))
    np.testing.assert_array_equal(np.asarray(per_device).reshape(8, 50), np.asarray(whole))
    first_three = jnn.Dropout(0.5).apply({}, x[:3], train=True, rngs=rngs)
    np.testing.assert_array_equal(np.asarray(first_three), np.asarray(whole[:3]))
    only_global = jnn.Dropout(0.5).apply({}, x, train=True, rngs={"global_dropout": jax.random.key(3)})
    np.testing.assert_array_equal(np.asarray(only_global), np.asarray(whole))
    assert not np.array_equal(np.asarray(whole[0]), np.asarray(whole[1]))

def test_conv_module_kernel_shapes_follow_layout():
    x_last = jnp.zeros((1, 8, 8, 3))
    v = jnn.Conv(5, (3, 2), groups=1).init(jax.random.key(0), x_last)
    assert v["params"]["kernel"].shape == (3, 2, 3, 5)
    v = jnn.Conv(6, (3, 2), groups=3, layout="NCHW").init(jax.random.key(0), jnp.zeros((1, 3, 8, 8)))
    assert v["params"]["kernel"].shape == (6, 1, 3, 2)


def test_conv_module_bad_input_names_the_argument():
    with pytest.raises(ValueError, match=r"groups=2 must be a positive int dividing C_in=3"):
        jnn.Conv(4, 3, groups=2).init(jax.random.key(0), jnp.zeros((1, 5, 5, 3)))
    with pytest.raises(ValueError, match=r"x must have rank 3 or 4 or 5"):
        jnn.Conv(4, 3).init(jax.random.key(0), jnp.zeros((5, 5)))
    with pytest.raises(ValueError, match=r"kernel_size=\(3, 3, 3\) has 3 entries"):
        jnn.Conv(4, (3, 3, 3)).init(jax.random.key(0), jnp.zeros((1, 5, 5, 3)))


def test_runs_inside_flax_nnx_through_the_bridge():
    from flax import nnx
    from flax.nnx import bridge

    from jaxcnn.models import SimpleCNN

    x = jax.random.normal(jax.random.key(0), (2, 28, 28, 1))
    model = bridge.ToNNX(SimpleCNN(num_classes=10), rngs=nnx.Rngs(0))
    bridge.lazy_init(model, x)
    y = model(x)
    assert y.shape == (2, 10)
    # The same parameters through plain linen give the same logits.
    state = nnx.state(model, nnx.Param)
    params = flax.core.unfreeze(jax.tree_util.tree_map(lambda v: v, nnx.to_pure_dict(state)))
    np.testing.assert_allclose(np.asarray(SimpleCNN().apply({"params": params}, x)), np.asarray(y), rtol=1e-6)
