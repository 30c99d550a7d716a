"""Augmentations: shapes, dtypes, label alignment, and exact answers for known inputs."""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcnn.data import augment as A
from jaxcnn.data import rotate_image

KEY = jax.random.key(0)


def batch(n=6, h=9, w=9, c=2, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "image": rng.integers(0, 256, (n, h, w, c), dtype=np.uint8),
        "label": rng.integers(0, 11, (n, h, w)).astype(np.int32),  # A per-pixel map.
        "mask": np.ones(n, bool),
    }


RANDOM = {
    "flip": A.random_flip,
    "crop": partial(A.random_crop, padding=3),
    "affine": partial(A.random_affine, max_rotation=30.0, max_translation=0.2),
}


@pytest.mark.parametrize("name", sorted(RANDOM))
def test_shapes_dtypes_and_jit(name):
    b = batch()
    out = jax.jit(RANDOM[name])(KEY, b)
    assert set(out) == set(b)
    for key in b:
        assert out[key].shape == b[key].shape and out[key].dtype == b[key].dtype, key
    np.testing.assert_array_equal(out["mask"], b["mask"])


@pytest.mark.parametrize("name", sorted(RANDOM))
def test_label_map_moves_with_the_image(name):
    """Image = one-hot of the label map: after the transform the two still agree pixel by pixel."""
    rng = np.random.default_rng(1)
    label = rng.integers(1, 4, (5, 12, 12)).astype(np.int32)
    image = (label[..., None] * 60).astype(np.uint8)  # Label 0 (fill) <-> pixel 0.
    if name == "affine":  # Bilinear blends across label borders: use a pixel-exact quarter turn.
        out = A.affine({"image": image, "label": label}, angle=jnp.full((5,), 90.0))
    else:
        out = RANDOM[name](KEY, {"image": image, "label": label})
    np.testing.assert_array_equal(np.asarray(out["image"])[..., 0], np.asarray(out["label"]) * 60)


def test_each_example_gets_its_own_draw():
    image = np.tile(np.arange(16, dtype=np.uint8).reshape(1, 4, 4, 1), (64, 1, 1, 1))
    flipped = np.asarray(A.random_flip(KEY, {"image": image})["image"])
    changed = (flipped != image).any(axis=(1, 2, 3))
    assert 0 < changed.sum() < 64
    shifted = np.asarray(A.random_crop(KEY, {"image": image}, padding=2)["image"])
    assert len({s.tobytes() for s in shifted}) > 5


def test_flip_twice_is_identity_and_matches_numpy():
    b = batch()
    once = A.random_flip(KEY, b)
    twice = A.random_flip(KEY, once)
    np.testing.assert_array_equal(twice["image"], b["image"])
    np.testing.assert_array_equal(twice["label"], b["label"])
    always = A.random_flip(KEY, b, probability=1.0)
    np.testing.assert_array_equal(always["image"], b["image"][:, :, ::-1, :])
    np.testing.assert_array_equal(always["label"], b["label"][:, :, ::-1])


def test_flip_moves_boxes():
    image = np.zeros((1, 10, 10, 1), np.uint8)
    image[0, 2:5, 1:4] = 255  # Box x in [1, 4), y in [2, 5).
    out = A.random_flip(KEY, {"image": image, "boxes": np.array([[[1, 2, 4, 5]]], np.float32)}, probability=1.0)
    ys, xs = np.nonzero(np.asarray(out["image"])[0, ..., 0])
    np.testing.assert_array_equal(out["boxes"][0, 0], [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])


def test_crop_is_a_shifted_window_of_the_zero_padded_image():
    h = w = 7
    p = 3
    image = (np.arange(4 * h * w).reshape(4, h, w, 1) % 250 + 1).astype(np.uint8)  # No zeros inside.
    out = np.asarray(A.random_crop(jax.random.key(3), {"image": image}, padding=p)["image"])
    padded = np.pad(image, ((0, 0), (p, p), (p, p), (0, 0)))
    for i in range(4):
        matches = [(dy, dx) for dy in range(2 * p + 1) for dx in range(2 * p + 1)
                   if np.array_equal(padded[i, dy : dy + h, dx : dx + w], out[i])]
        assert len(matches) == 1
    # Explicit offsets: the window starting at (0, 0) shifts the content down-right by p.
    corner = np.asarray(A.crop({"image": image}, np.zeros((4, 2), np.int32), padding=p)["image"])
    np.testing.assert_array_equal(corner[:, p:, p:], image[:, : h - p, : w - p])
    assert (corner[:, :p] == 0).all() and (corner[:, :, :p] == 0).all()


def test_affine_identity_and_quarter_turn():
    b = batch(h=9, w=9)
    same = A.affine(b, angle=jnp.zeros(6))
    np.testing.assert_array_equal(same["image"], b["image"])
    np.testing.assert_array_equal(same["label"], b["label"])
    still = A.random_affine(KEY, b, max_rotation=0.0, max_translation=0.0, scale_range=(1.0, 1.0))
    np.testing.assert_array_equal(still["image"], b["image"])
    quarter = A.affine(b, angle=jnp.full((6,), 90.0))  # Counter-clockwise, like np.rot90.
    np.testing.assert_array_equal(quarter["image"], np.rot90(b["image"], 1, axes=(1, 2)))
    np.testing.assert_array_equal(quarter["label"], np.rot90(b["label"], 1, axes=(1, 2)))


