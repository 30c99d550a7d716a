"""Schedules, forward process, posterior and objective against closed forms written here in NumPy."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcnn import diffusion as D

T = 1000


@pytest.fixture(scope="module")
def linear():
    return D.make_schedule("linear", T)


@pytest.fixture(scope="module")
def cosine():
    return D.make_schedule("cosine", T)


def test_linear_schedule_matches_ddpm_closed_form(linear):
    betas = [1e-4 + (0.02 - 1e-4) * i / (T - 1) for i in range(T)]
    abar, running = [], 1.0
    for b in betas:
        running *= 1.0 - b
        abar.append(running)
    np.testing.assert_allclose(linear.betas, betas, rtol=1e-6)
    np.testing.assert_allclose(linear.alphas_cumprod, abar, rtol=1e-5)
    np.testing.assert_allclose(linear.alphas_cumprod_prev, [1.0] + abar[:-1], rtol=1e-5)
    assert linear.num_timesteps == T
    assert abar[-1] < 1e-4  # the last level is (almost) pure noise


def test_cosine_schedule_matches_nichol_dhariwal_closed_form(cosine):
    s = 0.008
    f = lambda t: math.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2  # noqa: E731
    abar = np.array([f(t + 1) / f(0) for t in range(T)])
    betas = np.asarray(cosine.betas, dtype=np.float64)
    unclipped = betas < 0.999
    assert unclipped[:-1].all() and not unclipped[-1]  # only the last beta reaches the clip
    assert betas[-1] == pytest.approx(0.999, rel=1e-6)
    np.testing.assert_allclose(np.asarray(cosine.alphas_cumprod)[:-1], abar[:-1], rtol=2e-5, atol=1e-9)
    # beta_t = 1 - abar_t / abar_{t-1} away from the clip
    np.testing.assert_allclose(betas[1:-1], 1.0 - abar[1:-1] / abar[:-2], rtol=1e-4)


def test_posterior_matches_ddpm_eq7_and_gaussian_conditioning(linear, cosine):
    rng = np.random.default_rng(0)
    t = np.array([0, 1, 2, 10, 500, 998, 999], dtype=np.int32)
    x0 = rng.normal(size=(len(t), 3)).astype(np.float32)
    xt = rng.normal(size=(len(t), 3)).astype(np.float32)
    for schedule, betas_np in ((linear, D.linear_betas(T)), (cosine, D.cosine_betas(T))):
        mean, var = D.q_posterior(schedule, x0, xt, t)
        assert mean.shape == (len(t), 3) and var.shape == (len(t), 1)
        for i, ti in enumerate(t):
            alphas = 1.0 - betas_np[: ti + 1]
            abar, abar_prev, beta = np.prod(alphas), np.prod(alphas[:-1]), betas_np[ti]
            # DDPM eq. 7
            mu7 = np.sqrt(abar_prev) * beta / (1 - abar) * x0[i] + np.sqrt(1 - beta) * (1 - abar_prev) / (1 - abar) * xt[i]
            var7 = (1 - abar_prev) / (1 - abar) * beta
            np.testing.assert_allclose(mean[i], mu7, rtol=1e-4, atol=1e-5)
            np.testing.assert_allclose(var[i, 0], var7, rtol=1e-4, atol=1e-10)
            if ti > 0:  # Bayes: q(x_{t-1}|x0) q(x_t|x_{t-1}), product of two Gaussians in x_{t-1}
                precision = (1 - beta) / beta + 1 / (1 - abar_prev)
                mu_bayes = (np.sqrt(1 - beta) * xt[i] / beta + np.sqrt(abar_prev) * x0[i] / (1 - abar_prev)) / precision
                np.testing.assert_allclose(mean[i], mu_bayes, rtol=1e-4, atol=1e-5)
                np.testing.assert_allclose(var[i, 0], 1 / precision, rtol=1e-4)


def test_q_sample_statistics(cosine):
    t = np.array([0, 100, 400, 999], dtype=np.int32)
    x0 = jnp.asarray(np.array([[1.0], [-0.5], [2.0], [0.3]], dtype=np.float32) * np.ones((1, 40000), np.float32))
    noise = jax.random.normal(jax.random.PRNGKey(0), x0.shape)
    xt = np.asarray(D.q_sample(cosine, x0, t, noise), dtype=np.float64)
    abar = np.asarray(D.cosine_betas(T))
    abar = np.cumprod(1 - abar)[t]
    n = x0.shape[1]
    mean_expected = np.sqrt(abar) * np.asarray(x0)[:, 0]
    var_expected = 1 - abar
    assert np.all(np.abs(xt.mean(axis=1) - mean_expected) < 5 * np.sqrt(var_expected / n) + 1e-6)
    assert np.all(np.abs(xt.var(axis=1) - var_expected) < 5 * var_expected * np.sqrt(2 / n) + 1e-7)


def test_v_and_epsilon_conversions_invert_each_other(linear):
    rng = np.random.default_rng(1)
    x0 = rng.normal(size=(5, 4, 4, 1)).astype(np.float32)
    noise = rng.normal(size=x0.shape).astype(np.float32)
    t = np.array([0, 3, 200, 700, 999], dtype=np.int32)
    xt = D.q_sample(linear, x0, t, noise)
    abar = np.cumprod(1 - D.linear_betas(T))[t].reshape(-1, 1, 1, 1)
    v = D.v_target(linear, x0, t, noise)
    np.testing.assert_allclose(v, np.sqrt(abar) * noise - np.sqrt(1 - abar) * x0, rtol=1e-4, atol=1e-5)
    eps, x0_hat = D.epsilon_and_x0(linear, xt, t, v, "v")
    np.testing.assert_allclose(eps, noise, atol=2e-4)
    np.testing.assert_allclose(x0_hat, x0, atol=2e-4)
    eps, x0_hat = D.epsilon_and_x0(linear, xt[1:], t[1:], noise[1:], "epsilon")
    np.testing.assert_allclose(x0_hat, x0[1:], atol=5e-3)  # dividing by sqrt(abar) ~ 0.006 at t = 999


def test_loss_of_exact_and_zero_predictors(linear):
    """An exact predictor (data = a point mass mu) has zero loss; predicting 0 costs E[target^2]."""
    mu = 0.6
    x0 = jnp.full((4096, 2), mu, jnp.float32)
    key = jax.random.PRNGKey(3)

    def exact(params, xt, t, labels):
        abar = linear.alphas_cumprod[t][:, None]
        eps = (xt - jnp.sqrt(abar) * mu) / jnp.sqrt(1 - abar)
        return eps if params == "epsilon" else jnp.sqrt(abar) * eps - jnp.sqrt(1 - abar) * mu

    zero = lambda params, xt, t, labels: jnp.zeros_like(xt)  # noqa: E731

    @jax.jit
    def losses(key):
        return (
            [D.diffusion_loss(exact, p, key, x0, linear, prediction=p) for p in D.PREDICTIONS],
            D.diffusion_loss(zero, None, key, x0, linear),
            D.diffusion_loss(zero, None, key, x0, linear, prediction="v", reduction="none"),
        )

    exact_losses, loss_eps, per_example = losses(key)
    assert max(float(v) for v in exact_losses) < 1e-6
    assert abs(float(loss_eps) - 1.0) < 5 * math.sqrt(2 / x0.size)
    # v target: E[v^2] = abar + (1 - abar) mu^2, averaged over uniform t
    abar = np.cumprod(1 - D.linear_betas(T))
    expected = np.mean(abar + (1 - abar) * mu**2)
    assert per_example.shape == (4096,)
    assert abs(float(per_example.mean()) - expected) < 0.03


def test_label_dropout_rate_and_null_label(linear):
    k, p, n = 10, 0.25, 8000
    labels = jnp.asarray(np.arange(n) % k, dtype=jnp.int32)

    def flags_null(params, xt, t, y):  # output 100 where the label is the null label, else 0
        return jnp.zeros_like(xt) + 100.0 * (y == k).astype(xt.dtype)[:, None]

    x0 = jnp.zeros((n, 1), jnp.float32)
    per_example = jax.jit(lambda key: D.diffusion_loss(flags_null, None, key, x0, linear, labels=labels,
                                                       num_classes=k, label_dropout=p, reduction="none"))(
        jax.random.PRNGKey(0))
    dropped = np.asarray(per_example) > 1000
    assert abs(dropped.mean() - p) < 5 * math.sqrt(p * (1 - p) / n)
    none = jax.jit(lambda key: D.diffusion_loss(flags_null, None, key, x0, linear, labels=labels, num_classes=k,
                                                reduction="none"))(jax.random.PRNGKey(0))
    assert float(none.max()) < 100


def test_loss_jits_and_differentiates(linear):
    def apply_fn(w, xt, t, labels):
        return w * xt

    x0 = jnp.ones((8, 3, 3, 1), jnp.float32)
    loss, grad = jax.jit(jax.value_and_grad(lambda w, k: D.diffusion_loss(apply_fn, w, k, x0, linear)))(
        jnp.float32(0.5), jax.random.PRNGKey(0))
    assert np.isfinite(float(loss)) and np.isfinite(float(grad))


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda s: D.make_schedule("quadratic", 10), "schedule="),
        (lambda s: D.make_schedule("linear", 0), "num_timesteps"),
        (lambda s: D.q_sample(s, np.zeros((2, 3), np.float32), np.zeros(2, np.int32), np.zeros((2, 4), np.float32)),
         "noise must have x0's shape"),
        (lambda s: D.q_sample(s, np.zeros((2, 3), np.float32), np.zeros(3, np.int32), np.zeros((2, 3), np.float32)),
         r"t must be \(N,\)"),
        (lambda s: D.diffusion_loss(None, None, jax.random.PRNGKey(0), np.zeros((2, 3), np.float32), s,
                                    prediction="x0"), "prediction="),
        (lambda s: D.diffusion_loss(None, None, jax.random.PRNGKey(0), np.zeros((2, 3), np.float32), s,
                                    labels=np.array([0, 10]), num_classes=10), r"labels must lie in \[0, 9\]"),
        (lambda s: D.diffusion_loss(None, None, jax.random.PRNGKey(0), np.zeros((2, 3), np.float32), s,
                                    labels=np.array([0, 1])), "num_classes must be a positive int"),
        (lambda s: D.diffusion_loss(None, None, jax.random.PRNGKey(0), np.zeros((2, 3), np.float32), s,
                                    label_dropout=0.1), "label_dropout=0.1 needs labels"),
    ],
)
def test_bad_input_names_the_argument(linear, call, match):
    with pytest.raises(ValueError, match=match):
        call(linear)


def test_wrong_types_raise_type_error(linear):
    with pytest.raises(TypeError, match="t must be integer"):
        D.q_sample(linear, np.zeros((2, 3), np.float32), np.zeros(2, np.float32), np.zeros((2, 3), np.float32))
    with pytest.raises(TypeError, match="schedule must be a NoiseSchedule"):
        D.q_sample("linear", np.zeros((1, 1), np.float32), np.zeros(1, np.int32), np.zeros((1, 1), np.float32))
    with pytest.raises(TypeError, match="labels must be integer"):
        D.diffusion_loss(None, None, jax.random.PRNGKey(0), np.zeros((2, 3), np.float32), linear,
                         labels=np.array([0.0, 1.0]), num_classes=10)
