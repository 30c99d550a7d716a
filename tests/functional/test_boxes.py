"""Box ops against hand-computed values and NumPy references written from torchvision's definitions.

torchvision cannot be installed next to the CPU torch here, so each reference is a plain loop
of the documented algorithm (greedy NMS over a stable descending sort; RoI Align's bilinear
samples at the centres of a sub-grid of each bin, zero beyond one pixel outside the map; RoI
Pool's rounded corners and floor/ceil bins).
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcnn import functional as F

# --------------------------------------------------------------------------- references


def _random_boxes(rng, n, extent=20.0, min_size=0.5, max_size=10.0):
    xy = rng.uniform(-2.0, extent, size=(n, 2))
    wh = rng.uniform(min_size, max_size, size=(n, 2))
    return np.concatenate([xy, xy + wh], axis=1).astype(np.float32)


def _iou_reference(a, b):
    out = np.zeros((len(a), len(b)))
    for i, p in enumerate(a.astype(np.float64)):
        for j, q in enumerate(b.astype(np.float64)):
            iw = max(0.0, min(p[2], q[2]) - max(p[0], q[0]))
            ih = max(0.0, min(p[3], q[3]) - max(p[1], q[1]))
            inter = iw * ih
            union = (p[2] - p[0]) * (p[3] - p[1]) + (q[2] - q[0]) * (q[3] - q[1]) - inter
            out[i, j] = inter / union
    return out


def _nms_reference(boxes, scores, threshold, groups=None):
    order = sorted(range(len(scores)), key=lambda i: -scores[i])  # Python's sort is stable
    iou = _iou_reference(boxes, boxes)
    keep, removed = [], set()
    for pos, i in enumerate(order):
        if i in removed:
            continue
        keep.append(i)
        for j in order[pos + 1 :]:
            same = groups is None or groups[i] == groups[j]
            if same and iou[i, j] > threshold:
                removed.add(j)
    return keep


def _bilinear(plane, y, x):
    """One sample of torchvision's bilinear_interpolate; returns [(row, col, weight)]."""
    h, w = plane.shape
    if y < -1.0 or y > h or x < -1.0 or x > w:
        return []
    y, x = max(y, 0.0), max(x, 0.0)
    y0, x0 = int(y), int(x)
    if y0 >= h - 1:
        y0 = y1 = h - 1
        y = float(y0)
    else:
        y1 = y0 + 1
    if x0 >= w - 1:
        x0 = x1 = w - 1
        x = float(x0)
    else:
        x1 = x0 + 1
    ly, lx = y - y0, x - x0
    hy, hx = 1 - ly, 1 - lx
    return [(y0, x0, hy * hx), (y0, x1, hy * lx), (y1, x0, ly * hx), (y1, x1, ly * lx)]


def _roi_align_samples(roi, h, w, out, scale, ratio, aligned):
    """For each bin (ph, pw): the list of (row, col, weight) with weights already / count."""
    offset = 0.5 if aligned else 0.0
    x1, y1, x2, y2 = (float(v) * scale - offset for v in roi)
    rw, rh = x2 - x1, y2 - y1
    if not aligned:
        rw, rh = max(rw, 1.0), max(rh, 1.0)
    bh, bw = rh / out[0], rw / out[1]
    gh = ratio if ratio > 0 else math.ceil(rh / out[0])
    gw = ratio if ratio > 0 else math.ceil(rw / out[1])
    count = max(gh * gw, 1)
    bins = {}
    for ph in range(out[0]):
        for pw in range(out[1]):
            taps = []
            for iy in range(gh):
                yy = y1 + ph * bh + (iy + 0.5) * bh / gh
                for ix in range(gw):
                    xx = x1 + pw * bw + (ix + 0.5) * bw / gw
                    taps += [(r, c, wt / count) for r, c, wt in _bilinear(np.zeros((h, w)), yy, xx)]
            bins[ph, pw] = taps
    return bins