def test_affine_translation_and_scale():
    image = np.zeros((1, 9, 9, 1), np.float32)
    image[0, 4, 4] = 1.0
    moved = np.asarray(A.affine({"image": image}, angle=jnp.zeros(1), translation=jnp.array([[2.0, -3.0]]))["image"])
    assert moved[0, 6, 1, 0] == 1.0 and moved.sum() == 1.0
    big = np.asarray(A.affine({"image": image}, angle=jnp.zeros(1), scale=jnp.array([2.0]))["image"])
    assert big[0, 4, 4, 0] == 1.0 and np.isclose(big.sum(), 1.0 + 4 * 0.5 + 4 * 0.25)


def test_affine_matches_scipy():
    scipy_ndimage = pytest.importorskip("scipy.ndimage")
    image = np.random.default_rng(2).random((1, 11, 11, 1)).astype(np.float32)
    out = np.asarray(A.affine({"image": image}, angle=jnp.array([30.0]))["image"])[0, ..., 0]
    # The inverse map written out independently; "grid-constant" blends with the fill outside
    # the image like jax's "constant" mode.
    theta = np.deg2rad(30.0)
    c = 5.0
    rows, cols = np.meshgrid(np.arange(11.0), np.arange(11.0), indexing="ij")
    src_r = np.sin(theta) * (cols - c) + np.cos(theta) * (rows - c) + c
    src_c = np.cos(theta) * (cols - c) - np.sin(theta) * (rows - c) + c
    expected = scipy_ndimage.map_coordinates(image[0, ..., 0], [src_r, src_c], order=1, mode="grid-constant")
    np.testing.assert_allclose(out, expected, atol=1e-5)
    np.testing.assert_allclose(out, rotate_image(image[0, ..., 0], 30.0), atol=1e-5)


def test_normalize():
    image = np.array([0, 51, 255], np.uint8).reshape(1, 1, 3, 1)
    out = A.normalize(None, {"image": image}, mean=0.2, std=0.5)["image"]
    assert out.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(out).ravel(), [-0.4, 0.0, 1.6], atol=1e-6)
    rgb = np.full((2, 2, 2, 3), 255, np.uint8)
    per_channel = A.normalize(None, {"image": rgb}, mean=(0.5, 0.0, 1.0), std=(0.5, 1.0, 2.0))["image"]
    np.testing.assert_allclose(np.asarray(per_channel)[0, 0, 0], [1.0, 1.0, 0.0], atol=1e-6)
    with pytest.raises(ValueError, match=r"mean must be a scalar or have shape \(3,\)"):
        A.normalize(None, {"image": rgb}, mean=(0.1, 0.2))
    with pytest.raises(ValueError, match="std must be > 0"):
        A.normalize(None, {"image": rgb}, std=0.0)


def test_resize_and_boxes():
    b = {"image": np.full((2, 8, 8, 1), 100, np.uint8), "boxes": np.array([[[0, 0, 4, 2]]] * 2, np.float32)}
    out = A.resize(None, b, size=(16, 4))
    assert out["image"].shape == (2, 16, 4, 1) and out["image"].dtype == jnp.uint8
    assert (np.asarray(out["image"]) == 100).all()
    np.testing.assert_allclose(out["boxes"][0, 0], [0, 0, 2, 4])
    seg = batch(h=4, w=4)
    assert A.resize(None, seg, size=8)["label"].shape == (6, 8, 8)


def test_compose_under_jit():
    augment = A.compose(partial(A.random_crop, padding=2), A.random_flip, partial(A.normalize, mean=0.1307, std=0.3081))
    out = jax.jit(augment)(KEY, batch(c=1))
    assert out["image"].dtype == jnp.float32 and out["image"].shape == (6, 9, 9, 1)
    again = jax.jit(augment)(KEY, batch(c=1))
    np.testing.assert_array_equal(out["image"], again["image"])
    other = jax.jit(augment)(jax.random.key(1), batch(c=1))
    assert not np.array_equal(out["image"], other["image"])


def test_argument_errors():
    with pytest.raises(ValueError, match=r"batch\['image'\] must have shape \(N, H, W, C\), got shape \(9, 9\)"):
        A.random_flip(KEY, {"image": np.zeros((9, 9), np.uint8)})
    with pytest.raises(TypeError, match="'image' entry"):
        A.random_flip(KEY, np.zeros((1, 9, 9, 1)))
    with pytest.raises(TypeError, match="key must be a jax.random key"):
        A.random_crop(None, batch())
    with pytest.raises(ValueError, match="padding must be a non-negative int"):
        A.random_crop(KEY, batch(), padding=-1)
    with pytest.raises(ValueError, match="probability must be in"):
        A.random_flip(KEY, batch(), probability=1.5)
    with pytest.raises(ValueError, match="scale_range must satisfy"):
        A.random_affine(KEY, batch(), scale_range=(1.2, 1.0))
    with pytest.raises(ValueError, match="boxes"):
        A.random_affine(KEY, {"image": np.zeros((1, 4, 4, 1)), "boxes": np.zeros((1, 1, 4))})
