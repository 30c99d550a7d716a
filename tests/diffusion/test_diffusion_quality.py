"""Fréchet distance against closed forms and SciPy; classifier features against Flax's own intermediates."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

from jaxcnn import diffusion as D
from jaxcnn.models import LeNet5


def random_covariance(rng, d, rank=None):
    a = rng.normal(size=(d, rank or d))
    return a @ a.T / d


def test_one_dimensional_and_diagonal_closed_forms():
    # 1-D: (m1 - m2)^2 + (s1 - s2)^2
    assert D.frechet_distance([1.0], [[4.0]], [-0.5], [[0.25]]) == pytest.approx(1.5**2 + (2.0 - 0.5) ** 2)
    # covariances sharing eigenvectors: |dmu|^2 + sum (sqrt(a_i) - sqrt(b_i))^2
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    a, b = rng.uniform(0.1, 3.0, 6), rng.uniform(0.0, 2.0, 6)
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    got = D.frechet_distance(mu1, q @ np.diag(a) @ q.T, mu2, q @ np.diag(b) @ q.T)
    assert got == pytest.approx(expected, rel=1e-9)


def test_matches_scipy_sqrtm_and_is_a_symmetric_zero_on_the_diagonal():
    rng = np.random.default_rng(1)
    for d, rank in ((5, None), (32, None), (16, 6)):  # rank-deficient like few samples in many dims
        s1, s2 = random_covariance(rng, d, rank), random_covariance(rng, d)
        mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
        root = scipy.linalg.sqrtm(s1 @ s2).real
        expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(root)
        got = D.frechet_distance(mu1, s1, mu2, s2)
        assert got == pytest.approx(expected, rel=1e-6, abs=1e-8)
        assert got == pytest.approx(D.frechet_distance(mu2, s2, mu1, s1), rel=1e-7)
        assert abs(D.frechet_distance(mu1, s1, mu1, s1)) < 1e-6  # sqrt of ~1e-16 round-off eigenvalues


def test_feature_statistics_and_distance_of_samples():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(4000, 3)) * [1.0, 2.0, 0.5] + [1.0, 0.0, -1.0]
    mu, sigma = D.feature_statistics(x)
    np.testing.assert_allclose(mu, x.mean(0))
    np.testing.assert_allclose(sigma, np.cov(x.T))
    # a shifted copy: the distance is the squared shift
    assert D.frechet_distance(mu, sigma, *D.feature_statistics(x + [3.0, 0.0, 0.0])) == pytest.approx(9.0, rel=1e-9)


def test_classifier_features_are_the_input_of_the_head():
    model = LeNet5(num_classes=10)
    x = jax.random.normal(jax.random.PRNGKey(0), (7, 28, 28, 1))
    variables = jax.jit(lambda k: model.init(k, x, train=False))(jax.random.PRNGKey(1))
    feats = D.classifier_features(model, variables, np.asarray(x), batch_size=4)  # two batches, one partial
    assert feats.shape == (7, 84)
    _, state = jax.jit(lambda v, x: model.apply(v, x, train=False, capture_intermediates=True))(variables, x)
    fc2 = state["intermediates"]["fc2"]["__call__"][0]
    np.testing.assert_allclose(feats, jnp.maximum(fc2, 0.0), rtol=1e-5, atol=1e-5)  # LeNet5: relu(fc2) feeds fc3


@pytest.mark.parametrize(
    "args, match",
    [
        (([0.0, 1.0], np.eye(2), [0.0], np.eye(1)), "mu1 and mu2"),
        (([0.0, 1.0], np.eye(3), [0.0, 1.0], np.eye(2)), "sigma1 must be"),
        (([0.0, 1.0], np.eye(2), [0.0, 1.0], [[1.0, 0.5], [0.0, 1.0]]), "sigma2 must be symmetric"),
    ],
)
def test_bad_input_names_the_argument(args, match):
    with pytest.raises(ValueError, match=match):
        D.frechet_distance(*args)
    with pytest.raises(ValueError, match="features must be"):
        D.feature_statistics(np.ones((1, 3)))
