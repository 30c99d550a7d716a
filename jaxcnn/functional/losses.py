"""Classification, segmentation and regression losses with PyTorch's semantics.

Scores carry a class axis of size ``K``: the last axis for ``layout="NHWC"`` (default; e.g.
``(N, K)`` or segmentation logits ``(N, H, W, K)``) or axis 1 for ``layout="NCHW"`` (PyTorch's
``(N, K)`` / ``(N, K, H, W)``; axis 0 for a single unbatched ``(K,)`` vector). Losses are
computed and returned in float32 for bfloat16/float16 inputs (float64 for float64).

Integer labels whose value is outside ``[0, K)`` (and is not ``ignore_index``): concrete
labels are refused with a ``ValueError`` naming the label and its position, as PyTorch does;
traced labels (inside ``jit``/``vmap``/``grad``) cannot be checked, and the loss is NaN there
so the error is still loud.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxcnn.functional import _arguments as args

REDUCTIONS = ("mean", "sum", "none")


def class_axis(ndim: int, layout: str, op: str) -> int:
    """The class axis of a rank-``ndim`` score array in ``layout`` (see the module docstring)."""
    last = args.channels_last(layout, op, ndim - 2 if ndim > 2 else None)
    return ndim - 1 if (last or ndim == 1) else 1


def _check_reduction(reduction: Any, op: str) -> str:
    if reduction not in REDUCTIONS:
        raise ValueError(f"{op}: unknown reduction={reduction!r}; expected one of {REDUCTIONS}")
    return reduction


def _compute_dtype(*dtypes: Any) -> Any:
    """float64 if any input is float64, else float32 (also for bfloat16/float16 inputs)."""
    if any(jnp.dtype(d) == jnp.float64 for d in dtypes):
        return jnp.dtype(jnp.float64)
    return jnp.dtype(jnp.float32)


def _scores(x: Any, name: str, layout: str, op: str) -> tuple[jnp.ndarray, int]:
    x = args.as_array(x, name, op)
    args.check_floating(x, name, op)
    if x.ndim < 1:
        raise ValueError(f"{op}: {name} must have a class axis, got a scalar")
    axis = class_axis(x.ndim, layout, op)
    if x.shape[axis] < 1:
        raise ValueError(f"{op}: {name} of shape {tuple(x.shape)} has no classes on axis {axis}")
    return x, axis


def _check_index_labels(labels: jnp.ndarray, scores: jnp.ndarray, axis: int, layout: str, op: str, name: str) -> None:
    expected = tuple(s for a, s in enumerate(scores.shape) if a != axis)
    if tuple(labels.shape) != expected:
        raise ValueError(
            f"{op}: integer labels must have the shape of {name} without its class axis {axis} "
            f"(layout {layout}), i.e. {expected}; got labels of shape {tuple(labels.shape)} for "
            f"{name} of shape {tuple(scores.shape)}"
        )


def _check_label_kind(labels: jnp.ndarray, op: str) -> bool:
    """True for integer class indices, False for floating probabilities; raises otherwise."""
    if jnp.issubdtype(labels.dtype, jnp.integer):
        return True
    if jnp.issubdtype(labels.dtype, jnp.floating):
        return False
    raise TypeError(
        f"{op}: labels must be integer class indices or floating class probabilities, got dtype "
        f"{labels.dtype} (shape {tuple(labels.shape)})"
    )


def _check_class_weight(weight: Any, k: int, op: str) -> jnp.ndarray | None:
    if weight is None:
        return None
    weight = args.as_array(weight, "weight", op)
    if weight.shape != (k,):
        raise ValueError(f"{op}: weight must have shape ({k},) (one per class), got {tuple(weight.shape)}")
    args.check_floating(weight, "weight", op)
    return weight


def _check_ignore_index(ignore_index: Any, op: str) -> int | None:
    if ignore_index is None:
        return None
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, (int, np.integer)):
        raise TypeError(f"{op}: ignore_index must be an int or None, got {ignore_index!r}")
    return int(ignore_index)


def _check_fraction(value: Any, name: str, op: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise TypeError(f"{op}: {name} must be a Python number, got {type(value).__name__}")
    value = float(value)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{op}: {name} must be in [0, 1], got {value!r}")
    return value


def _class_shape(ndim: int, axis: int, k: int) -> tuple[int, ...]:
    shape = [1] * ndim
    shape[axis] = k
    return tuple(shape)


def _nll_terms(logp, labels, weight, ignore_index, axis):
    """Per-position ``-w[y] * logp[y]`` (0 where ignored, NaN for out-of-range labels), ``w[y]``
    (0 where ignored) and the ignored mask."""
    k = logp.shape[axis]
    in_range = (labels >= 0) & (labels < k)
    ignored = (labels == ignore_index) if ignore_index is not None else jnp.zeros(labels.shape, jnp.bool_)
    safe = jnp.where(in_range, labels, 0)
    picked = jnp.take_along_axis(logp, jnp.expand_dims(safe, axis), axis=axis).squeeze(axis)
    w = jnp.ones(labels.shape, logp.dtype) if weight is None else weight.astype(logp.dtype)[safe]
    nll = -w * picked
    nll = jnp.where(ignored, jnp.zeros((), logp.dtype), jnp.where(in_range, nll, jnp.full((), jnp.nan, logp.dtype)))
    w = jnp.where(ignored, jnp.zeros((), logp.dtype), w)
    return nll, w, ignored


def _reduce_indexed(per_position, w, reduction):
    if reduction == "none":
        return per_position
    if reduction == "sum":
        return jnp.sum(per_position)
    return jnp.sum(per_position) / jnp.sum(w)


def cross_entropy(
    logits: Any,
    labels: Any,
    *,
    weight: Any = None,
    label_smoothing: float = 0.0,
    reduction: str = "mean",
    ignore_index: int | None = None,
    layout: str = "NHWC",
) -> jnp.ndarray:
    """Softmax cross-entropy, ``torch.nn.functional.cross_entropy`` semantics.

    Args:
      logits: unnormalised class scores, ``(N, K)``, ``(K,)`` or ``(N, *spatial, K)``
        (``layout="NHWC"``, class axis last) / ``(N, K, *spatial)`` (``layout="NCHW"``).
      labels: the kind is decided by dtype:

        * integer: class indices of the shape of ``logits`` without the class axis, e.g.
          ``(N,)`` or ``(N, H, W)`` for segmentation;
        * floating: class probabilities (one-hot or soft) of the shape of ``logits``.

      weight: optional ``(K,)`` per-class rescaling (PyTorch's ``weight``).
      label_smoothing: in ``[0, 1]``; the target becomes ``(1 - s) * target + s / K``.
      reduction: ``"mean"``, ``"sum"`` or ``"none"`` (per position, the labels' shape without
        a class axis).
      ignore_index: integer labels equal to it contribute 0 and are left out of the mean
        (PyTorch's default is -100; here ``None`` ignores nothing). Not for probability labels.
        Any other label outside ``[0, K)`` raises ``ValueError`` (label and position) when the
        labels are concrete, and makes the loss NaN under ``jit`` (traced labels).
      layout: where the class axis is (see the module docstring).

    With integer labels and ``reduction="mean"`` the sum is divided by the summed weight of
    the non-ignored labels (``weight[y]``, or their count), as in PyTorch — NaN when every
    label is ignored. With probability labels the mean is over positions and ignores
    ``weight``. In formulas, per position with ``p = log_softmax(logits)``::

      loss = -(1 - s) * w[y] * p[y] - (s / K) * sum_k w[k] * p[k]          (indices)
      loss = -sum_k w[k] * ((1 - s) * q[k] + s / K) * p[k]                 (probabilities q)

    Example: ``cross_entropy(jnp.array([[0., 0.]]), jnp.array([1]))`` is ``log 2``.
    """
    op = "cross_entropy"
    logits, axis = _scores(logits, "logits", layout, op)
    labels = args.as_array(labels, "labels", op)
    reduction = _check_reduction(reduction, op)
    label_smoothing = _check_fraction(label_smoothing, "label_smoothing", op)
    ignore_index = _check_ignore_index(ignore_index, op)
    k = logits.shape[axis]
    weight = _check_class_weight(weight, k, op)
    indices = _check_label_kind(labels, op)
    if indices:
        _check_index_labels(labels, logits, axis, layout, op, "logits")
        args.check_label_range(labels, k, op, ignore_index=ignore_index)
        return _cross_entropy_indices(
            logits, labels, weight, axis=axis, label_smoothing=label_smoothing, reduction=reduction,
            ignore_index=ignore_index,
        )
    if labels.shape != logits.shape:
        raise ValueError(
            f"{op}: floating (probability) labels must have the shape of logits "
            f"{tuple(logits.shape)}, got {tuple(labels.shape)}; pass integer labels for class "
            f"indices"
        )
    if ignore_index is not None:
        raise ValueError(f"{op}: ignore_index works with integer labels only, got floating labels {labels.dtype}")
    return _cross_entropy_probs(logits, labels, weight, axis=axis, label_smoothing=label_smoothing, reduction=reduction)


# The numeric cores are jitted so that eager calls compile once per shape instead of
# dispatching op by op; inside a caller's jit/vmap/grad they are simply inlined.


@functools.partial(jax.jit, static_argnames=("axis", "label_smoothing", "reduction", "ignore_index"))
def _cross_entropy_indices(logits, labels, weight, *, axis, label_smoothing, reduction, ignore_index):
    cdt = _compute_dtype(logits.dtype)
    k = logits.shape[axis]
    logp = jax.nn.log_softmax(logits.astype(cdt), axis=axis)
    nll, w, ignored = _nll_terms(logp, labels, weight, ignore_index, axis)
    if label_smoothing == 0.0:
        return _reduce_indexed(nll, w, reduction)
    weighted = logp if weight is None else logp * weight.astype(cdt).reshape(_class_shape(logits.ndim, axis, k))
    smooth = jnp.where(ignored, jnp.zeros((), cdt), -jnp.sum(weighted, axis=axis))
    per_position = (1.0 - label_smoothing) * nll + (label_smoothing / k) * smooth
    return _reduce_indexed(per_position, w, reduction)


@functools.partial(jax.jit, static_argnames=("axis", "label_smoothing", "reduction"))
def _cross_entropy_probs(logits, labels, weight, *, axis, label_smoothing, reduction):
    cdt = _compute_dtype(logits.dtype, labels.dtype)
    k = logits.shape[axis]
    logp = jax.nn.log_softmax(logits.astype(cdt), axis=axis)
    target = labels.astype(cdt)
    if label_smoothing:
        target = target * (1.0 - label_smoothing) + label_smoothing / k
    if weight is not None:
        logp = logp * weight.astype(cdt).reshape(_class_shape(logits.ndim, axis, k))
    return _reduce(-jnp.sum(logp * target, axis=axis), reduction)


def nll_loss(
    log_probs: Any,
    labels: Any,
    *,
    weight: Any = None,
    reduction: str = "mean",
    ignore_index: int | None = None,
    layout: str = "NHWC",
) -> jnp.ndarray:
    """Negative log-likelihood of integer labels, ``F.nll_loss`` semantics.

    Args:
      log_probs: log-probabilities (e.g. :func:`log_softmax` output), shaped like the
        ``logits`` of :func:`cross_entropy`.
      labels: integer class indices, the shape of ``log_probs`` without the class axis.
      weight, reduction, ignore_index, layout: as in :func:`cross_entropy`; the mean divides
        by the summed ``weight[y]`` of the non-ignored labels.

    ``cross_entropy(logits, y) == nll_loss(log_softmax(logits), y)``.
    """
    op = "nll_loss"
    log_probs, axis = _scores(log_probs, "log_probs", layout, op)
    labels = args.as_array(labels, "labels", op)
    reduction = _check_reduction(reduction, op)
    ignore_index = _check_ignore_index(ignore_index, op)
    weight = _check_class_weight(weight, log_probs.shape[axis], op)
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        raise TypeError(f"{op}: labels must be integer class indices, got dtype {labels.dtype}")
    _check_index_labels(labels, log_probs, axis, layout, op, "log_probs")
    args.check_label_range(labels, log_probs.shape[axis], op, ignore_index=ignore_index)
    return _nll_loss(log_probs, labels, weight, axis=axis, reduction=reduction, ignore_index=ignore_index)


@functools.partial(jax.jit, static_argnames=("axis", "reduction", "ignore_index"))
def _nll_loss(log_probs, labels, weight, *, axis, reduction, ignore_index):
    logp = log_probs.astype(_compute_dtype(log_probs.dtype))
    nll, w, _ = _nll_terms(logp, labels, weight, ignore_index, axis)
    return _reduce_indexed(nll, w, reduction)


def _same_shape_float(a: Any, b: Any, names: tuple[str, str], op: str) -> tuple[jnp.ndarray, jnp.ndarray]:
    a = args.as_array(a, names[0], op)
    b = args.as_array(b, names[1], op)
    args.check_floating(a, names[0], op)
    args.check_floating(b, names[1], op)
    if a.shape != b.shape:
        raise ValueError(
            f"{op}: {names[1]} must have the shape of {names[0]} {tuple(a.shape)}, got {tuple(b.shape)}"
        )
    return a, b


def _check_broadcast(weight: Any, name: str, shape: tuple[int, ...], op: str) -> jnp.ndarray | None:
    if weight is None:
        return None
    weight = args.as_array(weight, name, op)
    args.check_floating(weight, name, op)
    try:
        ok = np.broadcast_shapes(tuple(weight.shape), shape) == shape
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(f"{op}: {name} of shape {tuple(weight.shape)} does not broadcast to the input shape {shape}")
    return weight


def _reduce(per_element: jnp.ndarray, reduction: str) -> jnp.ndarray:
    if reduction == "none":
        return per_element
    return jnp.sum(per_element) if reduction == "sum" else jnp.mean(per_element)


def binary_cross_entropy(probs: Any, targets: Any, *, weight: Any = None, reduction: str = "mean") -> jnp.ndarray:
    """Binary cross-entropy of probabilities, ``F.binary_cross_entropy`` semantics.

    ``loss = -w * (t * log(p) + (1 - t) * log(1 - p))`` with each log clamped to ``>= -100``
    as PyTorch does, so ``p = 0`` or ``1`` gives a finite loss.

    Args:
      probs: probabilities in ``[0, 1]``, any shape (values outside give NaN; PyTorch raises).
      targets: floating targets in ``[0, 1]``, the shape of ``probs``.
      weight: optional, broadcastable to the shape of ``probs``.
      reduction: ``"mean"`` (over all elements), ``"sum"`` or ``"none"``.
    Prefer :func:`binary_cross_entropy_with_logits`, which is stable for large logits.
    """
    op = "binary_cross_entropy"
    probs, targets = _same_shape_float(probs, targets, ("probs", "targets"), op)
    reduction = _check_reduction(reduction, op)
    weight = _check_broadcast(weight, "weight", tuple(probs.shape), op)
    return _binary_cross_entropy(probs, targets, weight, reduction=reduction)


@functools.partial(jax.jit, static_argnames=("reduction",))
def _binary_cross_entropy(probs, targets, weight, *, reduction):
    cdt = _compute_dtype(probs.dtype, targets.dtype)
    p, t = probs.astype(cdt), targets.astype(cdt)
    log_p = jnp.maximum(jnp.log(p), -100.0)
    log_1mp = jnp.maximum(jnp.log1p(-p), -100.0)
    loss = -(t * log_p + (1.0 - t) * log_1mp)
    if weight is not None:
        loss = loss * jnp.broadcast_to(weight.astype(cdt), loss.shape)
    return _reduce(loss, reduction)


def binary_cross_entropy_with_logits(
    logits: Any, targets: Any, *, weight: Any = None, pos_weight: Any = None, reduction: str = "mean"
) -> jnp.ndarray:
    """Sigmoid + binary cross-entropy in one stable expression (``F.binary_cross_entropy_with_logits``).

    ``loss = w * ((1 - t) * x + (1 + (pos_weight - 1) * t) * softplus(-x))``, which equals
    ``-w * (pos_weight * t * log(sigmoid(x)) + (1 - t) * log(1 - sigmoid(x)))``.

    Args:
      logits: any shape, floating.
      targets: floating targets in ``[0, 1]``, the shape of ``logits``.
      weight: optional, broadcastable to the shape of ``logits``.
      pos_weight: optional weight of the positive term, broadcastable to the shape of
        ``logits`` (e.g. ``(K,)`` for multi-label ``(N, K)`` logits).
      reduction: ``"mean"`` (over all elements), ``"sum"`` or ``"none"``.
    """
    op = "binary_cross_entropy_with_logits"
    logits, targets = _same_shape_float(logits, targets, ("logits", "targets"), op)
    reduction = _check_reduction(reduction, op)
    weight = _check_broadcast(weight, "weight", tuple(logits.shape), op)
    pos_weight = _check_broadcast(pos_weight, "pos_weight", tuple(logits.shape), op)
    return _binary_cross_entropy_with_logits(logits, targets, weight, pos_weight, reduction=reduction)


@functools.partial(jax.jit, static_argnames=("reduction",))
def _binary_cross_entropy_with_logits(logits, targets, weight, pos_weight, *, reduction):
    cdt = _compute_dtype(logits.dtype, targets.dtype)
    x, t = logits.astype(cdt), targets.astype(cdt)
    # softplus(-x) = -log(sigmoid(x)), computed without overflow for large |x|.
    if pos_weight is None:
        loss = (1.0 - t) * x + jax.nn.softplus(-x)
    else:
        log_weight = 1.0 + (jnp.broadcast_to(pos_weight.astype(cdt), x.shape) - 1.0) * t
        loss = (1.0 - t) * x + log_weight * jax.nn.softplus(-x)
    if weight is not None:
        loss = loss * jnp.broadcast_to(weight.astype(cdt), loss.shape)
    return _reduce(loss, reduction)


def mse(predictions: Any, targets: Any, *, reduction: str = "mean") -> jnp.ndarray:
    """Squared error ``(predictions - targets) ** 2`` (``F.mse_loss``); the shapes must match.

    Args:
      predictions: a floating array of any shape, e.g. ``(N, D)``.
      targets: a floating array of the same shape.
      reduction: ``"mean"`` over all elements, ``"sum"`` or ``"none"``.

    Returns:
      A scalar (``"mean"``, ``"sum"``), or the squared errors of the inputs' shape (``"none"``).

    Raises:
      ValueError: the shapes differ, or ``reduction`` is unknown.
      TypeError: an input is not floating.
    """
    op = "mse"
    predictions, targets = _same_shape_float(predictions, targets, ("predictions", "targets"), op)
    reduction = _check_reduction(reduction, op)
    return _mse(predictions, targets, reduction=reduction)


@functools.partial(jax.jit, static_argnames=("reduction",))
def _mse(predictions, targets, *, reduction):
    cdt = _compute_dtype(predictions.dtype, targets.dtype)
    diff = predictions.astype(cdt) - targets.astype(cdt)
    return _reduce(diff * diff, reduction)


DICE_ACTIVATIONS = ("softmax", "sigmoid", None)


def dice_loss(
    inputs: Any,
    labels: Any,
    *,
    activation: str | None = "softmax",
    eps: float = 1.0,
    reduction: str = "mean",
    ignore_index: int | None = None,
    layout: str = "NHWC",
) -> jnp.ndarray:
    """Soft Dice loss per class, pooled over the batch and all spatial positions.

    With ``p`` the class probabilities and ``t`` the one-hot (or given soft) targets, for each
    class ``k``, summing over every position ``i`` of every example (the batch is pooled)::

      dice[k] = (2 * sum_i p[i, k] * t[i, k] + eps) / (sum_i p[i, k] + sum_i t[i, k] + eps)
      loss[k] = 1 - dice[k]

    The smoothing ``eps`` (default 1, in numerator and denominator) makes a class absent from
    both prediction and target score ``dice = 1`` and keeps the gradient finite.

    Args:
      inputs: ``(N, *spatial, K)`` (NHWC) or ``(N, K, *spatial)`` (NCHW) class scores; also
        ``(N, K)``.
      labels: integer class indices (the shape of ``inputs`` without the class axis; one-hot
        encoded here) or floating targets of the shape of ``inputs``.
      activation: ``"softmax"`` over the class axis (logits, one label per position),
        ``"sigmoid"`` per element (independent classes, e.g. one-channel binary masks), or
        ``None`` when ``inputs`` already are probabilities.
      eps: smoothing, ``>= 0``.
      reduction: ``"mean"`` (over classes, a scalar), ``"sum"`` (over classes) or ``"none"``
        (the ``(K,)`` per-class losses; e.g. ``[1:].mean()`` leaves out a background class).
      ignore_index: integer labels equal to it leave their position out of every sum.
      layout: where the class axis is.
    """
    op = "dice_loss"
    inputs, axis = _scores(inputs, "inputs", layout, op)
    labels = args.as_array(labels, "labels", op)
    reduction = _check_reduction(reduction, op)
    ignore_index = _check_ignore_index(ignore_index, op)
    if activation not in DICE_ACTIVATIONS:
        raise ValueError(f"{op}: unknown activation={activation!r}; expected one of {DICE_ACTIVATIONS}")
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or eps < 0:
        raise ValueError(f"{op}: eps must be a number >= 0, got {eps!r}")
    k = inputs.shape[axis]
    if activation == "softmax" and k == 1:
        raise ValueError(
            f"{op}: softmax over a single class is constantly 1 (inputs shape {tuple(inputs.shape)}); "
            f"use activation='sigmoid' for one-channel binary masks"
        )
    if _check_label_kind(labels, op):
        _check_index_labels(labels, inputs, axis, layout, op, "inputs")
    else:
        if labels.shape != inputs.shape:
            raise ValueError(
                f"{op}: floating labels must have the shape of inputs {tuple(inputs.shape)}, got "
                f"{tuple(labels.shape)}; pass integer labels for class indices"
            )
        if ignore_index is not None:
            raise ValueError(f"{op}: ignore_index works with integer labels only, got floating labels")
    return _dice_loss(
        inputs, labels, axis=axis, activation=activation, eps=float(eps), reduction=reduction,
        ignore_index=ignore_index,
    )


@functools.partial(jax.jit, static_argnames=("axis", "activation", "eps", "reduction", "ignore_index"))
def _dice_loss(inputs, labels, *, axis, activation, eps, reduction, ignore_index):
    k = inputs.shape[axis]
    indices = jnp.issubdtype(labels.dtype, jnp.integer)
    cdt = _compute_dtype(inputs.dtype, inputs.dtype if indices else labels.dtype)
    x = inputs.astype(cdt)
    if activation == "softmax":
        p = jax.nn.softmax(x, axis=axis)
    elif activation == "sigmoid":
        p = jax.nn.sigmoid(x)
    else:
        p = x
    if indices:
        in_range = (labels >= 0) & (labels < k)
        keep = jnp.ones(labels.shape, jnp.bool_) if ignore_index is None else labels != ignore_index
        t = jax.nn.one_hot(labels, k, dtype=cdt, axis=axis)
        # Out-of-range labels poison the loss with NaN rather than count as "no class".
        bad = jnp.where(keep & ~in_range, jnp.full((), jnp.nan, cdt), jnp.zeros((), cdt))
        keep_c = jnp.expand_dims(keep, axis).astype(cdt)
        p = p * keep_c + jnp.expand_dims(bad, axis)
        t = t * keep_c
    else:
        t = labels.astype(cdt)
    sum_axes = tuple(a for a in range(inputs.ndim) if a != axis)
    intersection = jnp.sum(p * t, axis=sum_axes)
    denominator = jnp.sum(p, axis=sum_axes) + jnp.sum(t, axis=sum_axes)
    per_class = 1.0 - (2.0 * intersection + eps) / (denominator + eps)
    if reduction == "none":
        return per_class
    return jnp.sum(per_class) if reduction == "sum" else jnp.mean(per_class)
