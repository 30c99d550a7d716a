"""Losses against torch.nn.functional, NumPy formulas and hand-computed values."""

import functools

import jax
import jax.numpy as jnp
import jax.test_util
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from jaxcnn.functional.losses import (
    binary_cross_entropy,
    binary_cross_entropy_with_logits,
    cross_entropy,
    dice_loss,
    mse,
    nll_loss,
)

RNG = np.random.default_rng(0)
REDUCTIONS = ["mean", "sum", "none"]


def _randn(*shape, scale=1.0):
    return (RNG.normal(size=shape) * scale).astype(np.float32)


def _t(a):
    return torch.tensor(np.asarray(a))


def _close(ours, theirs, tol=1e-5):
    np.testing.assert_allclose(np.asarray(ours), np.asarray(theirs), rtol=tol, atol=tol)


# ----------------------------------------------------------------------------- cross_entropy


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("smoothing", [0.0, 0.2])
@pytest.mark.parametrize("weighted", [False, True])
def test_cross_entropy_index_labels_match_torch(reduction, smoothing, weighted):
    logits = _randn(6, 4, scale=2.0)
    labels = np.array([0, 3, 1, 1, 2, 3])
    weight = RNG.uniform(0.2, 2.0, size=4).astype(np.float32) if weighted else None
    expected = F.cross_entropy(
        _t(logits), _t(labels), weight=None if weight is None else _t(weight),
        reduction=reduction, label_smoothing=smoothing,
    )
    _close(cross_entropy(logits, labels, weight=weight, reduction=reduction, label_smoothing=smoothing), expected.numpy())


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("ignore_index", [-100, 2])
def test_cross_entropy_ignore_index_with_weights_and_smoothing(reduction, ignore_index):
    logits = _randn(7, 4)
    labels = np.array([0, ignore_index, 1, 2, ignore_index, 3, 2])
    weight = RNG.uniform(0.2, 2.0, size=4).astype(np.float32)
    for w in (None, weight):
        expected = F.cross_entropy(
            _t(logits), _t(labels), weight=None if w is None else _t(w), reduction=reduction,
            label_smoothing=0.1, ignore_index=ignore_index,
        )
        ours = cross_entropy(logits, labels, weight=w, reduction=reduction, label_smoothing=0.1, ignore_index=ignore_index)
        _close(ours, expected.numpy())


def test_cross_entropy_segmentation_nhwc_and_nchw_match_torch():
    logits_nchw = _randn(2, 5, 3, 4)
    labels = RNG.integers(0, 5, size=(2, 3, 4))
    labels[0, 0, :2] = 255
    for reduction in REDUCTIONS:
        expected = F.cross_entropy(
            _t(logits_nchw), _t(labels), reduction=reduction, ignore_index=255, label_smoothing=0.05
        ).numpy()
        _close(cross_entropy(logits_nchw, labels, reduction=reduction, ignore_index=255, label_smoothing=0.05, layout="NCHW"), expected)
        nhwc = np.moveaxis(logits_nchw, 1, -1)
        _close(cross_entropy(nhwc, labels, reduction=reduction, ignore_index=255, label_smoothing=0.05), expected)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cross_entropy_probability_labels_match_torch(reduction):
    logits = _randn(2, 4, 3, 3)
    probs = np.asarray(jax.nn.softmax(_randn(2, 4, 3, 3), axis=1))
    weight = RNG.uniform(0.5, 1.5, size=4).astype(np.float32)
    expected = F.cross_entropy(_t(logits), _t(probs), weight=_t(weight), reduction=reduction, label_smoothing=0.3)
    _close(cross_entropy(logits, probs, weight=weight, reduction=reduction, label_smoothing=0.3, layout="NCHW"), expected.numpy())
    # One-hot probability labels give the index-label loss.
    flat = _randn(3, 4)
    one_hot = np.eye(4, dtype=np.float32)[[1, 0, 3]]
    index_form = F.cross_entropy(_t(flat), _t(np.array([1, 0, 3])), reduction=reduction).numpy()
    _close(cross_entropy(flat, one_hot, reduction=reduction), index_form)