def _roi_align_reference(x, rois, out, scale, ratio, aligned):
    """x: (N, H, W, C) float64 -> (K, oh, ow, C)."""
    n, h, w, c = x.shape
    y = np.zeros((len(rois), out[0], out[1], c))
    for k, roi in enumerate(rois):
        b = int(roi[0])
        for (ph, pw), taps in _roi_align_samples(roi[1:], h, w, out, scale, ratio, aligned).items():
            for r, col, wt in taps:
                y[k, ph, pw] += wt * x[b, r, col]
    return y


def _roi_align_adjoint(g, x_shape, rois, out, scale, ratio, aligned):
    """The transpose of the map above: d(sum(y * g)) / dx, scattered sample by sample."""
    n, h, w, c = x_shape
    dx = np.zeros(x_shape)
    for k, roi in enumerate(rois):
        b = int(roi[0])
        for (ph, pw), taps in _roi_align_samples(roi[1:], h, w, out, scale, ratio, aligned).items():
            for r, col, wt in taps:
                dx[b, r, col] += wt * g[k, ph, pw]
    return dx


def _roi_pool_reference(x, rois, out, scale):
    n, h, w, c = x.shape
    y = np.zeros((len(rois), out[0], out[1], c))
    c_round = lambda v: math.floor(v + 0.5) if v >= 0 else -math.floor(-v + 0.5)  # noqa: E731
    for k, roi in enumerate(rois):
        b = int(roi[0])
        x1, y1, x2, y2 = (c_round(float(v) * scale) for v in roi[1:])
        rw, rh = max(x2 - x1 + 1, 1), max(y2 - y1 + 1, 1)
        bh, bw = rh / out[0], rw / out[1]
        for ph in range(out[0]):
            for pw in range(out[1]):
                hs = min(max(math.floor(ph * bh) + y1, 0), h)
                he = min(max(math.ceil((ph + 1) * bh) + y1, 0), h)
                ws = min(max(math.floor(pw * bw) + x1, 0), w)
                we = min(max(math.ceil((pw + 1) * bw) + x1, 0), w)
                if he <= hs or we <= ws:
                    continue
                y[k, ph, pw] = x[b, hs:he, ws:we].max(axis=(0, 1))
    return y


# --------------------------------------------------------------------------- geometry


def test_box_convert_hand_values_and_round_trip():
    xyxy = np.array([[1.0, 2.0, 5.0, 8.0], [0.0, 0.0, 0.0, 0.0]], np.float32)
    xywh = np.array([[1.0, 2.0, 4.0, 6.0], [0.0, 0.0, 0.0, 0.0]], np.float32)
    cxcywh = np.array([[3.0, 5.0, 4.0, 6.0], [0.0, 0.0, 0.0, 0.0]], np.float32)
    forms = {"xyxy": xyxy, "xywh": xywh, "cxcywh": cxcywh}
    for a, va in forms.items():
        for b, vb in forms.items():
            np.testing.assert_allclose(np.asarray(F.box_convert(va, a, b)), vb, err_msg=f"{a}->{b}")


def test_box_area_iou_giou_hand_values():
    a = np.array([[0.0, 0.0, 2.0, 2.0]], np.float32)
    b = np.array([[1.0, 1.0, 3.0, 3.0], [2.0, 0.0, 4.0, 2.0], [5.0, 5.0, 6.0, 6.0]], np.float32)
    np.testing.assert_allclose(np.asarray(F.box_area(b)), [4.0, 4.0, 1.0])
    # overlap 1, union 7; touching edges: 0; disjoint: 0
    np.testing.assert_allclose(np.asarray(F.box_iou(a, b)), [[1 / 7, 0.0, 0.0]], rtol=1e-6)
    # enclosing boxes: 3x3=9, 4x2=8, 6x6=36
    expected = [[1 / 7 - 2 / 9, 0.0 - 0 / 8, 0.0 - (36 - 5) / 36]]
    np.testing.assert_allclose(np.asarray(F.generalized_box_iou(a, b)), expected, rtol=1e-6)


