"""jaxcnn.plotting: the sliding-window geometry against convolution gradients; figures hold the data."""

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")  # the test process only; the module itself never selects a backend

from jaxcnn import functional as F  # noqa: E402
from jaxcnn import plotting  # noqa: E402


@pytest.mark.parametrize(
    "in_size, kernel, stride, padding, dilation, index",
    [(5, 3, 1, 0, 1, (0, 0)), (7, 3, 2, 1, 1, (1, 2)), (9, 3, 1, 2, 2, (2, 0)), ((6, 8), (2, 3), (2, 1), (1, 0), (1, 2), (1, 3))],
)
def test_conv_window_taps_are_the_pixels_the_output_depends_on(in_size, kernel, stride, padding, dilation, index):
    """Reference: the input gradient of one output of an all-ones convolution (no padding
    taps there, since padding has no gradient)."""
    h, w = (in_size, in_size) if isinstance(in_size, int) else in_size
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    x = jnp.asarray(np.random.default_rng(0).normal(size=(1, h, w, 1)), jnp.float32)
    ones = jnp.ones((kh, kw, 1, 1), jnp.float32)

    def one_output(x):
        return F.conv(x, ones, stride=stride, padding=padding, dilation=dilation)[0, index[0], index[1], 0]

    grad = np.asarray(jax.grad(one_output)(x))[0, :, :, 0]
    expected = {(int(r), int(c)) for r, c in zip(*np.nonzero(grad))}
    taps = plotting.conv_window_taps(in_size, kernel, index, stride=stride, padding=padding, dilation=dilation)
    assert len(taps) == kh * kw
    assert {t for t in taps if 0 <= t[0] < h and 0 <= t[1] < w} == expected


def test_conv_window_taps_rejects_an_output_outside_the_result():
    with pytest.raises(ValueError, match=r"output_index=\(3, 0\) is outside the 3x3 output"):
        plotting.conv_window_taps(5, 3, (3, 0))
    with pytest.raises(ValueError, match="stride must be an int >= 1"):
        plotting.conv_window_taps(5, 3, stride=0)


def test_show_images_draws_each_image_with_its_title():
    images = np.arange(3 * 4 * 5, dtype=np.float32).reshape(3, 4, 5, 1)
    fig = plotting.show_images(images, titles=["a", "b", "c"], ncols=2)
    drawn = [ax for ax in fig.axes if ax.images]
    assert [ax.get_title() for ax in drawn] == ["a", "b", "c"]
    np.testing.assert_array_equal(drawn[1].images[0].get_array(), images[1, :, :, 0])
    with pytest.raises(ValueError, match=r"image 0 must be \(H, W\).*got shape \(4, 5, 2\)"):
        plotting.show_images(np.zeros((1, 4, 5, 2)))


def test_show_filters_shows_one_picture_per_output_channel():
    kernel = np.random.default_rng(1).normal(size=(3, 3, 1, 6)).astype(np.float32)
    fig = plotting.show_filters(kernel)
    drawn = [ax for ax in fig.axes if ax.images]
    assert len(drawn) == 6
    np.testing.assert_allclose(drawn[4].images[0].get_array(), kernel[:, :, 0, 4])


def test_show_matrix_writes_every_number():
    values = np.array([[4, 3, 4], [2, 4, 3]])
    fig = plotting.show_matrix(values)
    texts = sorted(t.get_text() for t in fig.axes[0].texts)
    assert texts == sorted(str(v) for v in values.ravel())


def test_plot_history_has_one_panel_per_metric_and_one_line_per_split():
    records = [
        {"step": s, "split": split, "loss": 1.0 / s, "accuracy": 0.5 + s / 100}
        for s in (1, 2, 3) for split in ("train", "eval")
    ]
    fig = plotting.plot_history(records, ["loss", "accuracy"])
    panels = [ax for ax in fig.axes if ax.lines]
    assert len(panels) == 2
    assert all(len(ax.lines) == 2 for ax in panels)
    np.testing.assert_allclose(panels[0].lines[0].get_ydata(), [1.0, 0.5, 1.0 / 3])