def test_cross_entropy_hand_computed_and_unbatched():
    _close(cross_entropy(jnp.array([[0.0, 0.0]]), jnp.array([1])), np.log(2.0))
    # logits (0, ln 3): p = (1/4, 3/4)
    _close(cross_entropy(jnp.array([0.0, np.log(3.0)]), jnp.array(0)), np.log(4.0))
    _close(cross_entropy(jnp.array([0.0, np.log(3.0)]), jnp.array(0), layout="NCHW"), np.log(4.0))
    # smoothing 0.5 over 2 classes: target (0.75, 0.25) on label 0
    expected = -(0.75 * np.log(0.25) + 0.25 * np.log(0.75))
    _close(cross_entropy(jnp.array([[0.0, np.log(3.0)]]), jnp.array([0]), label_smoothing=0.5), expected)


def test_cross_entropy_all_ignored_is_nan_and_bad_label_is_nan():
    logits = _randn(3, 4)
    labels = np.array([-100, -100, -100])
    assert np.isnan(F.cross_entropy(_t(logits), _t(labels)).item())
    assert np.isnan(cross_entropy(logits, labels, ignore_index=-100))
    assert float(cross_entropy(logits, labels, ignore_index=-100, reduction="sum")) == 0.0
    # Out-of-range labels cannot be checked under jit (traced); there the loss is NaN.
    assert np.isnan(jax.jit(cross_entropy)(logits, np.array([0, 4, 1])))
    assert np.isnan(jax.jit(cross_entropy)(logits, np.array([0, -1, 1])))


@pytest.mark.parametrize("labels, position, value", [([0, 4, 1], 1, 4), ([0, 1, -1], 2, -1)])
@pytest.mark.parametrize("loss", ["cross_entropy", "nll_loss"])
def test_concrete_out_of_range_label_raises_like_torch(loss, labels, position, value):
    logits = _randn(3, 4)
    with pytest.raises((IndexError, RuntimeError)):  # PyTorch refuses these labels too.
        getattr(F, loss)(_t(logits), _t(np.array(labels)))
    ours = cross_entropy if loss == "cross_entropy" else nll_loss
    with pytest.raises(ValueError, match=rf"{loss}: labels\[{position}\] = {value} is outside \[0, 4\)"):
        ours(logits, np.array(labels))
    with pytest.raises(ValueError, match=rf"labels\[{position}\] = {value} .* and is not ignore_index=-100"):
        ours(logits, np.array(labels), ignore_index=-100)


def test_ignore_index_semantics_match_torch_for_any_value():
    """ignore_index may lie outside [0, K) (-100, 255, -1) or inside it, as in PyTorch."""
    logits = _randn(2, 5, 3, 3)
    labels = RNG.integers(0, 5, size=(2, 3, 3))
    for ignore in (-100, 255, -1, 2):
        masked = labels.copy()
        masked[0, 1, :] = ignore
        for reduction in ("mean", "sum", "none"):
            expected = F.cross_entropy(_t(logits), _t(masked), ignore_index=ignore, reduction=reduction)
            _close(cross_entropy(logits, masked, ignore_index=ignore, reduction=reduction, layout="NCHW"), expected)
    masked[1, 2, 2] = 7  # Out of range and not the ignored value: position (1, 2, 2) named.
    with pytest.raises(ValueError, match=r"labels\[1, 2, 2\] = 7 is outside \[0, 5\) and is not ignore_index=2"):
        cross_entropy(logits, masked, ignore_index=2, layout="NCHW")


def test_cross_entropy_check_grads_and_grad_matches_torch():
    with jax.enable_x64(True):
        logits = jnp.asarray(RNG.normal(size=(3, 4)))
        labels = jnp.array([0, 3, 1])
        fn = jax.jit(lambda z: cross_entropy(z, labels, label_smoothing=0.1))
        jax.test_util.check_grads(fn, (logits,), order=1, modes=("fwd", "rev"))
        probs = jax.nn.softmax(jnp.asarray(RNG.normal(size=(3, 4))))
        jax.test_util.check_grads(jax.jit(lambda z: cross_entropy(z, probs)), (logits,), order=1, modes=("rev",))
    logits = _randn(5, 3, 2, 2)
    labels = RNG.integers(0, 3, size=(5, 2, 2))
    tl = _t(logits).requires_grad_()
    F.cross_entropy(tl, _t(labels), label_smoothing=0.1).backward()
    grad = jax.grad(lambda z: cross_entropy(z, labels, label_smoothing=0.1, layout="NCHW"))(logits)
    _close(grad, tl.grad.numpy())