def test_box_iou_random_matches_loops():
    rng = np.random.default_rng(0)
    a, b = _random_boxes(rng, 7), _random_boxes(rng, 5)
    np.testing.assert_allclose(np.asarray(F.box_iou(a, b)), _iou_reference(a, b), rtol=1e-5, atol=1e-6)
    assert F.box_iou(a[:0], b).shape == (0, 5)


# --------------------------------------------------------------------------- NMS


@pytest.fixture(scope="module")
def jitted_nms():
    return jax.jit(F.nms, static_argnums=(2, 3)), jax.jit(F.batched_nms, static_argnums=(3, 4))


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("threshold", [0.0, 0.3, 0.7])
def test_nms_matches_greedy_reference_with_ties(jitted_nms, seed, threshold):
    rng = np.random.default_rng(seed)
    boxes = _random_boxes(rng, 24, extent=12.0, min_size=2.0, max_size=8.0)
    boxes[5] = boxes[3]  # identical boxes, IoU 1
    scores = rng.integers(0, 4, size=24).astype(np.float32) / 4  # many ties
    groups = rng.integers(0, 3, size=24).astype(np.int32)
    nms, batched = jitted_nms
    for result, expected in [
        (nms(boxes, scores, threshold, 24), _nms_reference(boxes, scores, threshold)),
        (batched(boxes, scores, groups, threshold, 24), _nms_reference(boxes, scores, threshold, groups)),
    ]:
        indices, valid = (np.asarray(v) for v in result)
        assert indices[valid].tolist() == expected
        assert valid.tolist() == [True] * len(expected) + [False] * (24 - len(expected))
        assert (indices[~valid] == -1).all()


def test_nms_truncates_and_pads(jitted_nms):
    nms, batched = jitted_nms
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [40, 0, 50, 5]], np.float32)
    scores = np.array([0.9, 0.8, 0.7, 0.95], np.float32)
    # IoU(0, 1) = 81 / 119 > 0.5: box 1 goes; kept by score: 3, 0, 2
    idx, valid = nms(boxes, scores, 0.5, 2)
    assert np.asarray(idx).tolist() == [3, 0] and np.asarray(valid).all()
    idx, valid = nms(boxes, scores, 0.5, 6)
    assert np.asarray(idx).tolist() == [3, 0, 2, -1, -1, -1]
    assert np.asarray(valid).tolist() == [True, True, True, False, False, False]
    # different categories do not suppress each other
    idx, valid = batched(boxes, scores, np.array([0, 1, 0, 0]), 0.5, None)
    assert np.asarray(idx).tolist() == [3, 0, 1, 2]


def test_nms_empty_boxes():
    idx, valid = F.nms(np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), 0.5)
    assert idx.shape == (0,) and valid.shape == (0,)
    idx, valid = F.batched_nms(
        np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), np.zeros(0, int), 0.5, 3
    )
    assert np.asarray(idx).tolist() == [-1, -1, -1] and not np.asarray(valid).any()


# --------------------------------------------------------------------------- RoI Align / Pool


@pytest.fixture(scope="module")
def roi_case():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 7, 9, 3))
    # inside, partly outside, tiny (< 1 px), and one reaching past the far edges
    rois = np.array(
        [
            [0, 1.3, 0.7, 12.1, 9.6],
            [1, -3.3, -2.5, 6.4, 4.1],
            [1, 5.2, 3.3, 5.6, 3.5],
            [0, 8.1, 6.3, 19.7, 15.2],
            [1, 0.0, 0.0, 17.9, 13.9],
        ],
        np.float32,
    )
    return x, rois


@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("ratio", [2, -1])
def test_roi_align_matches_loops(roi_case, aligned, ratio):
    x, rois = roi_case
    scale, out = 0.5, (3, 2)
    ref = _roi_align_reference(x, rois, out, scale, ratio, aligned)
    y = F.roi_align(x.astype(np.float32), rois, out, scale, ratio, aligned)
    np.testing.assert_allclose(np.asarray(y), ref, rtol=1e-5, atol=1e-5)
    y = F.roi_align(np.moveaxis(x, -1, 1).astype(np.float32), rois, out, scale, ratio, aligned, layout="NCHW")
    np.testing.assert_allclose(np.asarray(y), np.moveaxis(ref, -1, 1), rtol=1e-5, atol=1e-5)


