"""A layer-by-layer table of a model: output shapes, parameters, FLOPs and receptive fields.

``summary(model, (N, H, W, C))`` traces the model (``jax.make_jaxpr`` / ``jax.eval_shape``:
shapes only, nothing is computed) under ``flax.linen.intercept_methods`` and records every
call of a :mod:`jaxcnn.nn` layer (``Sequential`` is a container, not a row)::

    >>> print(summary(SimpleCNN(), (1, 28, 28, 1)))
    SimpleCNN: input 1x28x28x1 -> output 1x10
    ----------------------------------------------------------------
    Layer      Type     Output shape     Params      FLOPs  RF  Jump
    ----------------------------------------------------------------
    conv1      Conv     1x26x26x32          320    411,008   3     1
    MaxPool_0  MaxPool  1x13x13x32            0     16,224   4     2
    conv2      Conv     1x11x11x64       18,496  4,468,288   8     2
    MaxPool_1  MaxPool  1x5x5x64              0      4,800  10     4
    fc1        Dense    1x1024        1,639,424  3,277,824  26     -
    ...

FLOPs (one multiply-add = 2 FLOPs) follow XLA's ``HloCostAnalysis``, so the total matches
``jax.jit(f).lower(...).compile().cost_analysis()["flops"]`` of the forward pass:

- Conv / ConvTranspose: ``2 * N * C_out * C_in / groups * (valid taps)``, where only the
  kernel taps that land on real input count -- not those on zero padding, nor on the zeros a
  transposed conv inserts between inputs -- plus one FLOP per output for the bias.
- Dense: ``2 * rows * in * out`` (+ ``rows * out`` bias).
- Elementwise work of the layers, one FLOP per arithmetic op per element: batch norm
  ``(2 + bias) * numel + (1 + scale) * C`` in eval mode (its scale folds into a per-channel
  factor) and ``(6 + bias) * numel + (8 + scale) * C`` in training; group/layer norm
  ``(6 + scale + bias) * numel`` + 2 per normalised group; max/min pooling ``window - 1`` comparisons per
  output, average pooling ``window`` per output; global pooling one per input; linear
  upsampling 3 per element produced along each resized axis, nearest 0; dropout (training)
  3 per element, its random-number generation not counted.

Plain functions called between layers -- activations, residual additions, concatenations,
``jnp.pad`` -- are not ``jaxcnn.nn`` layers and are not counted: about one FLOP per element,
typically under 2% of a CNN's total (the tests hold the total to XLA's within 3%).

Receptive fields (``RF``: input pixels one output sees, per spatial axis; ``Jump``: input
pixels between neighbouring outputs) follow the real data flow, not the call order: each
layer's input is traced back through the plain functions to the layers that produced it
(the jaxpr's edges). Where several layers feed one (a residual sum, a U-Net concatenation)
the field is the union of theirs -- so a ResNet block's 1x1 projection shortcut, fed by the
block's input, never enlarges the field beyond the 3x3 path. Conv and pooling geometry comes
from :func:`jaxcnn.shapes.receptive_fields`; a transposed conv of stride ``s`` divides the
jump by ``s`` (a fractional jump: several outputs per input pixel); upsampling likewise.
Normalisation and dropout are pointwise. Flatten and global pooling see the union of all
positions (no jump after them). A plain function that resizes by an integer factor scales
the jump; one that pads or crops leaves the field as it is.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import sys
import types
from collections.abc import Sequence
from fractions import Fraction
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import core as jax_core

from jaxcnn import nn as jnn
from jaxcnn import shapes
from jaxcnn.functional import _arguments as args

__all__ = ["LayerRow", "Summary", "summary"]

Number = int | float


# ---------------------------------------------------------------------------- the data


@dataclasses.dataclass(frozen=True)
class LayerRow:
    """One call of a :mod:`jaxcnn.nn` layer.

    Attributes:
      path: the module's path in the model, e.g. ``"layer1_0/conv1"``.
      type: the layer's class name, e.g. ``"Conv"``.
      input_shape, output_shape: array shapes, batch included.
      params: the layer's own parameters (0 on the repeated calls of a shared layer).
      flops: forward FLOPs (see the module docstring), or None for a layer type without a
        formula.
      receptive_field: per spatial axis of the model input, the input pixels one output
        sees; None where unknown. Ints, or floats after a fractional jump.
      jump: per axis, input pixels between neighbouring outputs; None where the output has no
        spatial grid (after Flatten or global pooling) or the field is unknown.
    """

    path: str
    type: str
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    params: int
    flops: int | None
    receptive_field: tuple[Number, ...] | None
    jump: tuple[Number, ...] | None


@dataclasses.dataclass(frozen=True)
class Summary:
    """A model's layer table: ``rows`` plus totals; ``str(summary)`` is a text table.

    Attributes:
      model: the model's class name.
      input_shape, output_shape: of the whole model (``output_shape`` is a tuple of shapes
        when the model returns several arrays).
      rows: one :class:`LayerRow` per layer call, in call order.
      total_params: all of the model's ``params`` (including any held outside jaxcnn layers).
      total_state: the other variables, e.g. batch-norm running statistics (``batch_stats``).
      total_flops: the sum of the rows' FLOPs.
      train: whether the forward pass was the training one.
    """

    model: str
    input_shape: tuple[int, ...]
    output_shape: Any
    rows: tuple[LayerRow, ...]
    total_params: int
    total_state: int
    total_flops: int
    train: bool = False

    def to_dict(self) -> dict[str, Any]:
        """Plain Python data (lists, ints, strings), e.g. for ``json.dumps``."""
        return _plain(dataclasses.asdict(self))

    def __str__(self) -> str:
        header = ("Layer", "Type", "Output shape", "Params", "FLOPs", "RF", "Jump")
        lines = [
            (
                r.path or "(model)",
                r.type,
                _shape_text(r.output_shape),
                f"{r.params:,}",
                "?" if r.flops is None else f"{r.flops:,}",
                _axes_text(r.receptive_field),
                _axes_text(r.jump),
            )
            for r in self.rows
        ]
        widths = [
            max(len(h), *(len(line[i]) for line in lines)) if lines else len(h) for i, h in enumerate(header)
        ]
        right = {3, 4, 5, 6}

        def fmt(cells):
            return "  ".join(
                c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))
            ).rstrip()

        rule = "-" * len(fmt(header))
        mode = "training" if self.train else "inference"
        out = [
            f"{self.model}: input {_shape_text(self.input_shape)} -> output {_shape_text(self.output_shape)}"
        ]
        out += [rule, fmt(header), rule, *(fmt(line) for line in lines), rule]
        out.append(f"Params: {self.total_params:,}   State (batch_stats...): {self.total_state:,}")
        out.append(
            f"FLOPs ({mode} forward, batch {self.input_shape[0]}): {self.total_flops:,} ({_si(self.total_flops)})"
        )
        return "\n".join(out)


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _shape_text(shape: Any) -> str:
    if isinstance(shape, tuple) and shape and isinstance(shape[0], tuple):
        return ", ".join(_shape_text(s) for s in shape)
    return "x".join(str(d) for d in shape) if shape else "scalar"


def _axes_text(values: tuple[Number, ...] | None) -> str:
    if values is None:
        return "-"
    texts = [f"{v:g}" if isinstance(v, float) else str(v) for v in values]
    return texts[0] if len(set(texts)) == 1 else "x".join(texts)


def _si(n: int) -> str:
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}FLOPs"
    return f"{n} FLOPs"


# ------------------------------------------------------------------------------ FLOPs


def _spatial(shape: tuple[int, ...], layout: str) -> tuple[tuple[int, ...], bool] | None:
    """``(spatial sizes, channels_last)`` of a batch with 1-3 spatial axes, else None."""
    if len(shape) not in (3, 4, 5):
        return None
    last = layout.upper().startswith("N") and layout.upper().endswith("C")
    return (tuple(shape[1:-1]) if last else tuple(shape[2:])), last


def _channels(shape: tuple[int, ...], layout: str) -> int:
    geo = _spatial(shape, layout)
    return shape[-1] if geo is None or geo[1] else shape[1]


def _pads(padding: Any, in_sizes, window, stride, dilation, op: str) -> tuple[tuple[int, int], ...]:
    """Explicit ``(lo, hi)`` pairs, as :func:`jaxcnn.functional.conv` and the pools resolve them."""
    pad = args.explicit_padding(padding, len(in_sizes), op)
    if pad == "SAME":
        return args.same_padding(in_sizes, window, stride, dilation)
    if pad == "VALID":
        return ((0, 0),) * len(in_sizes)
    return pad


def _valid_taps(
    in_size: int, out_size: int, k: int, stride: int, lo: int, dilation: int, base: int = 1
) -> int:
    """Kernel taps on real input summed over the outputs of one axis (XLA's count).

    Output ``o`` and tap ``t`` read position ``o * stride - lo + t * dilation`` of the input
    dilated by ``base`` (a transposed conv's stride); it counts if that is a real element.
    """
    count = 0
    for o in range(out_size):
        for t in range(k):
            pos = o * stride - lo + t * dilation
            if pos >= 0 and pos % base == 0 and pos // base < in_size:
                count += 1
    return count


def _conv_geometry(module: Any, in_shape: tuple[int, ...]):
    op = f"summary({type(module).__name__})"
    in_sizes, last = _spatial(in_shape, module.layout)
    n = len(in_sizes)
    window = args.as_tuple(module.kernel_size, n, "kernel_size", op)
    stride = args.as_tuple(module.stride, n, "stride", op)
    dilation = args.as_tuple(module.dilation, n, "dilation", op)
    return in_sizes, last, window, stride, dilation, op


def _conv_flops(module: jnn.Conv, in_shape, out_shape) -> int:
    in_sizes, _, window, stride, dilation, op = _conv_geometry(module, in_shape)
    out_sizes = _spatial(out_shape, module.layout)[0]
    pads = _pads(module.padding, in_sizes, window, stride, dilation, op)
    if module.padding_mode != "zeros":  # padded explicitly first: every tap reads real data
        in_sizes = tuple(s + lo + hi for s, (lo, hi) in zip(in_sizes, pads))
        pads = ((0, 0),) * len(in_sizes)
    taps = math.prod(
        _valid_taps(s, o, k, st, lo, d)
        for s, o, k, st, (lo, _), d in zip(in_sizes, out_sizes, window, stride, pads, dilation)
    )
    c_in, c_out = _channels(in_shape, module.layout), module.features
    macs = in_shape[0] * c_out * (c_in // module.groups) * taps
    return 2 * macs + (math.prod(out_shape) if module.use_bias else 0)


def _conv_transpose_pads(
    module: Any, window, stride, dilation, n: int, op: str
) -> tuple[tuple[int, int], ...]:
    pad = args.explicit_padding(module.padding, n, op)
    if pad == "VALID":
        return ((0, 0),) * n
    if pad == "SAME":
        pairs = []
        for k, s, d in zip(window, stride, dilation):
            total = d * (k - 1) + 1 - s
            pairs.append((total // 2, total - total // 2))
        return tuple(pairs)
    return pad


def _conv_transpose_flops(module: jnn.ConvTranspose, in_shape, out_shape) -> int:
    in_sizes, _, window, stride, dilation, op = _conv_geometry(module, in_shape)
    out_sizes = _spatial(out_shape, module.layout)[0]
    pads = _conv_transpose_pads(module, window, stride, dilation, len(in_sizes), op)
    # A conv of the stride-dilated input with the flipped kernel, padded d * (k - 1) - lo.
    taps = math.prod(
        _valid_taps(s, o, k, 1, d * (k - 1) - lo, d, base=st)
        for s, o, k, st, (lo, _), d in zip(in_sizes, out_sizes, window, stride, pads, dilation)
    )
    c_in = _channels(in_shape, module.layout)
    macs = in_shape[0] * (c_in // module.groups) * module.features * taps
    return 2 * macs + (math.prod(out_shape) if module.use_bias else 0)


def _upsample_flops(module: jnn.Upsample, in_shape, out_shape) -> int:
    geo_in, geo_out = _spatial(in_shape, module.layout), _spatial(out_shape, module.layout)
    if module.method in ("nearest", "nearest-exact"):
        return 0
    in_sizes = geo_in[0]
    out_sizes = geo_out[0]
    batch_channels = math.prod(in_shape) // math.prod(in_sizes)
    if module.method == "area":  # adaptive average pooling: each bin summed, then divided
        sums = [
            sum(-((-(i + 1) * s) // o) - (i * s) // o for i in range(o)) for s, o in zip(in_sizes, out_sizes)
        ]
        return batch_channels * math.prod(sums)
    # Separable linear interpolation, innermost axis first: 2 products + 1 sum per element.
    current, flops = list(in_sizes), 0
    for j in reversed(range(len(in_sizes))):
        if in_sizes[j] == out_sizes[j] and (module.size is not None or module.align_corners):
            continue
        current[j] = out_sizes[j]
        flops += 3 * batch_channels * math.prod(current)
    return flops


def _layer_flops(module: nn.Module, in_shape, out_shape, train: bool) -> int | None:
    numel = math.prod(in_shape)
    if isinstance(module, jnn.Conv):
        return _conv_flops(module, in_shape, out_shape)
    if isinstance(module, jnn.ConvTranspose):
        return _conv_transpose_flops(module, in_shape, out_shape)
    if isinstance(module, jnn.Dense):
        rows = numel // in_shape[-1]
        return 2 * rows * in_shape[-1] * module.features + (rows * module.features if module.use_bias else 0)
    if isinstance(module, jnn.BatchNorm):
        c = _channels(in_shape, module.layout) if len(in_shape) > 2 else in_shape[-1]
        if train:
            return (6 + module.use_bias) * numel + (8 + module.use_scale) * c
        return (2 + module.use_bias) * numel + (1 + module.use_scale) * c
    if isinstance(module, jnn.GroupNorm):
        return (6 + module.use_scale + module.use_bias) * numel + 2 * in_shape[0] * module.num_groups
    if isinstance(module, jnn.LayerNorm):
        rows = numel // math.prod(in_shape[len(in_shape) - module.normalized_ndim :])
        return (6 + module.use_scale + module.use_bias) * numel + 2 * rows
    if isinstance(module, (jnn.MaxPool, jnn.MinPool, jnn.AvgPool)):
        n = len(in_shape) - 2
        window = math.prod(args.as_tuple(module.window, n, "window", "summary"))
        per_output = window if isinstance(module, jnn.AvgPool) else window - 1
        return per_output * math.prod(out_shape)
    if isinstance(module, jnn.GlobalAvgPool):
        return numel
    if isinstance(module, jnn.GlobalMaxPool):
        return numel - math.prod(out_shape)
    if isinstance(module, jnn.Upsample):
        return _upsample_flops(module, in_shape, out_shape)
    if isinstance(module, jnn.Dropout):
        return 3 * numel if train and module.rate > 0 else 0
    if isinstance(module, jnn.Flatten):
        return 0
    return None


# -------------------------------------------------------------------- receptive fields


@dataclasses.dataclass(frozen=True)
class _Field:
    """A field per spatial axis: ``size``, ``jump`` (None: no grid), ``start`` (centre of
    output 0), in model-input pixels, and the spatial ``sizes`` of the map it describes."""

    size: tuple[Fraction, ...]
    jump: tuple[Fraction, ...] | None
    start: tuple[Fraction, ...]
    sizes: tuple[int, ...] | None


def _globalize(f: _Field) -> _Field:
    """The union over all positions of a map (after Flatten / global pooling)."""
    if f.jump is None or f.sizes is None:
        return dataclasses.replace(f, jump=None, sizes=None)
    size = tuple(r + (s - 1) * j for r, s, j in zip(f.size, f.sizes, f.jump))
    start = tuple(c + Fraction(s - 1, 2) * j for c, s, j in zip(f.start, f.sizes, f.jump))
    return _Field(size, None, start, None)


def _union(fields: list[_Field]) -> _Field | None:
    fields = [f for f in fields if f is not None]
    if not fields:
        return None
    if len(fields) == 1:
        return fields[0]
    if len({len(f.size) for f in fields}) > 1:
        return max(fields, key=lambda f: math.prod(f.size))
    gridded = [f for f in fields if f.jump is not None]
    if len(gridded) < len(fields):
        fields = [f if f.jump is None else _globalize(f) for f in fields]
    lo = [min(f.start[a] - (f.size[a] - 1) / 2 for f in fields) for a in range(len(fields[0].size))]
    hi = [max(f.start[a] + (f.size[a] - 1) / 2 for f in fields) for a in range(len(fields[0].size))]
    jump = None
    if fields[0].jump is not None:
        jump = tuple(max(f.jump[a] for f in fields) for a in range(len(lo)))
    sizes = fields[0].sizes if all(f.sizes == fields[0].sizes for f in fields) else None
    return _Field(
        tuple(h - low + 1 for low, h in zip(lo, hi)), jump, tuple((low + h) / 2 for low, h in zip(lo, hi)), sizes
    )


def _adapt(f: _Field | None, in_shape: tuple[int, ...], layout: str | None) -> _Field | None:
    """The field of a layer's input, given the field of the layers it came from.

    ``layout`` is None for layers without one (Dense, Flatten ...): they keep the field of a
    map of their own rank and see a flattened one whole.
    """
    if f is None:
        return None
    if layout is None:
        return _globalize(f) if len(in_shape) <= 2 and f.jump is not None else f
    geo = _spatial(in_shape, layout)
    if geo is None or f.jump is None:
        return _globalize(f) if f.jump is not None else f
    sizes = geo[0]
    if f.sizes is None or len(sizes) != len(f.sizes):
        return _globalize(f) if len(sizes) != len(f.size) else dataclasses.replace(f, sizes=sizes)
    jump = list(f.jump)
    for a, (src, dst) in enumerate(zip(f.sizes, sizes)):
        if src != dst and (src % dst == 0 or dst % src == 0):  # a plain-function resize
            jump[a] = jump[a] * Fraction(src, dst)
    return _Field(f.size, tuple(jump), f.start, sizes)


def _compose(f: _Field, local: Sequence[tuple[Fraction, Fraction, Fraction]], out_sizes) -> _Field:
    """``f`` followed by a layer whose own field per axis is ``(size, jump, start)``."""
    return _Field(
        tuple(r + (k - 1) * j for r, j, (k, _, _) in zip(f.size, f.jump, local)),
        tuple(j * s for j, (_, s, _) in zip(f.jump, local)),
        tuple(c + c1 * j for c, j, (_, _, c1) in zip(f.start, f.jump, local)),
        tuple(out_sizes),
    )


def _local_field(module: nn.Module, in_shape, out_shape):
    """A layer's own field per axis ``(size, jump, start)``; "identity", "global" or None."""
    if isinstance(module, (jnn.GlobalAvgPool, jnn.GlobalMaxPool, jnn.Flatten)):
        return "global"
    layout = getattr(module, "layout", "NHWC")
    geo = _spatial(in_shape, layout)
    if isinstance(module, (jnn.Conv, jnn.MaxPool, jnn.MinPool, jnn.AvgPool)):
        if geo is None:
            return None
        in_sizes = geo[0]
        n = len(in_sizes)
        if isinstance(module, jnn.Conv):
            in_sizes, _, window, stride, dilation, op = _conv_geometry(module, in_shape)
            pads, ceil = _pads(module.padding, in_sizes, window, stride, dilation, op), False
        else:
            op = f"summary({type(module).__name__})"
            window = args.as_tuple(module.window, n, "window", op)
            stride = window if module.stride is None else args.as_tuple(module.stride, n, "stride", op)
            dilation = args.as_tuple(getattr(module, "dilation", 1), n, "dilation", op)
            pads = _pads(module.padding, in_sizes, window, stride, dilation, op)
            ceil = module.ceil_mode
        spec = shapes.LayerSpec(module.name or "", window, stride, pads, dilation, ceil)
        rf = shapes.receptive_fields([spec], in_sizes)[0]
        return [(Fraction(r), Fraction(j), Fraction(c)) for r, j, c in zip(rf.size, rf.jump, rf.start)]
    if isinstance(module, jnn.ConvTranspose):
        if geo is None:
            return None
        in_sizes, _, window, stride, dilation, op = _conv_geometry(module, in_shape)
        pads = _conv_transpose_pads(module, window, stride, dilation, len(in_sizes), op)
        # Output o reads inputs i with i * s + t * d - lo = o: centre (o + lo - d(k-1)/2) / s.
        return [
            (Fraction(d * (k - 1) // s + 1), Fraction(1, s), (lo - Fraction(d * (k - 1), 2)) / s)
            for k, s, d, (lo, _) in zip(window, stride, dilation, pads)
        ]
    if isinstance(module, jnn.Upsample):
        if geo is None:
            return None
        in_sizes, out_sizes = geo[0], _spatial(out_shape, layout)[0]
        local = []
        for s, o in zip(in_sizes, out_sizes):
            ratio = Fraction(s, o)  # input pixels per output pixel
            centred = ratio / 2 - Fraction(1, 2)  # output o sits at (o + 1/2) * ratio - 1/2
            if module.method == "nearest":  # PyTorch's source floor(o * ratio)
                local.append((Fraction(1), ratio, Fraction(0)))
            elif module.method == "nearest-exact":
                local.append((Fraction(1), ratio, centred))
            elif module.method == "area":  # adaptive average pooling's bins
                local.append((Fraction(math.ceil(ratio) + (ratio.denominator != 1)), ratio, centred))
            elif module.align_corners:  # linear, corner centres matched
                local.append((Fraction(2), Fraction(s - 1, o - 1) if o > 1 else Fraction(0), Fraction(0)))
            else:  # linear: the two neighbours of the source position
                local.append((Fraction(2), ratio, centred))
        return local
    if isinstance(module, (jnn.Dense, jnn.BatchNorm, jnn.GroupNorm, jnn.LayerNorm, jnn.Dropout)):
        return "identity"
    return None


def _number(v: Fraction) -> Number:
    return int(v) if v.denominator == 1 else float(v)


# ---------------------------------------------------------------------------- tracing


@dataclasses.dataclass
class _Call:
    module: nn.Module
    path: tuple[str, ...]
    x: Any
    out: Any
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    flops: int | None
    local: Any


def _is_layer(module: nn.Module) -> bool:
    return type(module).__module__ == jnn.__name__ and not isinstance(module, jnn.Sequential)


def _first_array(tree: Any) -> Any:
    leaves = [leaf for leaf in jax.tree_util.tree_leaves(tree) if hasattr(leaf, "shape")]
    return leaves[0] if leaves else None


def _deps_from_jaxpr(jaxpr, input_var, calls_in, calls_out) -> list[set[int]]:
    """For each call, the earlier calls (and ``-1`` for the model input) feeding its input."""
    producer = {}
    for eqn in jaxpr.eqns:
        for v in eqn.outvars:
            producer[v] = eqn
    made_by: dict[Any, list[int]] = {}
    for i, v in enumerate(calls_out):
        if v is not None:
            made_by.setdefault(v, []).append(i)
    deps = []
    for i, start in enumerate(calls_in):
        found: set[int] = set()
        if start is None:
            deps.append(found)
            continue
        seen, stack = set(), [start]
        while stack:
            v = stack.pop()
            if isinstance(v, jax_core.Literal) or v in seen:
                continue
            seen.add(v)
            earlier = [j for j in made_by.get(v, []) if j < i]
            if earlier:
                found.add(max(earlier))
            elif v is input_var:
                found.add(-1)
            elif v in producer:
                stack.extend(producer[v].invars)
        deps.append(found)
    return deps


def _accepts_train(model: nn.Module) -> bool:
    try:
        return "train" in inspect.signature(model.__call__).parameters
    except (TypeError, ValueError):
        return False


def _check_shape(input_shape: Any) -> tuple[int, ...]:
    if isinstance(input_shape, (str, bytes)) or not isinstance(input_shape, Sequence):
        raise TypeError(
            f"summary: input_shape must be a tuple of ints such as (1, 28, 28, 1), got {input_shape!r}"
        )
    if not input_shape or not all(
        isinstance(d, (int, np.integer)) and not isinstance(d, bool) and d > 0 for d in input_shape
    ):
        raise ValueError(
            f"summary: input_shape must be positive ints, batch first, got {tuple(input_shape)!r}"
        )
    return tuple(int(d) for d in input_shape)


def _count(tree: Any) -> int:
    return sum(math.prod(leaf.shape) for leaf in jax.tree_util.tree_leaves(tree))


def summary(
    model: nn.Module, input_shape: Sequence[int], *, dtype: Any = jnp.float32, train: bool = False
) -> Summary:
    """Layer-by-layer shapes, parameters, FLOPs and receptive fields of ``model``.

    Args:
      model: a Flax linen module built from :mod:`jaxcnn.nn` layers, called as
        ``model.apply(variables, x, train=train)``.
      input_shape: the input's shape, batch first, e.g. ``(1, 224, 224, 3)`` (NHWC).
      dtype: the input's dtype.
      train: summarise the training forward pass (batch statistics, dropout) instead of
        inference.

    Returns:
      A :class:`Summary` (``rows``, totals, ``to_dict()``; ``print`` it for a table). Only
      shapes are traced; no array is computed.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"summary: model must be a flax.linen.Module, got {type(model).__name__}")
    shape = _check_shape(input_shape)
    if not isinstance(train, bool):
        raise TypeError(f"summary: train must be a bool, got {train!r}")
    try:
        dtype = jnp.dtype(dtype)
    except TypeError as err:
        raise TypeError(f"summary: dtype={dtype!r} is not a dtype") from err
    x_spec = jax.ShapeDtypeStruct(shape, dtype)
    rngs = {"params": jax.random.key(0), "dropout": jax.random.key(1)}
    mode = {"train": train} if _accepts_train(model) else {}
    if train and not mode:
        raise ValueError(f"summary: train=True, but {type(model).__name__}.__call__ takes no train argument")
    variables = jax.eval_shape(lambda x: model.init(rngs, x, **{k: False for k in mode}), x_spec)
    calls: list[_Call] = []

    def interceptor(next_fun, call_args, kwargs, context):
        module = context.module
        if context.method_name != "__call__" or not _is_layer(module):
            return next_fun(*call_args, **kwargs)
        x = call_args[0] if call_args else kwargs.get("x")
        out = next_fun(*call_args, **kwargs)
        first = _first_array(out)
        in_shape = tuple(getattr(x, "shape", ()))
        out_shape = tuple(first.shape) if first is not None else ()
        calls.append(
            _Call(
                module,
                tuple(module.path),
                x,
                first,
                in_shape,
                out_shape,
                _layer_flops(module, in_shape, out_shape, train),
                _local_field(module, in_shape, out_shape),
            )
        )
        return out

    def forward(v, x, record):
        calls.clear()
        kwargs = {"mutable": ["batch_stats"]} if train else {}
        with nn.intercept_methods(interceptor):
            out = model.apply(v, x, rngs={"dropout": rngs["dropout"]}, **mode, **kwargs)
        out = out[0] if train else out
        if not record:
            return out
        # Every layer's input and output become outputs too, so the jaxpr names them.
        ends = [e for c in calls for e in (c.x, c.out)]
        return out, [e for e in ends if isinstance(e, jax.Array)]

    try:
        closed, (model_out, ends) = jax.make_jaxpr(lambda v, x: forward(v, x, True), return_shape=True)(
            variables, x_spec
        )
        jaxpr = closed.jaxpr
        end_vars = iter(jaxpr.outvars[len(jaxpr.outvars) - len(ends) :])
        call_ends = [
            [next(end_vars) if isinstance(e, jax.Array) else None for e in (c.x, c.out)] for c in calls
        ]
        deps = _deps_from_jaxpr(jaxpr, jaxpr.invars[-1], [a for a, _ in call_ends], [b for _, b in call_ends])
        if any(isinstance(c, jax.core.Tracer) for c in closed.consts):
            deps = None  # arrays of an inner trace (nn.remat ...) leaked in as constants: no data flow
    except jax.errors.UnexpectedTracerError:
        # Lifted transforms (nn.remat, nn.scan ...) keep their layers' arrays inside: no data flow.
        model_out = jax.eval_shape(lambda v, x: forward(v, x, False), variables, x_spec)
        deps = None

    leaves = jax.tree_util.tree_leaves(model_out)
    out_shape = tuple(leaves[0].shape) if len(leaves) == 1 else tuple(tuple(leaf.shape) for leaf in leaves)

    def start_field(layout: str) -> _Field | None:
        """The model input's pixels, laid out as the layer reading it expects."""
        geo = _spatial(shape, layout)
        if geo is None:
            return None
        n = len(geo[0])
        return _Field((Fraction(1),) * n, (Fraction(1),) * n, (Fraction(0),) * n, geo[0])

    fields: list[_Field | None] = []
    params = variables.get("params", {})
    seen_paths: set[tuple[str, ...]] = set()
    rows = []
    for i, call in enumerate(calls):
        layout = getattr(call.module, "layout", None)
        if deps is None:
            field = None
        else:
            sources = [start_field(layout or "NHWC") if d == -1 else fields[d] for d in sorted(deps[i])]
            field = _adapt(_union(sources), call.in_shape, layout)
            local = call.local
            if field is None or local is None:
                field = None
            elif local == "global":
                field = _globalize(field)
            elif local != "identity":
                if field.jump is None or len(field.size) != len(local):
                    field = None
                else:
                    field = _compose(field, local, _spatial(call.out_shape, layout or "NHWC")[0])
        fields.append(field)
        own = 0
        if call.path not in seen_paths:
            seen_paths.add(call.path)
            node = params
            for name in call.path:
                node = node.get(name, {}) if isinstance(node, dict) else {}
            own = _count(node) if call.path else _count(params)
        rows.append(
            LayerRow(
                path="/".join(call.path),
                type=type(call.module).__name__,
                input_shape=call.in_shape,
                output_shape=call.out_shape,
                params=own,
                flops=call.flops,
                receptive_field=None if field is None else tuple(_number(v) for v in field.size),
                jump=None if field is None or field.jump is None else tuple(_number(v) for v in field.jump),
            )
        )
    return Summary(
        model=type(model).__name__,
        input_shape=shape,
        output_shape=out_shape,
        rows=tuple(rows),
        total_params=_count(params),
        total_state=sum(_count(v) for k, v in variables.items() if k != "params"),
        total_flops=sum(r.flops or 0 for r in rows),
        train=train,
    )


class _CallableModule(types.ModuleType):
    """``jaxcnn.summary(model, shape)`` calls :func:`summary`.

    Importing this module binds the package attribute ``jaxcnn.summary`` to the module, which
    then hides the function that ``jaxcnn.__getattr__`` returned: without this, a second
    ``jaxcnn.summary(...)`` (a notebook cell run again) raised "'module' object is not callable".
    """

    def __call__(self, *args, **kwargs) -> Summary:
        return summary(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