def test_cross_entropy_jit_vmap_bf16():
    logits = _randn(4, 2, 2, 3)
    labels = RNG.integers(0, 3, size=(4, 2, 2))
    eager = cross_entropy(logits, labels, reduction="none")
    _close(jax.jit(functools.partial(cross_entropy, reduction="none"))(logits, labels), eager, 1e-6)
    _close(jax.vmap(functools.partial(cross_entropy, reduction="none"))(logits, labels), eager, 1e-6)
    lb = jnp.asarray(logits, jnp.bfloat16)
    loss = cross_entropy(lb, labels)
    assert loss.dtype == jnp.float32  # losses are computed in float32 for bf16 logits
    expected = F.cross_entropy(_t(np.moveaxis(np.asarray(lb, np.float32), -1, 1)), _t(labels))
    _close(loss, expected.numpy())
    assert jax.grad(lambda z: cross_entropy(z, labels))(lb).dtype == jnp.bfloat16


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: cross_entropy(np.ones((4, 3), np.float32), np.zeros((3,), np.int32)), ValueError, r"cross_entropy: integer labels must have the shape of logits without its class axis 1 \(layout NHWC\), i.e. \(4,\); got labels of shape \(3,\)"),
        (lambda: cross_entropy(np.ones((2, 3, 4, 5), np.float32), np.zeros((2, 4, 5), np.int32)), ValueError, r"i.e. \(2, 3, 4\); got labels of shape \(2, 4, 5\) for logits of shape \(2, 3, 4, 5\)"),
        (lambda: cross_entropy(np.ones((2, 3, 4, 5), np.float32), np.zeros((2, 3, 4), np.int32), layout="NCHW"), ValueError, r"class axis 1 \(layout NCHW\), i.e. \(2, 4, 5\)"),
        (lambda: cross_entropy(np.ones((4, 3), np.float32), np.zeros((4, 2), np.float32)), ValueError, r"floating \(probability\) labels must have the shape of logits \(4, 3\), got \(4, 2\)"),
        (lambda: cross_entropy(np.ones((4, 3), np.float32), np.zeros((4,), np.int32), reduction="avg"), ValueError, r"unknown reduction='avg'"),
        (lambda: cross_entropy(np.ones((4, 3), np.float32), np.zeros((4,), np.int32), layout="NWHC"), ValueError, r"unknown layout='NWHC'"),
        (lambda: cross_entropy(np.ones((4, 3), np.float32), np.zeros((4,), np.int32), label_smoothing=1.5), ValueError, r"label_smoothing must be in \[0, 1\]"),
        (lambda: cross_entropy(np.ones((4, 3), np.float32), np.zeros((4,), np.int32), weight=np.ones(4, np.float32)), ValueError, r"weight must have shape \(3,\) \(one per class\), got \(4,\)"),
        (lambda: cross_entropy(np.ones((4, 3), np.float32), np.zeros((4, 3), np.float32), ignore_index=0), ValueError, r"ignore_index works with integer labels only"),
        (lambda: cross_entropy(np.ones((4, 3), np.float32), np.zeros((4,), bool)), TypeError, r"labels must be integer class indices or floating class probabilities"),
        (lambda: cross_entropy(np.ones((4, 3), np.int32), np.zeros((4,), np.int32)), TypeError, r"cross_entropy: logits must have a floating dtype"),
        (lambda: cross_entropy(np.ones((4, 3), np.float32), np.zeros((4,), np.int32), ignore_index=1.0), TypeError, r"ignore_index must be an int or None"),
        (lambda: nll_loss(np.ones((4, 3), np.float32), np.zeros((4,), np.float32)), TypeError, r"nll_loss: labels must be integer class indices"),
        (lambda: nll_loss(np.ones((4, 3), np.float32), np.zeros((5,), np.int32)), ValueError, r"nll_loss: integer labels must have the shape of log_probs"),
    ],
)
def test_cross_entropy_and_nll_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()


# ----------------------------------------------------------------------------- nll_loss


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_nll_loss_matches_torch(reduction):
    logp = np.asarray(jax.nn.log_softmax(_randn(2, 4, 3, 3), axis=1))
    labels = RNG.integers(0, 4, size=(2, 3, 3))
    labels[1, 1, 1] = -100
    weight = RNG.uniform(0.5, 1.5, size=4).astype(np.float32)
    expected = F.nll_loss(_t(logp), _t(labels), weight=_t(weight), reduction=reduction)
    _close(nll_loss(logp, labels, weight=weight, reduction=reduction, ignore_index=-100, layout="NCHW"), expected.numpy())