def test_roi_align_adaptive_under_jit(roi_case):
    x, rois = roi_case
    scale, out = 0.5, (3, 2)
    inside = rois[[0, 2, 4]]  # boxes within the 7x9 map: the static grid bound is exact for them
    ref = _roi_align_reference(x, inside, out, scale, -1, False)
    f = jax.jit(lambda x, r: F.roi_align(x, r, out, scale))
    np.testing.assert_allclose(np.asarray(f(x.astype(np.float32), inside)), ref, rtol=1e-5, atol=1e-5)
    # list form, one (L_i, 4) array per image
    listed = [inside[inside[:, 0] == i, 1:] for i in range(2)]
    y = F.roi_align(x.astype(np.float32), listed, out, scale)
    order = np.argsort(inside[:, 0], kind="stable")
    np.testing.assert_allclose(np.asarray(y), ref[order], rtol=1e-5, atol=1e-5)
    # one image at a time under vmap (the detectors' way): the same numbers
    per_image = jax.vmap(lambda f, b: F.roi_align(f[None], [b], out, scale, 2))(
        x.astype(np.float32), rois[[0, 1], 1:][:, None]
    )
    ref = _roi_align_reference(x, rois[[0, 1]], out, scale, 2, False)
    np.testing.assert_allclose(np.asarray(per_image)[:, 0], ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("aligned", [False, True])
def test_roi_align_gradient_is_the_adjoint(roi_case, aligned):
    x, rois = roi_case
    scale, out = 0.5, (3, 2)
    g = np.random.default_rng(4).standard_normal((len(rois), *out, x.shape[-1]))
    loss = lambda x: jnp.sum(F.roi_align(x, rois, out, scale, 2, aligned) * g.astype(np.float32))  # noqa: E731
    dx = jax.grad(loss)(x.astype(np.float32))
    ref = _roi_align_adjoint(g, x.shape, rois, out, scale, 2, aligned)
    np.testing.assert_allclose(np.asarray(dx), ref, rtol=1e-5, atol=1e-5)


def test_roi_pool_matches_loops(roi_case):
    x, rois = roi_case
    # corners at exact halves: C's round() takes them away from zero
    halves = np.array([[0, 1.0, 3.0, 9.0, 11.0], [1, -1.0, 1.0, 5.0, 7.0]], np.float32)
    rois = np.concatenate([rois, halves])
    ref = _roi_pool_reference(x, rois, (3, 2), 0.5)
    y = jax.jit(lambda x, r: F.roi_pool(x, r, (3, 2), 0.5))(x.astype(np.float32), rois)
    np.testing.assert_allclose(np.asarray(y), ref, rtol=1e-6, atol=1e-6)
    y = F.roi_pool(np.moveaxis(x, -1, 1).astype(np.float32), rois, (3, 2), 0.5, layout="NCHW")
    np.testing.assert_allclose(np.asarray(y), np.moveaxis(ref, -1, 1), rtol=1e-6, atol=1e-6)
    first = rois[:, 0] == 0  # one image: the broadcast instead of the gather
    y = F.roi_pool(x[:1].astype(np.float32), [rois[first, 1:]], (3, 2), 0.5)
    np.testing.assert_allclose(np.asarray(y), ref[first], rtol=1e-6, atol=1e-6)


def test_roi_ops_accept_no_boxes():
    x = np.zeros((1, 4, 4, 2), np.float32)
    assert F.roi_align(x, np.zeros((0, 5), np.float32), 2).shape == (0, 2, 2, 2)
    assert F.roi_pool(x, np.zeros((0, 5), np.float32), 2, layout="NHWC").shape == (0, 2, 2, 2)


# --------------------------------------------------------------------------- box coding, anchors


def test_encode_decode_hand_values_and_clamp():
    proposals = np.array([[0.0, 0.0, 10.0, 20.0]], np.float32)  # centre (5, 10), size 10 x 20
    gt = np.array([[2.0, 4.0, 22.0, 14.0]], np.float32)  # centre (12, 9), size 20 x 10
    expected = [[10 * 7 / 10, 10 * -1 / 20, 5 * math.log(2.0), 5 * math.log(0.5)]]
    deltas = F.encode_boxes(gt, proposals, (10.0, 10.0, 5.0, 5.0))
    np.testing.assert_allclose(np.asarray(deltas), expected, rtol=1e-6)
    back = F.decode_boxes(deltas, proposals, (10.0, 10.0, 5.0, 5.0))
    np.testing.assert_allclose(np.asarray(back), gt, rtol=1e-5, atol=1e-5)
    # dw = 10 is clamped at log(1000 / 16): width 10 * 62.5 = 625 around centre 5
    huge = F.decode_boxes(np.array([[0.0, 0.0, 10.0, 0.0, 0.0, 0.0, 0.0, 0.0]], np.float32), proposals)
    np.testing.assert_allclose(np.asarray(huge), [[5 - 312.5, 0, 5 + 312.5, 20, 0, 0, 10, 20]], rtol=1e-5)


def test_anchors_follow_torchvision_layout():
    # torchvision's AnchorGenerator((32, 64), (0.5, 1, 2)) cell anchors, ratio-major, rounded
    cells = F.cell_anchors((32, 64), (0.5, 1.0, 2.0))
    expected = [[-23, -11, 23, 11], [-45, -23, 45, 23], [-16, -16, 16, 16], [-32, -32, 32, 32]]
    expected += [[-11, -23, 11, 23], [-23, -45, 23, 45]]
    np.testing.assert_array_equal(cells, np.array(expected, np.float32))
    grid = F.grid_anchors((2, 3), 8, cells)
    assert grid.shape == (2 * 3 * 6, 4)
    # cell (i=1, j=2) is row (1 * 3 + 2) * 6 + a, shifted by (16, 8)
    np.testing.assert_array_equal(grid[(1 * 3 + 2) * 6 + 4], cells[4] + [16, 8, 16, 8])
    both = F.anchors_for_feature_maps((32, 32), [(4, 4), (2, 2)], [(8,), (16,)], [(1.0,), (1.0,)])
    np.testing.assert_array_equal(both[-1], [16 - 8 + 0, 16 - 8, 16 + 8, 16 + 8])  # stride 16, cell (1, 1)
    assert both.shape == (16 + 4, 4)


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: F.box_iou(np.array([[2.0, 0, 1, 1]]), np.zeros((1, 4))), "boxes1.*x2 < x1"),
        (lambda: F.box_area(np.array([[0.0, np.nan, 1, 1]])), "non-finite"),
        (lambda: F.box_iou(np.zeros((3,)), np.zeros((1, 4))), r"boxes1 must have shape \(N, 4\)"),
        (lambda: F.nms(np.zeros((3, 4)), np.zeros((2,)), 0.5), r"scores must have shape \(3,\)"),
        (lambda: F.nms(np.zeros((3, 4)), np.zeros((3,)), 1.5), "iou_threshold"),
        (lambda: F.batched_nms(np.zeros((3, 4)), np.zeros((3,)), np.zeros(2, int), 0.5), "idxs"),
        (lambda: F.roi_align(np.zeros((1, 4, 4, 1)), np.zeros((1, 5)), 0), "output_size"),
        (lambda: F.roi_pool(np.zeros((1, 4, 4, 1)), np.zeros((1, 4)), 2), r"boxes must be \(K, 5\)"),
        (lambda: F.roi_align(np.zeros((4, 4, 1)), np.zeros((1, 5)), 2), "input must have rank 4"),
        (lambda: F.roi_align(np.zeros((1, 4, 4, 1)), np.array([[3.0, 0, 0, 1, 1]]), 2), "batch indices"),
        (lambda: F.box_convert(np.zeros((1, 4)), "xyxy", "xyzw"), "out_fmt"),
        (lambda: F.box_convert(np.array([[0.0, 0, -1, 1]]), "xywh", "xyxy"), "negative width"),
    ],
)
def test_bad_input_raises_value_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()
