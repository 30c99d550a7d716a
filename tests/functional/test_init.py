"""Initialisers against torch.nn.init: its computed fans, gains and bounds, and its samples' moments."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import jaxcnn.functional as F
from jaxcnn.functional import init

# A PyTorch conv weight (O, I, kh, kw) and the same kernel in NHWC order (kh, kw, I, O).
TORCH_SHAPE = (96, 64, 3, 5)
NHWC_SHAPE = (3, 5, 64, 96)
N = math.prod(TORCH_SHAPE)  # 92,160 samples
KEY = jax.random.key(0)


def _torch_sample(fill, shape=TORCH_SHAPE):
    torch.manual_seed(0)
    w = torch.empty(shape)
    fill(w)
    return w.numpy()


def _moments_agree(ours, theirs, std):
    """Mean within 5 standard errors of 0, and both standard deviations within 2% of ``std``."""
    assert abs(ours.mean()) < 5 * std / math.sqrt(ours.size)
    assert abs(ours.std() / std - 1) < 0.02 and abs(theirs.std() / std - 1) < 0.02, (ours.std(), theirs.std(), std)


def test_fans_match_torch():
    fan_in, fan_out = torch.nn.init._calculate_fan_in_and_fan_out(torch.empty(TORCH_SHAPE))
    assert init.compute_fans(TORCH_SHAPE, "NCHW") == (fan_in, fan_out) == (64 * 15, 96 * 15)
    assert init.compute_fans(NHWC_SHAPE) == (fan_in, fan_out)
    linear = torch.nn.init._calculate_fan_in_and_fan_out(torch.empty(10, 7))  # nn.Linear(7, 10).weight
    assert init.compute_fans((10, 7), "NCHW") == linear and init.compute_fans((7, 10)) == linear
    grouped = torch.nn.Conv2d(8, 6, 3, groups=2).weight  # (6, 4, 3, 3)
    assert init.compute_fans(tuple(grouped.shape), "NCHW") == torch.nn.init._calculate_fan_in_and_fan_out(grouped)
    for name, param in [("linear", None), ("tanh", None), ("relu", None), ("selu", None), ("leaky_relu", None),
                        ("leaky_relu", 0.2), ("leaky_relu", math.sqrt(5)), ("conv2d", None)]:
        assert init.calculate_gain(name, param) == pytest.approx(torch.nn.init.calculate_gain(name, param))


@pytest.mark.parametrize("mode", ["fan_in", "fan_out"])
@pytest.mark.parametrize("nonlinearity, a", [("relu", 0.0), ("leaky_relu", 0.1)])
def test_kaiming_matches_torch(mode, nonlinearity, a):
    fan = init.compute_fans(NHWC_SHAPE)[0 if mode == "fan_in" else 1]
    std = torch.nn.init.calculate_gain(nonlinearity, a) / math.sqrt(fan)
    bound = math.sqrt(3.0) * std
    uniform = np.asarray(init.kaiming_uniform(KEY, NHWC_SHAPE, a=a, mode=mode, nonlinearity=nonlinearity))
    theirs = _torch_sample(lambda w: torch.nn.init.kaiming_uniform_(w, a=a, mode=mode, nonlinearity=nonlinearity))
    assert uniform.shape == NHWC_SHAPE and uniform.dtype == np.float32
    assert np.abs(uniform).max() <= bound and np.abs(theirs).max() <= bound
    assert np.abs(uniform).max() > 0.999 * bound  # the whole interval is used
    _moments_agree(uniform, theirs, std)
    normal = np.asarray(init.he_normal(KEY, TORCH_SHAPE, a=a, mode=mode, nonlinearity=nonlinearity, layout="NCHW"))
    theirs = _torch_sample(lambda w: torch.nn.init.kaiming_normal_(w, a=a, mode=mode, nonlinearity=nonlinearity))
    _moments_agree(normal, theirs, std)
    # Fourth moment of a normal: 3 std**4 (a uniform's is 1.8 std**4).
    assert abs(np.mean(normal**4) / std**4 - 3) < 0.15


def test_xavier_matches_torch():
    fan_in, fan_out = torch.nn.init._calculate_fan_in_and_fan_out(torch.empty(TORCH_SHAPE))
    gain = torch.nn.init.calculate_gain("tanh")
    bound = gain * math.sqrt(6.0 / (fan_in + fan_out))
    ours = np.asarray(init.glorot_uniform(KEY, NHWC_SHAPE, gain=gain))
    theirs = _torch_sample(lambda w: torch.nn.init.xavier_uniform_(w, gain=gain))
    assert np.abs(ours).max() <= bound and np.abs(ours).max() > 0.999 * bound
    _moments_agree(ours, theirs, bound / math.sqrt(3.0))
    std = gain * math.sqrt(2.0 / (fan_in + fan_out))
    ours = np.asarray(init.xavier_normal(KEY, TORCH_SHAPE, gain=gain, layout="NCHW"))
    theirs = _torch_sample(lambda w: torch.nn.init.xavier_normal_(w, gain=gain))
    _moments_agree(ours, theirs, std)


@pytest.mark.parametrize("module", [torch.nn.Conv2d(64, 96, (3, 5)), torch.nn.Linear(300, 200)])
def test_torch_default_init_matches_torch_modules(module):
    torch_shape = tuple(module.weight.shape)
    fan_in = init.compute_fans(torch_shape, "NCHW")[0]
    bound = 1.0 / math.sqrt(fan_in)
    samples = []
    for seed in range(4 if isinstance(module, torch.nn.Linear) else 1):  # enough samples of the Linear
        torch.manual_seed(seed)
        module.reset_parameters()
        samples.append(module.weight.detach().numpy().copy())
    theirs = np.concatenate([s.ravel() for s in samples])
    # Our NHWC kernel of the same layer: (kh, kw, I, O) or (in, out).
    nhwc = tuple(np.moveaxis(np.empty(torch_shape), (0, 1), (-1, -2)).shape)
    ours = np.asarray(init.torch_default_kernel(KEY, nhwc[:-1] + (len(samples) * nhwc[-1],)))  # fan_in kept
    assert init.compute_fans(nhwc)[0] == fan_in
    assert np.abs(ours).max() <= bound and np.abs(ours).max() > 0.99 * bound and np.abs(theirs).max() <= bound
    _moments_agree(ours.ravel(), theirs, bound / math.sqrt(3.0))
    bias = np.asarray(init.torch_default_bias(KEY, (20_000,), fan_in=fan_in))
    assert np.abs(bias).max() <= bound and np.abs(module.bias.detach().numpy()).max() <= bound
    assert np.abs(bias).max() > 0.999 * bound


def test_pure_functions_of_key_and_shape():
    first = init.kaiming_normal(KEY, (3, 3, 4, 8))
    np.testing.assert_array_equal(first, init.kaiming_normal(KEY, (3, 3, 4, 8)))
    assert not np.array_equal(first, init.kaiming_normal(jax.random.key(1), (3, 3, 4, 8)))
    jitted = jax.jit(init.xavier_uniform, static_argnums=(1, 2))(KEY, (5, 7), jnp.bfloat16)
    assert jitted.dtype == jnp.bfloat16 and jitted.shape == (5, 7)
    assert F.init.he_uniform is init.kaiming_uniform
    with pytest.raises(ValueError, match=r"compute_fans: fans need a kernel of rank >= 2 .* got shape \(8,\)"):
        init.kaiming_uniform(KEY, (8,))
    with pytest.raises(ValueError, match=r"kaiming_normal: mode='fan_avg' must be one of"):
        init.kaiming_normal(KEY, (3, 3), mode="fan_avg")
    with pytest.raises(ValueError, match=r"unknown nonlinearity='swish'"):
        init.kaiming_uniform(KEY, (3, 3), nonlinearity="swish")
    with pytest.raises(TypeError, match=r"xavier_normal: dtype must be a floating dtype, got int32"):
        init.xavier_normal(KEY, (3, 3), jnp.int32)