# ----------------------------------------------------------------------------- binary losses, mse


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_binary_cross_entropy_matches_torch_including_clamping(reduction):
    probs = RNG.uniform(0.01, 0.99, size=(4, 3)).astype(np.float32)
    probs[0, :2] = [0.0, 1.0]  # log clamped to -100
    targets = RNG.uniform(0, 1, size=(4, 3)).astype(np.float32)
    weight = RNG.uniform(0.5, 1.5, size=(3,)).astype(np.float32)
    expected = F.binary_cross_entropy(_t(probs), _t(targets), weight=_t(weight), reduction=reduction)
    _close(binary_cross_entropy(probs, targets, weight=weight, reduction=reduction), expected.numpy(), 1e-4)
    _close(binary_cross_entropy(jnp.array([0.25]), jnp.array([1.0]), reduction=reduction), [np.log(4.0)] if reduction == "none" else np.log(4.0))


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_binary_cross_entropy_with_logits_matches_torch(reduction):
    logits = _randn(4, 3, scale=5.0)
    logits[0, :2] = [80.0, -80.0]  # stable for large logits
    targets = RNG.uniform(0, 1, size=(4, 3)).astype(np.float32)
    weight = RNG.uniform(0.5, 1.5, size=(4, 1)).astype(np.float32)
    pos_weight = RNG.uniform(0.5, 3.0, size=(3,)).astype(np.float32)
    expected = F.binary_cross_entropy_with_logits(
        _t(logits), _t(targets), weight=_t(weight), pos_weight=_t(pos_weight), reduction=reduction
    )
    ours = binary_cross_entropy_with_logits(logits, targets, weight=weight, pos_weight=pos_weight, reduction=reduction)
    _close(ours, expected.numpy())
    expected = F.binary_cross_entropy_with_logits(_t(logits), _t(targets), reduction=reduction)
    _close(binary_cross_entropy_with_logits(logits, targets, reduction=reduction), expected.numpy())
    assert np.isfinite(np.asarray(jax.grad(lambda z: binary_cross_entropy_with_logits(z, targets))(logits))).all()


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_mse_matches_torch(reduction):
    a, b = _randn(3, 4, 2), _randn(3, 4, 2)
    _close(mse(a, b, reduction=reduction), F.mse_loss(_t(a), _t(b), reduction=reduction).numpy())
    _close(mse(jnp.array([1.0, 2.0]), jnp.array([0.0, 4.0])), 2.5)
    assert mse(jnp.asarray(a, jnp.bfloat16), jnp.asarray(b, jnp.bfloat16)).dtype == jnp.float32


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: binary_cross_entropy(np.ones((4, 3), np.float32), np.ones((4,), np.float32)), ValueError, r"binary_cross_entropy: targets must have the shape of probs \(4, 3\), got \(4,\)"),
        (lambda: binary_cross_entropy(np.ones((4, 3), np.float32), np.ones((4, 3), np.float32), weight=np.ones(4, np.float32)), ValueError, r"weight of shape \(4,\) does not broadcast to the input shape \(4, 3\)"),
        (lambda: binary_cross_entropy(np.ones((4, 3), np.float32), np.ones((4, 3), np.int32)), TypeError, r"targets must have a floating dtype"),
        (lambda: binary_cross_entropy_with_logits(np.ones((4, 3), np.float32), np.ones((4, 3), np.float32), pos_weight=np.ones((2,), np.float32)), ValueError, r"pos_weight of shape \(2,\) does not broadcast"),
        (lambda: binary_cross_entropy_with_logits(np.ones((4, 3), np.float32), np.ones((4, 3), np.float32), reduction=None), ValueError, r"unknown reduction=None"),
        (lambda: mse(np.ones((4, 3), np.float32), np.ones((3, 4), np.float32)), ValueError, r"mse: targets must have the shape of predictions \(4, 3\), got \(3, 4\)"),
    ],
)
def test_binary_and_mse_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()


# ----------------------------------------------------------------------------- dice_loss


def _dice_reference(probs_nhwc, one_hot_nhwc, eps):
    """Loop over classes, sums over everything else (batch-pooled soft dice)."""
    k = probs_nhwc.shape[-1]
    out = []
    for c in range(k):
        p = probs_nhwc[..., c].astype(np.float64)
        t = one_hot_nhwc[..., c].astype(np.float64)
        out.append(1.0 - (2.0 * (p * t).sum() + eps) / (p.sum() + t.sum() + eps))
    return np.array(out)


