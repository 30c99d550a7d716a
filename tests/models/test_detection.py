"""R-CNN family: building blocks against hand-computed values, and each detector's shapes, jit and a
gradient step that lowers its loss on a tiny batch of canvases."""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcnn import functional as F
from jaxcnn.models.detection import (
    RCNN,
    Backbone,
    FasterRCNN,
    FastRCNN,
    detect,
    detection_loss,
    match_boxes,
    sample_balanced,
    sliding_window_proposals,
    smooth_l1,
)


def test_sliding_windows_cover_the_image():
    boxes = sliding_window_proposals(32, window_sizes=(16, 20), overlap=0.5)
    # size 16: starts 0, 8, 16 per axis; size 20: step 10 gives 0, 10, then 12 flush with the edge
    assert boxes.shape == (9 + 9, 4)
    np.testing.assert_array_equal(boxes[0], [0, 0, 16, 16])
    np.testing.assert_array_equal(boxes[8], [16, 16, 32, 32])
    np.testing.assert_array_equal(boxes[9 + 5], [12, 10, 32, 30])
    tall = sliding_window_proposals(32, window_sizes=(16,), aspect_ratios=(4.0,))
    np.testing.assert_allclose(tall[0], [0, 0, 8, 32])


def test_smooth_l1_hand_values():
    beta = 1 / 9
    np.testing.assert_allclose(
        np.asarray(smooth_l1(jnp.array([0.05, -1.0, 0.0]))), [0.5 * 0.05**2 / beta, 1 - beta / 2, 0]
    )


def test_matching_and_balanced_sampling():
    gt = jnp.array([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 0.0, 0.0]])
    gt_valid = jnp.array([True, False])
    boxes = jnp.array(
        [
            [0.0, 0.0, 10.0, 10.0],
            [0.0, 0.0, 10.0, 6.0],
            [0.0, 0.0, 10.0, 2.0],
            [20.0, 20, 30, 30],
            [1, 1, 9, 9],
        ]
    )
    valid = jnp.array([True, True, True, True, False])
    # IoUs with gt 0: 1, 0.6, 0.2, 0, (invalid)
    matched, label = match_boxes(boxes, valid, gt, gt_valid, 0.7, 0.3)
    assert label.tolist() == [1, -1, 0, 0, -1] and matched[:4].tolist() == [0, 0, 0, 0]
    # without the perfect box, the best one (0.6) becomes a low-quality positive
    _, label = match_boxes(boxes[1:], valid[1:], gt, gt_valid, 0.7, 0.3, allow_low_quality_matches=True)
    assert label.tolist() == [1, 0, 0, -1]
    labels = jnp.array([1, 1, 1] + [0] * 10 + [-1] * 3)
    for seed in range(3):
        pos, neg = sample_balanced(jax.random.key(seed), labels, 8, 0.25)
        assert int(pos.sum()) == 2 and int(neg.sum()) == 6
        assert bool(jnp.all(labels[pos] == 1)) and bool(jnp.all(labels[neg] == 0))
    pos, neg = sample_balanced(jax.random.key(0), labels, 8, 0.5)  # 4 wanted, 3 available
    assert int(pos.sum()) == 3 and int(neg.sum()) == 5


def test_detect_thresholds_and_suppresses_per_class():
    proposals = jnp.array(
        [[[0.0, 0.0, 10.0, 10.0], [1.0, 0.0, 11.0, 10.0], [20.0, 20.0, 30.0, 30.0], [5, 5, 9, 9]]]
    )
    valid = jnp.array([[True, True, True, False]])
    logits = jnp.log(
        jnp.array([[[0.16, 0.8, 0.04], [0.26, 0.7, 0.04], [0.02, 0.03, 0.95], [0.0, 1.0, 0.0]]]) + 1e-12
    )
    outputs = {"proposals": proposals, "proposal_valid": valid, "class_logits": logits}
    outputs["box_deltas"] = jnp.zeros((1, 4, 3, 4))
    out = jax.jit(lambda o: detect(o, (32, 32), max_detections=4))(outputs)
    # the second box overlaps the first (IoU 9/11) in the same class; class scores below 0.05 go
    assert np.asarray(out["valid"]).tolist() == [[True, True, False, False]]
    assert np.asarray(out["classes"])[0, :2].tolist() == [1, 0]
    np.testing.assert_allclose(np.asarray(out["scores"])[0, :2], [0.95, 0.8], rtol=1e-5)
    np.testing.assert_allclose(np.asarray(out["boxes"])[0, :2], [[20, 20, 30, 30], [0, 0, 10, 10]], atol=1e-5)


@pytest.fixture(scope="module")
def canvases():
    """Two 32x32 images with one and two bright squares (class 0: side 8, class 1: side 12)."""
    rng = np.random.default_rng(0)
    images = np.zeros((2, 32, 32, 1), np.float32)
    boxes = np.zeros((2, 2, 4), np.float32)
    classes = np.zeros((2, 2), np.int32)
    valid = np.array([[True, True], [True, False]])
    for i in range(2):
        for j in range(2):
            if valid[i, j]:
                side = 8 + 4 * j
                x, y = rng.integers(0, 32 - side, 2)
                images[i, y : y + side, x : x + side] = 1.0
                boxes[i, j], classes[i, j] = (x, y, x + side, y + side), j
    return images, boxes, classes, valid


def _tiny_faster_rcnn(**options):
    return FasterRCNN(
        num_classes=2, anchor_sizes=(8.0, 16.0), features=(4, 8, 8), hidden=16, pre_nms_top_n=50,
        post_nms_top_n=8, **options
    )


