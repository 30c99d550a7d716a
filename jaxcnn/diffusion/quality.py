"""Sample quality: the Fréchet distance between Gaussians fitted to classifier features (host-side NumPy).

The Fréchet (FID-style) distance compares the mean and covariance of features of generated
images with those of real ones. The usual Inception-v3 pool features do not fit 28x28
grey digits: Inception expects 299x299 RGB natural images, so digits would have to be
upsampled ~10x and replicated to three channels, and its ImageNet features describe textures
and objects that digits do not have; the numbers would mostly measure the resampling. Here the
features are those of a classifier trained on the same dataset: the input of its last layer
(its penultimate activations; see :func:`classifier_features`). Pick a classifier whose
penultimate width is well below the number of samples, so the covariance is well estimated:
e.g. ``AllConvNet`` (128 features) or ``LeNet5`` (84) rather than ``SimpleCNN`` (1024).
Distances are comparable only between runs that use the same classifier, layer and sample count.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import numpy as np


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    """The symmetric square root of a symmetric positive semi-definite matrix (negative round-off clipped)."""
    values, vectors = np.linalg.eigh(matrix)
    return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """``|mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^(1/2))``: the squared 2-Wasserstein distance of two Gaussians.

    ``mu: (D,)``, ``sigma: (D, D)`` symmetric positive semi-definite. ``tr((S1 S2)^(1/2))`` is
    computed as ``tr((A S2 A)^(1/2))`` with ``A = S1^(1/2)``: ``S1 S2`` is similar to the symmetric
    ``A S2 A``, so two symmetric eigen-decompositions give it exactly, without SciPy's general
    ``sqrtm`` (and without its complex round-off). Float64 throughout; returns a Python float.
    """
    mu1, mu2 = (np.asarray(m, dtype=np.float64) for m in (mu1, mu2))
    sigma1, sigma2 = (np.asarray(s, dtype=np.float64) for s in (sigma1, sigma2))
    if mu1.ndim != 1 or mu1.shape != mu2.shape:
        raise ValueError(f"frechet_distance: mu1 and mu2 must be (D,) of one D, got {mu1.shape} and {mu2.shape}")
    d = mu1.shape[0]
    for name, sigma in (("sigma1", sigma1), ("sigma2", sigma2)):
        if sigma.shape != (d, d):
            raise ValueError(f"frechet_distance: {name} must be (D, D) = ({d}, {d}), got {sigma.shape}")
        if not np.allclose(sigma, sigma.T, rtol=1e-5, atol=1e-8 * max(1.0, np.abs(sigma).max())):
            raise ValueError(f"frechet_distance: {name} must be symmetric")
    root1 = _psd_sqrt((sigma1 + sigma1.T) / 2)
    middle = root1 @ ((sigma2 + sigma2.T) / 2) @ root1
    trace_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0.0, None)).sum()
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_sqrt)


def feature_statistics(features) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``(D,)`` and sample covariance ``(D, D)`` (ddof=1) of ``features: (N, D)``, float64, ``N >= 2``."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or features.shape[0] < 2:
        raise ValueError(f"feature_statistics: features must be (N, D) with N >= 2, got shape {features.shape}")
    return features.mean(axis=0), np.cov(features, rowvar=False).reshape(features.shape[1], features.shape[1])


def classifier_features(model: Any, variables: Any, images, *, batch_size: int = 500) -> np.ndarray:
    """Penultimate features ``(N, D)`` of a Flax classifier: the input of the last layer it calls (its head).

    ``images: (N, H, W, C)`` as the classifier was trained on (for jaxcnn's MNIST runs: floats
    normalised the same way). Runs ``model.apply(variables, x, train=False)`` in batches of
    ``batch_size`` under ``jit`` and intercepts the argument of the model's last direct
    submodule call: for ``SimpleCNN`` the 1024 ReLU activations of ``fc1``, ``LeNet5`` the 84 of
    ``fc2``, ``AllConvNet`` the 128 pooled maps entering ``head``.
    """
    import flax.linen as nn  # the rest of jaxcnn.diffusion imports only jax and numpy

    images = np.asarray(images)
    if images.ndim != 4 or images.shape[0] < 1:
        raise ValueError(f"classifier_features: images must be (N, H, W, C), got shape {images.shape}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"classifier_features: batch_size must be a positive int, got {batch_size!r}")

    @jax.jit
    def features(x):
        last = []

        def interceptor(next_fun: Callable, args, kwargs, context):
            module = context.module
            parent = module.parent
            if (context.method_name == "__call__" and isinstance(parent, nn.Module)
                    and not isinstance(parent.parent, nn.Module)):
                last.append(args[0])  # a direct submodule of the classifier (whose own parent is a scope)
            return next_fun(*args, **kwargs)

        with nn.intercept_methods(interceptor):
            model.apply(variables, x, train=False)
        return last[-1].reshape(x.shape[0], -1)

    out = [np.asarray(features(images[i: i + batch_size])) for i in range(0, images.shape[0], batch_size)]
    return np.concatenate(out, axis=0)