def _np_softmax(z, axis):
    e = np.exp(z - z.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


@pytest.mark.parametrize("eps", [1.0, 1e-5])
def test_dice_loss_matches_numpy_reference(eps):
    logits = _randn(2, 3, 4, 3, scale=2.0)
    labels = RNG.integers(0, 3, size=(2, 3, 4))
    per_class = _dice_reference(_np_softmax(logits.astype(np.float64), -1), np.eye(3)[labels], eps)
    _close(dice_loss(logits, labels, eps=eps, reduction="none"), per_class)
    _close(dice_loss(logits, labels, eps=eps), per_class.mean())
    _close(dice_loss(logits, labels, eps=eps, reduction="sum"), per_class.sum())
    nchw = np.moveaxis(logits, -1, 1)
    _close(dice_loss(nchw, labels, eps=eps, layout="NCHW", reduction="none"), per_class)


def test_dice_loss_hand_computed_and_variants():
    # Perfect one-hot prediction: loss 0. Totally wrong: 2*0+eps / (2+eps).
    probs = jnp.array([[1.0, 0.0], [0.0, 1.0]])
    _close(dice_loss(probs, jnp.array([0, 1]), activation=None, eps=0.0), 0.0)
    _close(dice_loss(probs, jnp.array([1, 0]), activation=None, eps=1.0, reduction="none"), [1 - 1 / 3, 1 - 1 / 3])
    # A class absent from labels and predictions scores dice 1 (loss 0) thanks to eps.
    _close(dice_loss(jnp.array([[1.0, 0.0, 0.0]]), jnp.array([0]), activation=None, reduction="none"), [0.0, 0.0, 0.0])
    # sigmoid with one channel and float targets.
    logits = _randn(2, 3, 3, 1)
    targets = (RNG.uniform(size=(2, 3, 3, 1)) > 0.5).astype(np.float32)
    expected = _dice_reference(1 / (1 + np.exp(-logits.astype(np.float64))), targets, 1.0)
    _close(dice_loss(logits, targets, activation="sigmoid", reduction="none"), expected)
    # ignore_index drops the position from every sum.
    labels = np.array([[0, 1, 255]])
    logits = _randn(1, 3, 2)
    expected = _dice_reference(_np_softmax(logits[:, :2].astype(np.float64), -1), np.eye(2)[labels[:, :2]], 1.0)
    _close(dice_loss(logits, labels, ignore_index=255, reduction="none"), expected)
    assert np.isnan(dice_loss(logits, np.array([[0, 1, 7]])))


def test_dice_loss_grad_jit_bf16():
    logits = _randn(2, 3, 3, 4)
    labels = RNG.integers(0, 4, size=(2, 3, 3))
    grad = jax.grad(lambda z: dice_loss(z, labels))(logits)
    assert np.isfinite(np.asarray(grad)).all() and np.abs(np.asarray(grad)).sum() > 0
    _close(jax.jit(dice_loss)(logits, labels), dice_loss(logits, labels), 1e-6)
    loss = dice_loss(jnp.asarray(logits, jnp.bfloat16), labels)
    assert loss.dtype == jnp.float32
    _close(loss, dice_loss(logits, labels), 2e-2)


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: dice_loss(np.ones((2, 4, 4, 1), np.float32), np.zeros((2, 4, 4), np.int32)), ValueError, r"dice_loss: softmax over a single class .* use activation='sigmoid'"),
        (lambda: dice_loss(np.ones((2, 4, 4, 3), np.float32), np.zeros((2, 4, 3), np.int32)), ValueError, r"dice_loss: integer labels must have the shape of inputs without its class axis 3 .* i.e. \(2, 4, 4\); got labels of shape \(2, 4, 3\)"),
        (lambda: dice_loss(np.ones((2, 3), np.float32), np.zeros((2, 2), np.float32)), ValueError, r"floating labels must have the shape of inputs \(2, 3\), got \(2, 2\)"),
        (lambda: dice_loss(np.ones((2, 3), np.float32), np.zeros((2,), np.int32), activation="relu"), ValueError, r"unknown activation='relu'"),
        (lambda: dice_loss(np.ones((2, 3), np.float32), np.zeros((2,), np.int32), eps=-1.0), ValueError, r"eps must be a number >= 0"),
        (lambda: dice_loss(np.ones((2, 3), np.float32), np.zeros((2,), np.int32), reduction="batch"), ValueError, r"unknown reduction='batch'"),
    ],
)
def test_dice_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()