MODELS = {
    "RCNN": lambda: RCNN(num_classes=2, window_sizes=(8, 16), features=(4, 8), hidden=16),
    "FastRCNN": lambda: FastRCNN(
        num_classes=2, window_sizes=(8, 16), pooling="align", features=(4, 8, 8), hidden=16
    ),
    "FasterRCNN": lambda: _tiny_faster_rcnn(),
    "FasterRCNN strides 2+4": lambda: _tiny_faster_rcnn(roi_strides=(2, 4)),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(MODELS))
def test_a_gradient_step_lowers_the_loss(canvases, name):
    images, boxes, classes, valid = canvases
    model = MODELS[name]()
    params = jax.jit(model.init)(jax.random.key(0), images, boxes, valid)

    @jax.jit
    def loss_and_grad(params, key):
        def loss(params):
            outputs = model.apply(params, images, boxes, valid)
            return detection_loss(outputs, boxes, classes, valid, key)["loss"], outputs

        return jax.value_and_grad(loss, has_aux=True)(params)

    key = jax.random.key(1)
    (before, outputs), grads = loss_and_grad(params, key)
    p = outputs["proposals"].shape[1]
    assert outputs["class_logits"].shape == (2, p, 3) and outputs["box_deltas"].shape == (2, p, 3, 4)
    # the ground truth joined the proposals, its padding invalid
    np.testing.assert_array_equal(np.asarray(outputs["proposals"][:, -2:]), boxes)
    np.testing.assert_array_equal(np.asarray(outputs["proposal_valid"][:, -2:]), valid)
    leaves = jax.tree.leaves(grads)
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in leaves)
    first_conv = jax.tree.leaves(grads["params"]["backbone" if name != "RCNN" else "conv0"])
    assert any(float(jnp.abs(g).max()) > 0 for g in first_conv)  # gradients reach the features
    stepped = jax.tree.map(lambda w, g: w - 0.005 * g, params, grads)
    (after, _), _ = loss_and_grad(stepped, key)
    assert math.isfinite(float(before)) and float(after) < float(before)
    # inference (no ground truth) traced, not compiled: the detections' shapes
    dets = jax.eval_shape(
        lambda params: detect(model.apply(params, images), (32, 32), max_detections=5), params
    )
    assert (
        dets["boxes"].shape == (2, 5, 4)
        and dets["classes"].shape == (2, 5)
        and dets["valid"].dtype == jnp.bool_
    )
    if name.startswith("FasterRCNN"):
        assert {"objectness", "rpn_deltas", "anchors"} <= set(outputs)


def test_fast_rcnn_with_roi_max_pooling_traces(canvases):
    images, boxes, _, valid = canvases
    model = FastRCNN(num_classes=2, window_sizes=(8, 16), pooling="pool", features=(4, 8, 8), hidden=16)
    params = jax.eval_shape(model.init, jax.random.key(0), images, boxes, valid)
    outputs = jax.eval_shape(model.apply, params, images, boxes, valid)
    assert outputs["class_logits"].shape == (2, 58 + 2, 3)  # 7 x 7 + 3 x 3 windows, 2 ground truths


def test_backbone_levels_and_the_head_pools_every_requested_stride(canvases):
    images, boxes, _, valid = canvases
    images = jnp.asarray(images)
    backbone = Backbone((4, 8, 8))
    variables = backbone.init(jax.random.key(0), images)
    maps = backbone.apply(variables, images, levels=True)
    assert {s: m.shape for s, m in maps.items()} == {1: (2, 32, 32, 4), 2: (2, 16, 16, 8), 4: (2, 8, 8, 8)}
    np.testing.assert_array_equal(maps[4], backbone.apply(variables, images))
    # the last map is the pooled one when there are only two convs
    two = Backbone((4, 8))
    assert set(two.apply(two.init(jax.random.key(0), images), images, levels=True)) == {1, 2, 4}

    for model_class in (FastRCNN, FasterRCNN):
        model = model_class(num_classes=2, features=(4, 8, 8), hidden=16, roi_strides=(2, 4))
        params = model.init(jax.random.key(0), images, boxes, valid)
        seen = {}

        def grab(next_fun, args, kwargs, context):
            if context.module.name == "box_head":
                seen["pooled"] = args[0]
            return next_fun(*args, **kwargs)

        with nn.intercept_methods(grab):
            outputs = model.apply(params, images, boxes, valid)
        maps = backbone.apply({"params": params["params"]["backbone"]}, images, levels=True)
        # the reference: each level pooled on its own (roi_align is checked against NumPy elsewhere)
        expected = np.concatenate(
            [
                np.concatenate(
                    [
                        np.asarray(F.roi_align(maps[s][i : i + 1], [outputs["proposals"][i]], 7, 1 / s, 2))
                        for i in range(2)
                    ]
                )
                for s in (2, 4)
            ],
            axis=-1,
        )
        np.testing.assert_allclose(np.asarray(seen["pooled"]), expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match=r"roi_strides=\(8,\) must be distinct strides of the backbone's maps \(1, 2, 4\)"):
        FasterRCNN(roi_strides=(8,))
    with pytest.raises(ValueError, match="roi_strides"):
        FastRCNN(roi_strides=(4, 4))


def test_bad_input(canvases):
    images, boxes, _, valid = canvases
    with pytest.raises(ValueError, match="gt_boxes must be"):
        FasterRCNN(num_classes=2).init(jax.random.key(0), images, boxes[:1], valid)
    with pytest.raises(ValueError, match="pooling"):
        FastRCNN(pooling="max")
