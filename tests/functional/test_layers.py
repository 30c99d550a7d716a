"""dense, flatten, dropout and the activations against PyTorch and hand-computed values."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from jaxcnn.functional.activations import gelu, leaky_relu, log_softmax, relu, sigmoid, softmax, tanh
from jaxcnn.functional.layers import dense, dropout, flatten

RNG = np.random.default_rng(0)


def _randn(*shape):
    return RNG.normal(size=shape).astype(np.float32)


def _t(a):
    return torch.tensor(np.asarray(a))


# ----------------------------------------------------------------------------- dense


@pytest.mark.parametrize("shape", [(5,), (4, 5), (2, 3, 5)])
def test_dense_matches_torch_linear_with_transposed_weight(shape):
    x = _randn(*shape)
    weight, bias = _randn(3, 5), _randn(3)  # torch Linear: (out, in)
    expected = F.linear(_t(x), _t(weight), _t(bias)).numpy()
    np.testing.assert_allclose(dense(x, weight.T, bias), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dense(x, weight.T), F.linear(_t(x), _t(weight)).numpy(), rtol=1e-5, atol=1e-5)


def test_dense_hand_computed_jit_vmap_bf16():
    x = jnp.array([[1.0, 2.0]])
    kernel = jnp.array([[1.0, 0.0, -1.0], [2.0, 1.0, 0.5]])
    np.testing.assert_allclose(dense(x, kernel, jnp.array([0.0, 1.0, 2.0])), [[5.0, 3.0, 2.0]])
    xs, k, b = _randn(4, 6), _randn(6, 2), _randn(2)
    np.testing.assert_allclose(jax.jit(dense)(xs, k, b), dense(xs, k, b), rtol=1e-6)
    np.testing.assert_allclose(jax.vmap(dense, in_axes=(0, None, None))(xs, k, b), dense(xs, k, b), rtol=1e-6)
    yb = dense(jnp.asarray(xs, jnp.bfloat16), jnp.asarray(k, jnp.bfloat16), b)
    assert yb.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(yb, np.float32), xs @ k + b, rtol=0.05, atol=0.05)


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: dense(np.ones((2, 4), np.float32), np.ones((3, 5), np.float32)), ValueError, r"dense: x of shape \(2, 4\) has 4 input features but kernel of shape \(3, 5\).*kernel = weight.T"),
        (lambda: dense(np.ones((2, 4), np.float32), np.ones((4,), np.float32)), ValueError, r"dense: kernel must have rank 2"),
        (lambda: dense(np.ones((2, 4), np.float32), np.ones((4, 3), np.float16)), TypeError, r"dense: x has dtype float32 but kernel has dtype float16"),
        (lambda: dense(np.ones((2, 4), np.float32), np.ones((4, 3), np.float32), np.ones(4, np.float32)), ValueError, r"dense: bias must have shape \(3,\).*got \(4,\)"),
        (lambda: dense(np.ones((2, 4), np.int32), np.ones((4, 3), np.int32)), TypeError, r"dense: x must have a floating dtype"),
        (lambda: dense("x", np.ones((4, 3), np.float32)), TypeError, r"dense: x must be an array"),
    ],
)
def test_dense_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()


# ----------------------------------------------------------------------------- flatten


@pytest.mark.parametrize("start, end", [(1, -1), (0, -1), (1, 2), (2, 3), (-2, -1), (3, 3)])
def test_flatten_matches_torch(start, end):
    x = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)
    np.testing.assert_array_equal(flatten(x, start, end), torch.flatten(_t(x), start, end).numpy())


def test_flatten_default_and_scalar():
    assert flatten(jnp.zeros((2, 4, 4, 3))).shape == (2, 48)
    assert flatten(jnp.zeros(())).shape == (1,)


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: flatten(np.ones((2, 3)), 2), ValueError, r"flatten: start_axis=2 is out of range for x of shape \(2, 3\)"),
        (lambda: flatten(np.ones((2, 3, 4)), 2, 1), ValueError, r"start_axis=2 comes after end_axis=1"),
        (lambda: flatten(np.ones((2, 3)), 1.0), TypeError, r"start_axis must be an int"),
    ],
)
def test_flatten_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()


# ----------------------------------------------------------------------------- dropout


def test_dropout_drops_rate_fraction_and_scales_the_rest():
    x = jnp.full((200, 500), 2.0)
    y = np.asarray(dropout(jax.random.key(0), x, 0.3))
    dropped = y == 0
    assert abs(dropped.mean() - 0.3) < 0.01
    np.testing.assert_allclose(y[~dropped], 2.0 / 0.7, rtol=1e-6)


def test_dropout_identity_cases_and_rate_one():
    x = _randn(3, 4)
    np.testing.assert_array_equal(dropout(None, x, 0.5, deterministic=True), x)
    np.testing.assert_array_equal(dropout(None, x, 0.0), x)
    np.testing.assert_array_equal(dropout(jax.random.key(1), x, 1.0), np.zeros_like(x))


def test_dropout_keys_jit_traced_rate_bf16():
    x = jnp.ones((8, 16))
    key = jax.random.key(3)
    a = dropout(key, x, 0.5)
    np.testing.assert_array_equal(a, dropout(key, x, 0.5))
    assert not np.array_equal(a, dropout(jax.random.key(4), x, 0.5))
    np.testing.assert_array_equal(jax.jit(lambda k, x: dropout(k, x, 0.5))(key, x), a)
    # A traced rate uses the same random bits; rate 1 still gives zeros.
    traced = jax.jit(lambda k, x, r: dropout(k, x, r))
    np.testing.assert_allclose(traced(key, x, 0.5), a, rtol=1e-6)
    np.testing.assert_array_equal(traced(key, x, 1.0), np.zeros((8, 16)))
    # The raw uint32 key form works too.
    assert dropout(jax.random.PRNGKey(0), x, 0.5).shape == (8, 16)
    yb = dropout(key, jnp.ones((8, 16), jnp.bfloat16), 0.5)
    assert yb.dtype == jnp.bfloat16
    np.testing.assert_array_equal(np.asarray(yb, np.float32), a)


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: dropout(jax.random.key(0), np.ones(3, np.float32), 1.5), ValueError, r"dropout: rate is the drop probability and must be in \[0, 1\], got 1.5"),
        (lambda: dropout(jax.random.key(0), np.ones(3, np.float32), -0.1), ValueError, r"must be in \[0, 1\], got -0.1"),
        (lambda: dropout(None, np.ones(3, np.float32), 0.5), TypeError, r"dropout: a random key is required"),
        (lambda: dropout(jax.random.key(0), np.ones(3, np.int32), 0.5), TypeError, r"dropout: x must have a floating dtype"),
        (lambda: dropout(jax.random.key(0), np.ones(3, np.float32), "0.5"), TypeError, r"dropout: rate must be a number"),
        (lambda: dropout(jax.random.key(0), np.ones(3, np.float32), 0.5, deterministic=None), TypeError, r"deterministic must be a Python bool"),
    ],
)
def test_dropout_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()


# ----------------------------------------------------------------------------- activations


X = np.array([[-3.0, -1.0, -0.5, 0.0, 0.25, 1.0, 4.0]], np.float32)


@pytest.mark.parametrize(
    "ours, theirs",
    [
        (relu, F.relu),
        (leaky_relu, F.leaky_relu),
        (lambda x: leaky_relu(x, 0.2), lambda x: F.leaky_relu(x, 0.2)),
        (gelu, F.gelu),
        (lambda x: gelu(x, approximate=True), lambda x: F.gelu(x, approximate="tanh")),
        (sigmoid, torch.sigmoid),
        (tanh, torch.tanh),
        (softmax, lambda x: F.softmax(x, dim=-1)),
        (log_softmax, lambda x: F.log_softmax(x, dim=-1)),
        (lambda x: softmax(x, axis=0), lambda x: F.softmax(x, dim=0)),
    ],
)
def test_activations_match_torch(ours, theirs):
    x = np.concatenate([X, _randn(3, 7) * 3])
    np.testing.assert_allclose(ours(x), theirs(_t(x)).numpy(), rtol=1e-6, atol=1e-6)
    yb = ours(jnp.asarray(x, jnp.bfloat16))
    assert yb.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(yb, np.float32), theirs(_t(x)).numpy(), rtol=0.02, atol=0.02)


def test_activation_hand_values_and_gradients():
    np.testing.assert_allclose(gelu(jnp.array([1.0])), [0.8413447], rtol=1e-6)  # 1 * Phi(1)
    np.testing.assert_allclose(leaky_relu(jnp.array([-2.0, 3.0])), [-0.02, 3.0], rtol=1e-6)
    np.testing.assert_allclose(softmax(jnp.array([0.0, jnp.log(3.0)])), [0.25, 0.75], rtol=1e-6)
    # PyTorch's convention: relu'(0) = 0.
    np.testing.assert_array_equal(jax.grad(lambda x: jnp.sum(relu(x)))(jnp.array([-1.0, 0.0, 1.0])), [0.0, 0.0, 1.0])
    np.testing.assert_array_equal(relu(jnp.array([-2, 3])), [0, 3])
    # log_softmax stays finite where a naive log(softmax) underflows.
    assert np.isfinite(np.asarray(log_softmax(jnp.array([0.0, 1000.0])))).all()
    x = _randn(4, 5)
    np.testing.assert_allclose(jax.vmap(softmax)(x), softmax(x), rtol=1e-6)
    np.testing.assert_allclose(jax.jit(gelu)(x), gelu(x), rtol=1e-6)


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: softmax(np.ones((2, 3), np.float32), axis=2), ValueError, r"softmax: axis=2 is out of range for x of shape \(2, 3\)"),
        (lambda: log_softmax(np.ones((2, 3), np.float32), axis=1.0), TypeError, r"log_softmax: axis must be an int"),
        (lambda: gelu(np.ones(3, np.int32)), TypeError, r"gelu: x must have a floating dtype"),
        (lambda: gelu(np.ones(3, np.float32), approximate="tanh"), TypeError, r"gelu: approximate must be a bool"),
        (lambda: sigmoid(np.ones(3, np.int32)), TypeError, r"sigmoid: x must have a floating dtype"),
        (lambda: leaky_relu(np.ones(3, np.float32), None), TypeError, r"leaky_relu: negative_slope must be a Python number"),
        (lambda: relu(np.ones(3, bool)), TypeError, r"relu: x must have a numeric dtype"),
        (lambda: tanh(None), TypeError, r"tanh: x must be an array"),
    ],
)
def test_activation_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()
