"""batch_norm, layer_norm and group_norm against PyTorch, NumPy and hand-computed values."""

import functools
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import jax.test_util
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from jaxcnn.functional.normalization import batch_norm, group_norm, layer_norm

RNG = np.random.default_rng(0)


def _randn(*shape, scale=1.0, offset=0.0):
    return (RNG.normal(size=shape) * scale + offset).astype(np.float32)


def _t(a):
    return torch.tensor(np.asarray(a))


def _stats(c):
    return _randn(c), RNG.uniform(0.5, 2.0, size=c).astype(np.float32)


def _to_nhwc(a):
    return np.moveaxis(np.asarray(a), 1, -1)


# ----------------------------------------------------------------------------- batch_norm


@pytest.mark.parametrize("shape", [(5, 3), (4, 3, 7), (3, 3, 4, 5), (2, 3, 3, 2, 4)])
@pytest.mark.parametrize("affine", [True, False])
def test_batch_norm_train_matches_torch_nchw(shape, affine):
    x = _randn(*shape, scale=2.0, offset=0.5)
    c = shape[1]
    w, b = (_randn(c), _randn(c)) if affine else (None, None)
    rm, rv = _stats(c)
    trm, trv = _t(rm), _t(rv)
    expected = F.batch_norm(
        _t(x), trm, trv, None if w is None else _t(w), None if b is None else _t(b),
        training=True, momentum=0.3, eps=1e-3,
    )
    y, new_rm, new_rv = batch_norm(x, w, b, rm, rv, train=True, momentum=0.3, eps=1e-3, layout="NCHW")
    np.testing.assert_allclose(y, expected.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(new_rm, trm.numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(new_rv, trv.numpy(), rtol=1e-5, atol=1e-6)
    assert new_rm.dtype == jnp.float32 and new_rv.dtype == jnp.float32


def test_batch_norm_nhwc_matches_torch():
    x = _randn(3, 4, 5, 6)  # NCHW for torch
    w, b = _randn(4), _randn(4)
    rm, rv = _stats(4)
    trm, trv = _t(rm), _t(rv)
    expected = F.batch_norm(_t(x), trm, trv, _t(w), _t(b), training=True)
    y, new_rm, new_rv = batch_norm(_to_nhwc(x), w, b, rm, rv, train=True)
    np.testing.assert_allclose(y, _to_nhwc(expected.numpy()), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(new_rm, trm.numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(new_rv, trv.numpy(), rtol=1e-5, atol=1e-6)


def test_batch_norm_eval_uses_running_stats_and_returns_them_unchanged():
    x = _randn(3, 4, 5, 6)
    w, b = _randn(4), _randn(4)
    rm, rv = _stats(4)
    expected = F.batch_norm(_t(x), _t(rm), _t(rv), _t(w), _t(b), training=False, eps=1e-4)
    rm_j, rv_j = jnp.asarray(rm), jnp.asarray(rv)
    y, new_rm, new_rv = batch_norm(x, w, b, rm_j, rv_j, train=False, eps=1e-4, layout="NCHW")
    np.testing.assert_allclose(y, expected.numpy(), rtol=1e-5, atol=1e-5)
    assert new_rm is rm_j and new_rv is rv_j


def test_batch_norm_hand_computed_momentum_is_weight_of_new_stat():
    # One channel, values 1 and 3: mean 2, biased var 1, unbiased var 2.
    x = jnp.array([[1.0], [3.0]])
    y, rm, rv = batch_norm(x, None, None, jnp.zeros(1), jnp.ones(1), train=True, momentum=0.1, eps=0.0)
    np.testing.assert_allclose(y, [[-1.0], [1.0]], rtol=1e-6)
    np.testing.assert_allclose(rm, [0.9 * 0.0 + 0.1 * 2.0], rtol=1e-6)
    np.testing.assert_allclose(rv, [0.9 * 1.0 + 0.1 * 2.0], rtol=1e-6)


def test_batch_norm_without_running_stats_in_training():
    x = _randn(6, 3)
    y, rm, rv = batch_norm(x, train=True)
    expected = F.batch_norm(_t(x), None, None, training=True)
    np.testing.assert_allclose(y, expected.numpy(), rtol=1e-5, atol=1e-5)
    assert rm is None and rv is None


def test_batch_norm_variance_is_stable_for_a_large_mean():
    # E[x^2] - E[x]^2 in float32 loses everything here; two passes do not.
    x = _randn(64, 2, scale=1.0, offset=1e4)
    y, _, rv = batch_norm(x, None, None, jnp.zeros(2), jnp.zeros(2), train=True, momentum=1.0, eps=0.0)
    x64 = x.astype(np.float64)
    np.testing.assert_allclose(rv, x64.var(axis=0, ddof=1), rtol=1e-3)
    np.testing.assert_allclose(y, (x64 - x64.mean(0)) / x64.std(0), rtol=0, atol=2e-3)


def test_batch_norm_gradients_match_torch():
    x = _randn(4, 3, 2, 2)
    w, b = _randn(3), _randn(3)
    g = _randn(4, 3, 2, 2)
    tx, tw, tb = (_t(a).requires_grad_() for a in (x, w, b))
    (F.batch_norm(tx, None, None, tw, tb, training=True) * _t(g)).sum().backward()

    def loss(x, w, b):
        return jnp.sum(batch_norm(x, w, b, train=True, layout="NCHW")[0] * g)

    gx, gw, gb = jax.grad(loss, argnums=(0, 1, 2))(x, w, b)
    np.testing.assert_allclose(gx, tx.grad.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(gw, tw.grad.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(gb, tb.grad.numpy(), rtol=1e-4, atol=1e-5)


def test_batch_norm_check_grads():
    with jax.enable_x64(True):
        x = jnp.asarray(RNG.normal(size=(3, 2, 2, 2)))
        w, b = jnp.asarray(RNG.normal(size=2)), jnp.asarray(RNG.normal(size=2))
        rm, rv = jnp.zeros(2), jnp.ones(2)
        # jit keeps the many evaluations check_grads makes from dispatching op by op.
        train = jax.jit(lambda x, w, b: batch_norm(x, w, b, rm, rv, train=True)[0])
        evaluate = jax.jit(lambda x, w, b: batch_norm(x, w, b, rm, rv, train=False)[0])
        jax.test_util.check_grads(train, (x, w, b), order=2, modes=("rev",))
        jax.test_util.check_grads(evaluate, (x, w, b), order=1, modes=("rev",))


def test_batch_norm_running_stats_carry_no_gradient():
    x = _randn(4, 3)
    grad = jax.grad(lambda x: jnp.sum(batch_norm(x, None, None, jnp.zeros(3), jnp.ones(3), train=True)[1]))(x)
    np.testing.assert_array_equal(grad, np.zeros_like(x))


def test_batch_norm_jit_equals_eager():
    x = _randn(2, 4, 4, 3)
    w, b = _randn(3), _randn(3)
    rm, rv = _stats(3)
    eager = batch_norm(x, w, b, rm, rv, train=True)
    jitted = jax.jit(functools.partial(batch_norm, train=True))(x, w, b, rm, rv)
    for a, c in zip(eager, jitted):
        np.testing.assert_allclose(a, c, rtol=1e-6, atol=1e-6)


def test_batch_norm_bfloat16_stats_in_float32():
    x = _randn(4, 3, 5, 5, scale=3.0, offset=2.0)
    w, b = _randn(3), _randn(3)
    rm, rv = _stats(3)
    trm, trv = _t(rm), _t(rv)
    expected = F.batch_norm(_t(x), trm, trv, _t(w), _t(b), training=True)
    xb = jnp.asarray(x, jnp.bfloat16)
    y, new_rm, new_rv = batch_norm(
        xb, w.astype(jnp.bfloat16), b.astype(jnp.bfloat16), rm, rv, train=True, layout="NCHW"
    )
    assert y.dtype == jnp.bfloat16 and new_rm.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(y, np.float32), expected.numpy(), rtol=0.05, atol=0.05)
    # Stats of the bf16-rounded input, computed in float32: close to the float32 ones.
    np.testing.assert_allclose(new_rm, trm.numpy(), rtol=1e-2, atol=1e-2)
    np.testing.assert_allclose(new_rv, trv.numpy(), rtol=1e-2, atol=1e-2)


def test_batch_norm_sync_over_vmap_axis_equals_full_batch():
    shards = _randn(3, 2, 4, 4, 5)  # 3 devices x (2, 4, 4, 5) NHWC
    w, b = _randn(5), _randn(5)
    rm, rv = _stats(5)
    full = shards.reshape(6, 4, 4, 5)
    trm, trv = _t(rm), _t(rv)
    expected = F.batch_norm(_t(np.moveaxis(full, -1, 1)), trm, trv, _t(w), _t(b), training=True)
    fn = functools.partial(batch_norm, train=True, axis_name="d")
    y, new_rm, new_rv = jax.vmap(fn, in_axes=(0, None, None, None, None), axis_name="d")(shards, w, b, rm, rv)
    np.testing.assert_allclose(y.reshape(6, 4, 4, 5), _to_nhwc(expected.numpy()), rtol=1e-5, atol=1e-5)
    for d in range(3):
        np.testing.assert_allclose(new_rm[d], trm.numpy(), rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(new_rv[d], trv.numpy(), rtol=1e-5, atol=1e-6)


def test_batch_norm_sync_with_unequal_valid_shards():
    # Shards padded to 4 examples each, holding 4, 1 and 2 valid ones: the statistics must be
    # those of the 7 valid examples, not an average of per-shard statistics.
    shards = _randn(3, 4, 2, 3, scale=2.0, offset=1.0)
    valid = [4, 1, 2]
    mask = np.array([[i < n for i in range(4)] for n in valid])
    w, b = _randn(3), _randn(3)
    rm, rv = _stats(3)
    real = np.concatenate([shards[d, :n] for d, n in enumerate(valid)])
    trm, trv = _t(rm), _t(rv)
    expected = F.batch_norm(_t(np.moveaxis(real, -1, 1)), trm, trv, _t(w), _t(b), training=True)
    fn = functools.partial(batch_norm, train=True, axis_name="d")
    y, new_rm, new_rv = jax.vmap(
        lambda x, m: fn(x, w, b, rm, rv, mask=m), axis_name="d"
    )(shards, mask)
    got = np.concatenate([np.asarray(y[d, :n]) for d, n in enumerate(valid)])
    np.testing.assert_allclose(got, _to_nhwc(expected.numpy()), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(new_rm[1], trm.numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(new_rv[1], trv.numpy(), rtol=1e-5, atol=1e-6)


def test_batch_norm_mask_without_axis_name():
    x = _randn(5, 3)
    mask = np.array([True, False, True, True, False])
    y, rm, rv = batch_norm(x, None, None, np.zeros(3, np.float32), np.ones(3, np.float32), train=True, mask=mask)
    trm, trv = torch.zeros(3), torch.ones(3)
    expected = F.batch_norm(_t(x[mask]), trm, trv, training=True)
    np.testing.assert_allclose(np.asarray(y)[mask], expected.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(rv, trv.numpy(), rtol=1e-5)


def test_batch_norm_sync_under_shard_map_on_four_cpu_devices():
    code = textwrap.dedent(
        """
        import functools, jax, jax.numpy as jnp, numpy as np
        from jax.sharding import NamedSharding, PartitionSpec as P
        from jaxcnn.functional.normalization import batch_norm
        x = np.random.default_rng(1).normal(size=(8, 3, 3, 2)).astype(np.float32)
        mesh = jax.make_mesh((4,), ("d",))
        fn = jax.shard_map(
            lambda x: batch_norm(x, None, None, jnp.zeros(2), jnp.ones(2), train=True, axis_name="d"),
            mesh=mesh, in_specs=P("d"), out_specs=(P("d"), P(), P()))
        y, rm, rv = jax.jit(fn)(jax.device_put(x, NamedSharding(mesh, P("d"))))
        x64 = x.astype(np.float64)
        mean, var = x64.mean((0, 1, 2)), x64.var((0, 1, 2))
        np.testing.assert_allclose(y, (x64 - mean) / np.sqrt(var + 1e-5), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(rm, 0.1 * mean, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(rv, 0.9 + 0.1 * x64.var((0, 1, 2), ddof=1), rtol=1e-5)
        print("ok")
        """
    )
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("ok")


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: batch_norm(np.ones((4,), np.float32), train=True), ValueError, r"batch_norm: x must have rank 2 or 3 or 4 or 5.*\(4,\)"),
        (lambda: batch_norm(np.ones((2, 3), np.int32), train=True), TypeError, r"batch_norm: x must have a floating dtype"),
        (lambda: batch_norm(np.ones((2, 4, 4, 3), np.float32), np.ones(4, np.float32), train=True), ValueError, r"batch_norm: scale must have shape \(3,\).*got shape \(4,\).*\(2, 4, 4, 3\)"),
        (lambda: batch_norm(np.ones((2, 3, 4, 4), np.float32), None, None, np.ones(4, np.float32), np.ones(3, np.float32), train=True, layout="NCHW"), ValueError, r"running_mean must have shape \(3,\).*got shape \(4,\)"),
        (lambda: batch_norm(np.ones((2, 3), np.float32), None, None, np.ones(3, np.float32), np.ones(2, np.float32), train=False), ValueError, r"running_var must have shape \(3,\)"),
        (lambda: batch_norm(np.ones((2, 3), np.float32), train=False), ValueError, r"train=False .* running_mean and running_var are required"),
        (lambda: batch_norm(np.ones((2, 3), np.float32), train=1), TypeError, r"train must be a Python bool"),
        (lambda: batch_norm(np.ones((2, 3), np.float32), train=True, momentum=1.5), ValueError, r"momentum must be in \[0.0, 1.0\]"),
        (lambda: batch_norm(np.ones((2, 3), np.float32), train=True, eps=-1.0), ValueError, r"eps must be in >= 0"),
        (lambda: batch_norm(np.ones((2, 3, 4, 4), np.float32), train=True, layout="HWCN"), ValueError, r"unknown layout='HWCN'"),
        (lambda: batch_norm(np.ones((1, 3), np.float32), train=True), ValueError, r"more than 1 value per channel.*\(1, 3\)"),
        (lambda: batch_norm(np.ones((4, 3), np.float32), train=True, mask=np.ones(3, bool)), ValueError, r"mask must be a boolean array of shape \(4,\).*got bool of shape \(3,\)"),
        (lambda: batch_norm(np.ones((4, 3), np.float32), None, None, np.ones(3, np.float32), np.ones(3, np.float32), train=False, mask=np.ones(4, bool)), ValueError, r"mask .* needs train=True"),
    ],
)
def test_batch_norm_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()


# ----------------------------------------------------------------------------- layer_norm


@pytest.mark.parametrize("normalized_shape", [(6,), (5, 6), (4, 5, 6)])
def test_layer_norm_matches_torch(normalized_shape):
    x = _randn(2, 4, 5, 6, scale=3.0, offset=1.0)
    w, b = _randn(*normalized_shape), _randn(*normalized_shape)
    expected = F.layer_norm(_t(x), normalized_shape, _t(w), _t(b), eps=1e-4)
    y = layer_norm(x, w, b, normalized_shape=normalized_shape, eps=1e-4)
    np.testing.assert_allclose(y, expected.numpy(), rtol=1e-5, atol=1e-5)
    # normalized_shape is inferred from scale
    np.testing.assert_allclose(layer_norm(x, w, b, eps=1e-4), expected.numpy(), rtol=1e-5, atol=1e-5)


def test_layer_norm_defaults_to_last_axis_without_affine():
    x = _randn(3, 7)
    np.testing.assert_allclose(layer_norm(x), F.layer_norm(_t(x), (7,)).numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(layer_norm(x, normalized_shape=7), F.layer_norm(_t(x), (7,)).numpy(), rtol=1e-5, atol=1e-5)


def test_layer_norm_hand_computed():
    y = layer_norm(jnp.array([[1.0, 2.0, 3.0]]), eps=0.0)
    np.testing.assert_allclose(y, [[-np.sqrt(1.5), 0.0, np.sqrt(1.5)]], rtol=1e-6)


def test_layer_norm_bf16_and_vmap_and_jit():
    x = _randn(3, 4, 8)
    expected = F.layer_norm(_t(x), (8,)).numpy()
    yb = layer_norm(jnp.asarray(x, jnp.bfloat16))
    assert yb.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(yb, np.float32), expected, rtol=0.03, atol=0.03)
    np.testing.assert_allclose(jax.vmap(layer_norm)(x), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(jax.jit(layer_norm)(x), layer_norm(x), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: layer_norm(np.ones((2, 3, 4), np.float32), normalized_shape=(3,)), ValueError, r"layer_norm: normalized_shape=\(3,\) must be the trailing sizes of x.*\(2, 3, 4\)"),
        (lambda: layer_norm(np.ones((2, 3), np.float32), normalized_shape=(2, 2, 3)), ValueError, r"normalized_shape=\(2, 2, 3\)"),
        (lambda: layer_norm(np.ones((2, 3), np.float32), np.ones(3, np.float32), np.ones(4, np.float32)), ValueError, r"bias must have shape normalized_shape=\(3,\), got \(4,\)"),
        (lambda: layer_norm(np.ones((2, 3), np.float32), normalized_shape="3"), TypeError, r"normalized_shape must be an int or a tuple"),
        (lambda: layer_norm(np.ones((2, 3), np.int32)), TypeError, r"layer_norm: x must have a floating dtype"),
    ],
)
def test_layer_norm_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()


# ----------------------------------------------------------------------------- group_norm


@pytest.mark.parametrize("shape, groups", [((2, 6, 4, 5), 3), ((2, 6, 4, 5), 1), ((2, 6, 4, 5), 6), ((3, 4, 7), 2), ((2, 4, 2, 3, 2), 2), ((3, 4), 2)])
def test_group_norm_matches_torch_nchw(shape, groups):
    x = _randn(*shape, scale=2.0, offset=-1.0)
    c = shape[1]
    w, b = _randn(c), _randn(c)
    expected = F.group_norm(_t(x), groups, _t(w), _t(b), eps=1e-4)
    np.testing.assert_allclose(group_norm(x, groups, w, b, eps=1e-4, layout="NCHW"), expected.numpy(), rtol=1e-5, atol=1e-5)


def test_group_norm_nhwc_matches_torch():
    x = _randn(2, 6, 3, 4)
    w, b = _randn(6), _randn(6)
    expected = F.group_norm(_t(x), 3, _t(w), _t(b))
    np.testing.assert_allclose(group_norm(_to_nhwc(x), 3, w, b), _to_nhwc(expected.numpy()), rtol=1e-5, atol=1e-5)
    expected = F.group_norm(_t(x), 2)
    np.testing.assert_allclose(group_norm(_to_nhwc(x), 2), _to_nhwc(expected.numpy()), rtol=1e-5, atol=1e-5)


def test_group_norm_check_grads_jit_vmap_bf16():
    with jax.enable_x64(True):
        x = jnp.asarray(RNG.normal(size=(2, 2, 2, 4)))
        w, b = jnp.asarray(RNG.normal(size=4)), jnp.asarray(RNG.normal(size=4))
        fn = jax.jit(lambda x, w, b: group_norm(x, 2, w, b))
        jax.test_util.check_grads(fn, (x, w, b), order=1, modes=("fwd", "rev"))
    x = _randn(3, 4, 4, 6)
    y = group_norm(x, 3)
    np.testing.assert_allclose(jax.jit(functools.partial(group_norm, num_groups=3))(x), y, rtol=1e-6, atol=1e-6)
    # GroupNorm is per example: vmapping over the batch of single-example batches is the same.
    np.testing.assert_allclose(jax.vmap(lambda e: group_norm(e[None], 3)[0])(x), y, rtol=1e-5, atol=1e-5)
    yb = group_norm(jnp.asarray(x, jnp.bfloat16), 3)
    assert yb.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(yb, np.float32), y, rtol=0.03, atol=0.03)


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: group_norm(np.ones((2, 4, 4, 6), np.float32), 4), ValueError, r"group_norm: num_groups=4 must divide the number of channels C=6 \(x shape \(2, 4, 4, 6\), layout NHWC\)"),
        (lambda: group_norm(np.ones((2, 6, 4, 4), np.float32), 4, layout="NCHW"), ValueError, r"num_groups=4 must divide .* C=6"),
        (lambda: group_norm(np.ones((2, 4, 4, 6), np.float32), 0), ValueError, r"num_groups must be a positive int"),
        (lambda: group_norm(np.ones((2, 4, 4, 6), np.float32), 2, np.ones(4, np.float32)), ValueError, r"scale must have shape \(6,\).*got shape \(4,\)"),
        (lambda: group_norm(np.ones((6,), np.float32), 2), ValueError, r"group_norm: x must have rank 2 or 3 or 4 or 5"),
        (lambda: group_norm(np.ones((2, 4, 4, 6), np.float32), 2, layout="CHWN"), ValueError, r"unknown layout='CHWN'"),
    ],
)
def test_group_norm_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()
