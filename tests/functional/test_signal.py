"""convolve2d / correlate2d against scipy.signal, and the classic hand-computed example."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.signal

from jaxcnn.functional import conv
from jaxcnn.functional.signal import convolve2d, correlate2d

IMAGE = np.array(
    [
        [1, 1, 1, 0, 0],
        [0, 1, 1, 1, 0],
        [0, 0, 1, 1, 1],
        [0, 0, 1, 1, 0],
        [0, 1, 1, 0, 0],
    ]
)
FILTER = np.array([[1, 0, 1], [0, 1, 0], [1, 0, 1]])
ANSWER = np.array([[4, 3, 4], [2, 4, 3], [2, 3, 4]])

# (image shape, kernel shape): odd, even, mixed, kernel larger than the image, 1x1.
SHAPES = [
    ((6, 7), (3, 3)),
    ((6, 7), (2, 4)),
    ((5, 5), (4, 3)),
    ((3, 4), (5, 6)),
    ((4, 4), (1, 1)),
    ((2, 3), (2, 3)),
    ((1, 5), (1, 2)),
]


@pytest.mark.parametrize("mode", ["full", "same", "valid"])
@pytest.mark.parametrize("image_shape,kernel_shape", SHAPES)
@pytest.mark.parametrize(
    "ours,theirs",
    [(convolve2d, scipy.signal.convolve2d), (correlate2d, scipy.signal.correlate2d)],
    ids=["convolve2d", "correlate2d"],
)
def test_matches_scipy(ours, theirs, mode, image_shape, kernel_shape):
    rng = np.random.default_rng(hash((image_shape, kernel_shape)) % 2**32)
    x = rng.normal(size=image_shape).astype(np.float32)
    h = rng.normal(size=kernel_shape).astype(np.float32)
    expected = theirs(x.astype(np.float64), h.astype(np.float64), mode=mode)
    got = ours(x, h, mode=mode)
    assert got.shape == expected.shape
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mode", ["full", "same", "valid"])
def test_integer_inputs_exact_and_float32(mode):
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, size=(7, 6)).astype(np.uint8)
    h = rng.integers(-3, 4, size=(4, 3)).astype(np.int32)
    for ours, theirs in [(convolve2d, scipy.signal.convolve2d), (correlate2d, scipy.signal.correlate2d)]:
        got = ours(x, h, mode)
        assert got.dtype == jnp.float32
        np.testing.assert_array_equal(np.asarray(got), theirs(x.astype(np.int64), h.astype(np.int64), mode))


def test_lecture_example_correlate2d_and_conv():
    got = correlate2d(IMAGE, FILTER, "valid")
    np.testing.assert_array_equal(np.asarray(got), ANSWER)
    # The same numbers straight from the network op: a CNN "convolution" is a correlation.
    x = jnp.asarray(IMAGE, jnp.float32)[None, :, :, None]
    k = jnp.asarray(FILTER, jnp.float32)[:, :, None, None]
    np.testing.assert_array_equal(np.asarray(conv(x, k)[0, :, :, 0]), ANSWER)
    # This filter is symmetric under the flip, so the true convolution agrees too.
    np.testing.assert_array_equal(np.asarray(convolve2d(IMAGE, FILTER, "valid")), ANSWER)


def test_convolution_flips_the_kernel():
    # An impulse image reproduces the kernel under convolution and the flipped kernel under
    # correlation ('full' mode, impulse at the top-left corner).
    h = np.arange(6, dtype=np.float32).reshape(2, 3)
    impulse = np.zeros((4, 4), np.float32)
    impulse[0, 0] = 1.0
    np.testing.assert_array_equal(np.asarray(convolve2d(impulse, h))[:2, :3], h)
    np.testing.assert_array_equal(np.asarray(correlate2d(impulse, h))[:2, :3], h[::-1, ::-1])
    np.testing.assert_array_equal(
        np.asarray(convolve2d(impulse, h, "valid")), np.asarray(correlate2d(impulse, h[::-1, ::-1], "valid"))
    )


def test_batch_and_jit():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(3, 5, 6)).astype(np.float32)
    h = rng.normal(size=(2, 2)).astype(np.float32)
    got = jax.jit(correlate2d, static_argnames="mode")(x, h, mode="same")
    for i in range(3):
        np.testing.assert_allclose(
            np.asarray(got[i]), scipy.signal.correlate2d(x[i], h, "same"), rtol=1e-5, atol=1e-5
        )


def test_float_dtypes():
    x = np.ones((4, 4), np.float16)
    assert convolve2d(x, np.ones((2, 2), np.float16)).dtype == jnp.float16
    assert convolve2d(x, np.ones((2, 2), np.float32)).dtype == jnp.float32
    assert correlate2d(jnp.ones((4, 4), jnp.bfloat16), np.ones((3, 3), np.int32)).dtype == jnp.bfloat16


def test_errors():
    x = np.ones((4, 5), np.float32)
    with pytest.raises(ValueError, match="mode='nope'"):
        convolve2d(x, np.ones((2, 2)), mode="nope")
    with pytest.raises(ValueError, match=r"correlate2d: kernel must have rank 2.*\(3, 3, 1\)"):
        correlate2d(x, np.ones((3, 3, 1)))
    with pytest.raises(ValueError, match=r"convolve2d: image must have rank 2 or 3.*\(4,\)"):
        convolve2d(np.ones(4), np.ones((2, 2)))
    with pytest.raises(ValueError, match=r"at least as large.*\(4, 5\).*\(5, 3\)"):
        correlate2d(x, np.ones((5, 3)), "valid")
    with pytest.raises(ValueError, match="kernel is empty"):
        correlate2d(x, np.ones((0, 3)))
    with pytest.raises(TypeError, match="complex"):
        correlate2d(x, np.ones((2, 2), np.complex64))
    with pytest.raises(TypeError, match="image must be an array"):
        correlate2d("image", np.ones((2, 2)))
