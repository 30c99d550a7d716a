"""Classic filters and filter2d against scipy.ndimage and hand-computed values."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.ndimage

from jaxcnn import kernels

# jaxcnn padding_mode -> scipy.ndimage mode.
SCIPY_MODE = {
    "reflect": "mirror",
    "replicate": "nearest",
    "circular": "wrap",
    "zeros": "constant",
    "constant": "constant",
}


def scipy_filter(image, kernel, mode, cval=0.0):
    """Reference: scipy.ndimage.correlate in float64, the kernel broadcast over N and C."""
    image = np.asarray(image, np.float64)
    kernel = np.asarray(kernel, np.float64)
    if image.ndim == 3:
        kernel = kernel[:, :, None]
    elif image.ndim == 4:
        kernel = kernel[None, :, :, None]
    return scipy.ndimage.correlate(image, kernel, mode=SCIPY_MODE[mode], cval=cval)


@pytest.mark.parametrize("padding_mode", sorted(SCIPY_MODE))
@pytest.mark.parametrize("shape", [(7, 8), (6, 7, 3), (2, 5, 6, 2)], ids=["gray", "rgb", "batch"])
def test_uint8_matches_scipy(padding_mode, shape):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=shape, dtype=np.uint8)
    kernel = kernels.gaussian(5, 1.2) if padding_mode == "reflect" else kernels.sharpen()
    cval = 17.0 if padding_mode == "constant" else 0.0
    got = kernels.filter2d(image, kernel, padding_mode=padding_mode, pad_value=cval)
    assert got.shape == image.shape and got.dtype == jnp.float32
    expected = scipy_filter(image, kernel, padding_mode, cval)
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("padding_mode", sorted(SCIPY_MODE))
def test_float_rectangular_kernel_matches_scipy(padding_mode):
    rng = np.random.default_rng(1)
    image = rng.normal(size=(6, 9, 3)).astype(np.float32)
    kernel = rng.normal(size=(3, 5)).astype(np.float32)
    got = kernels.filter2d(image, kernel, padding_mode=padding_mode, pad_value=-0.5)
    assert got.dtype == jnp.float32
    cval = -0.5 if padding_mode == "constant" else 0.0
    np.testing.assert_allclose(
        np.asarray(got), scipy_filter(image, kernel, padding_mode, cval), rtol=1e-5, atol=1e-5
    )


def test_dtypes():
    image = np.arange(30).reshape(5, 6)
    for dtype in (np.int8, np.int16, np.uint16, np.int32, np.int64, np.bool_):
        assert kernels.filter2d(image.astype(dtype), kernels.box_blur(3)).dtype == jnp.float32
    assert kernels.filter2d(jnp.asarray(image, jnp.bfloat16), kernels.box_blur(3)).dtype == jnp.bfloat16
    assert kernels.filter2d(image.astype(np.float16), np.ones((3, 3), np.int32)).dtype == jnp.float16


def test_sobel_on_vertical_step_edge():
    # Dark left half, bright right half: |0 0 0 1 1 1|. Each Sobel x row sees (1+2+1)*(1-0) = 4
    # on the two columns beside the step, and nothing else; the rows are equal, so y is 0.
    image = np.zeros((5, 6), np.uint8)
    image[:, 3:] = 1
    row = np.array([0, 0, 4, 4, 0, 0], np.float32)
    gx = kernels.filter2d(image, kernels.sobel_x())
    gy = kernels.filter2d(image, kernels.sobel_y())
    np.testing.assert_array_equal(np.asarray(gx), np.tile(row, (5, 1)))
    np.testing.assert_array_equal(np.asarray(gy), np.zeros((5, 6)))
    np.testing.assert_array_equal(np.asarray(kernels.sobel_magnitude(image)), np.tile(row, (5, 1)))
    # With zero padding the border itself becomes a (false) edge: the last column sees
    # 1 on the left and padding 0 on the right.
    gx0 = kernels.filter2d(image, kernels.sobel_x(), padding_mode="zeros")
    np.testing.assert_array_equal(np.asarray(gx0)[2], [0, 0, 4, 4, 0, -4])
    # A horizontal edge is the transpose.
    np.testing.assert_array_equal(
        np.asarray(kernels.filter2d(image.T, kernels.sobel_y())), np.tile(row, (5, 1)).T
    )


def test_fixed_kernels():
    np.testing.assert_array_equal(np.asarray(kernels.sobel_y()), np.asarray(kernels.sobel_x()).T)
    np.testing.assert_array_equal(
        np.asarray(kernels.horizontal_lines()), [[-1, -1, -1], [2, 2, 2], [-1, -1, -1]]
    )
    np.testing.assert_array_equal(
        np.asarray(kernels.vertical_lines()), np.asarray(kernels.horizontal_lines()).T
    )
    np.testing.assert_array_equal(
        np.asarray(kernels.edge_detector()), [[-1, -1, -1], [-1, 8, -1], [-1, -1, -1]]
    )
    np.testing.assert_array_equal(np.asarray(kernels.laplacian(4)), [[0, 1, 0], [1, -4, 1], [0, 1, 0]])
    np.testing.assert_array_equal(np.asarray(kernels.laplacian(8)), -np.asarray(kernels.edge_detector()))
    identity = np.zeros((3, 3))
    identity[1, 1] = 1
    np.testing.assert_array_equal(np.asarray(kernels.sharpen()), identity - np.asarray(kernels.laplacian(4)))
    for k in (
        kernels.sobel_x(),
        kernels.laplacian(8),
        kernels.sharpen(),
        kernels.gaussian(3, 1.0),
        kernels.box_blur(5),
    ):
        assert k.dtype == jnp.float32 and k.ndim == 2
    # Zero-sum filters give 0 on a flat image; sharpen and blurs keep it.
    flat = np.full((5, 5), 7, np.uint8)
    for k in (kernels.sobel_x(), kernels.laplacian(4), kernels.edge_detector(), kernels.horizontal_lines()):
        np.testing.assert_array_equal(np.asarray(kernels.filter2d(flat, k)), 0)
    np.testing.assert_allclose(np.asarray(kernels.filter2d(flat, kernels.sharpen())), 7)


def test_line_detectors():
    image = np.zeros((5, 5), np.float32)
    image[2, :] = 1  # one bright horizontal line
    h = np.asarray(kernels.filter2d(image, kernels.horizontal_lines(), padding_mode="replicate"))
    v = np.asarray(kernels.filter2d(image, kernels.vertical_lines(), padding_mode="replicate"))
    np.testing.assert_array_equal(h[2], [6, 6, 6, 6, 6])  # 2 * (1 + 1 + 1)
    np.testing.assert_array_equal(h[1], [-3, -3, -3, -3, -3])
    np.testing.assert_array_equal(v, 0)


def test_box_blur():
    for n in (1, 3, 5):
        k = np.asarray(kernels.box_blur(n))
        assert k.shape == (n, n)
        np.testing.assert_allclose(k.sum(), 1.0, rtol=1e-6)
        np.testing.assert_allclose(k, 1.0 / n**2)


def test_gaussian_matches_formula():
    size, sigma = 5, 1.3
    g = np.asarray(kernels.gaussian(size, sigma))
    expected = np.array(
        [[np.exp(-((i - 2) ** 2 + (j - 2) ** 2) / (2 * sigma**2)) for j in range(size)] for i in range(size)]
    )
    expected /= expected.sum()
    np.testing.assert_allclose(g, expected, rtol=1e-6)
    np.testing.assert_allclose(g.sum(), 1.0, rtol=1e-6)
    assert g[2, 2] == g.max()
    np.testing.assert_array_equal(g, g.T)
    np.testing.assert_array_equal(np.asarray(kernels.gaussian(1, 0.5)), [[1.0]])


def test_jit_and_grad():
    image = jnp.asarray(np.random.default_rng(3).normal(size=(6, 6)), jnp.float32)
    f = jax.jit(lambda x: kernels.filter2d(x, kernels.box_blur(3)).sum())
    # With circular padding every pixel enters exactly 9 windows of weight 1/9.
    g = jax.grad(lambda x: kernels.filter2d(x, kernels.box_blur(3), padding_mode="circular").sum())(image)
    np.testing.assert_allclose(np.asarray(g), 1.0, rtol=1e-6)
    assert np.isfinite(float(f(image)))


def test_errors():
    img = np.zeros((5, 5), np.float32)
    with pytest.raises(ValueError, match=r"filter2d: kernel must have rank 2.*\(3, 3, 1\)"):
        kernels.filter2d(img, np.ones((3, 3, 1)))
    with pytest.raises(ValueError, match=r"kernel sizes must be odd.*\(2, 3\)"):
        kernels.filter2d(img, np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"filter2d: image must have rank 2 or 3 or 4.*\(5,\)"):
        kernels.filter2d(np.zeros(5), np.ones((3, 3)))
    with pytest.raises(ValueError, match="padding_mode='mirror'"):
        kernels.filter2d(img, np.ones((3, 3)), padding_mode="mirror")
    with pytest.raises(ValueError, match="reflect.*image larger than half the kernel"):
        kernels.filter2d(np.zeros((2, 2)), np.ones((5, 5)))
    with pytest.raises(TypeError, match="complex"):
        kernels.filter2d(img.astype(np.complex64), np.ones((3, 3)))
    with pytest.raises(TypeError, match="pad_value"):
        kernels.filter2d(img, np.ones((3, 3)), padding_mode="constant", pad_value="0")
    with pytest.raises(ValueError, match="gaussian: sigma must be > 0.*-1"):
        kernels.gaussian(3, -1.0)
    with pytest.raises(ValueError, match="gaussian: sigma"):
        kernels.gaussian(3, 0)
    with pytest.raises(ValueError, match="gaussian: size must be an odd positive int.*4"):
        kernels.gaussian(4, 1.0)
    with pytest.raises(ValueError, match="box_blur: n must be an odd.*0"):
        kernels.box_blur(0)
    with pytest.raises(TypeError, match="box_blur: n"):
        kernels.box_blur(3.0)
    with pytest.raises(ValueError, match="laplacian: neighbours must be 4 or 8, got 6"):
        kernels.laplacian(6)
