"""Layer arithmetic without tracing: output sizes, receptive fields, parameter counts.

Everything here is plain Python on ints, so it runs in a config file, a docstring or a test
before any array exists. The formulas are those of PyTorch and of
:mod:`jaxcnn.functional` (which agree)::

    conv:            out = floor((in + lo + hi - d * (k - 1) - 1) / s) + 1
    pool, ceil_mode: out = ceil(...) + 1, minus 1 if the last window would start in the
                     right padding (at or after in + lo)
    conv transpose:  out = (in - 1) * s - lo - hi + d * (k - 1) + output_padding + 1
    "SAME":          out = ceil(in / s) (conv, pool);  in * s (+ output_padding) (transpose)

Sizes: an int for one axis, or a tuple with one entry per spatial axis, e.g. ``(H, W)``;
``kernel``/``stride``/``dilation`` are then an int (every axis) or a tuple of that length.
``padding`` is ``"VALID"``, ``"SAME"``, an int, or, for one axis, a ``(lo, hi)`` pair; with
several axes it is one int or ``(lo, hi)`` pair per axis (so ``padding=(1, 2)`` with ``(H, W)``
means 1 on each side of H and 2 on each side of W, as in PyTorch).

Example::

    conv_output_size((224, 224), 7, stride=2, padding=3)            # (112, 112)
    [rf.size for rf in receptive_fields([LayerSpec("c1", 3), LayerSpec("c2", 3)])]  # [3, 5]
"""

from __future__ import annotations

import dataclasses
import math
import operator
from collections.abc import Sequence
from typing import Any

__all__ = [
    "LayerSpec",
    "ReceptiveField",
    "batch_norm_params",
    "conv_output_size",
    "conv_params",
    "conv_transpose_output_size",
    "dense_params",
    "pool_output_size",
    "receptive_fields",
]


# ---------------------------------------------------------------------------- validation


def _int(value: Any, name: str, op: str, minimum: int) -> int:
    if isinstance(value, bool):
        raise TypeError(f"{op}: {name} must be an int, got {value!r}")
    try:
        v = operator.index(value)
    except TypeError as err:
        raise TypeError(f"{op}: {name} must be an int, got {value!r} ({type(value).__name__})") from err
    if v < minimum:
        kind = "positive" if minimum == 1 else f">= {minimum}"
        raise ValueError(f"{op}: {name} must be {kind}, got {v}")
    return v


def _is_seq(value: Any) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, (str, bytes))


def _ints(value: Any, n: int, name: str, op: str, minimum: int = 1) -> tuple[int, ...]:
    """An int or ``n`` ints -> ``n``-tuple."""
    if _is_seq(value):
        if len(value) != n:
            raise ValueError(
                f"{op}: {name}={tuple(value)!r} has {len(value)} entries, expected {n} (one per axis)"
            )
        return tuple(_int(v, f"{name}[{i}]", op, minimum) for i, v in enumerate(value))
    v = _int(value, name, op, minimum)
    return (v,) * n


def _pair(value: Any, name: str, op: str) -> tuple[int, int]:
    if _is_seq(value):
        if len(value) != 2:
            raise ValueError(f"{op}: {name}={tuple(value)!r} must be an int or a (lo, hi) pair")
        return (_int(value[0], f"{name} lo", op, 0), _int(value[1], f"{name} hi", op, 0))
    v = _int(value, name, op, 0)
    return (v, v)


def _padding(
    padding: Any, n: int, scalar: bool, op: str, name: str = "padding"
) -> str | tuple[tuple[int, int], ...]:
    """``"SAME"``/``"VALID"`` or ``n`` ``(lo, hi)`` pairs (see the module docstring)."""
    if isinstance(padding, str):
        upper = padding.upper()
        if upper not in ("SAME", "VALID"):
            raise ValueError(
                f"{op}: {name}={padding!r} is not understood; expected 'SAME', 'VALID', an int or (lo, hi)"
            )
        return upper
    if scalar:
        return (_pair(padding, name, op),)
    if _is_seq(padding):
        if len(padding) != n:
            raise ValueError(
                f"{op}: {name}={tuple(padding)!r} has {len(padding)} entries, expected {n} "
                f"(one int or (lo, hi) pair per axis)"
            )
        return tuple(_pair(p, f"{name}[{i}]", op) for i, p in enumerate(padding))
    return (_pair(padding, name, op),) * n


def _rank(op: str, *values: Any) -> tuple[int, bool]:
    """The number of axes from the first tuple among ``values``; ``(1, True)`` if all are ints."""
    for v in values:
        if _is_seq(v):
            if len(v) == 0:
                raise ValueError(f"{op}: empty size tuple {v!r}")
            return len(v), False
    return 1, True


def _same_pair(size: int, k_eff: int, stride: int) -> tuple[int, int]:
    """Padding for ``"SAME"``: output ``ceil(size / stride)``, the odd pixel at the end."""
    out = -(-size // stride)
    total = max((out - 1) * stride + k_eff - size, 0)
    return (total // 2, total - total // 2)


def _window_size(
    op: str, axis: str, size: int, k: int, s: int, d: int, pad: tuple[int, int], ceil_mode: bool
) -> int:
    lo, hi = pad
    k_eff = d * (k - 1) + 1
    span = size + lo + hi - k_eff
    if ceil_mode:
        # Floor division rounds towards -inf, as PyTorch's div_rtn; a window a little larger
        # than the padded input still gives one output in ceil mode.
        out = (span + s - 1) // s + 1
        # PyTorch: the last window must start inside the input or the left padding.
        if out > 1 and (out - 1) * s >= size + lo:
            out -= 1
    else:
        out = span // s + 1
    if out < 1:
        raise ValueError(
            f"{op}: output size would be {out} <= 0{axis}: kernel={k} (dilated to {k_eff}) is "
            f"larger than in_size={size} plus padding={pad}"
        )
    return out


def _unwrap(values: tuple, scalar: bool) -> Any:
    return values[0] if scalar else values


# ------------------------------------------------------------------------- output sizes


def _sliding_output_size(op, in_size, kernel, stride, padding, dilation, ceil_mode):
    n, scalar = _rank(op, in_size, kernel, stride, dilation)
    sizes = _ints(in_size, n, "in_size", op)
    ks = _ints(kernel, n, "kernel", op)
    ss = _ints(stride, n, "stride", op)
    ds = _ints(dilation, n, "dilation", op)
    pad = _padding(padding, n, scalar, op)
    outs = []
    for i in range(n):
        k_eff = ds[i] * (ks[i] - 1) + 1
        if pad == "SAME":
            p = _same_pair(sizes[i], k_eff, ss[i])
        elif pad == "VALID":
            p = (0, 0)
        else:
            p = pad[i]
        axis = "" if scalar else f" on axis {i}"
        outs.append(_window_size(op, axis, sizes[i], ks[i], ss[i], ds[i], p, ceil_mode))
    return _unwrap(tuple(outs), scalar)


def conv_output_size(
    in_size: int | Sequence[int],
    kernel: int | Sequence[int],
    stride: int | Sequence[int] = 1,
    padding: Any = 0,
    dilation: int | Sequence[int] = 1,
) -> int | tuple[int, ...]:
    """Spatial output size of a convolution (as ``torch.nn.Conv2d`` / :func:`jaxcnn.functional.conv`).

    ``out = floor((in + lo + hi - dilation * (kernel - 1) - 1) / stride) + 1``; ``"SAME"`` gives
    ``ceil(in / stride)``. An int ``in_size`` gives an int, a tuple ``(H, W)`` a tuple.
    Raises ``ValueError`` if the output would be empty.
    """
    return _sliding_output_size("conv_output_size", in_size, kernel, stride, padding, dilation, False)


def pool_output_size(
    in_size: int | Sequence[int],
    kernel: int | Sequence[int],
    stride: int | Sequence[int] | None = None,
    padding: Any = 0,
    dilation: int | Sequence[int] = 1,
    ceil_mode: bool = False,
) -> int | tuple[int, ...]:
    """Spatial output size of max/average pooling (as ``torch.nn.MaxPool2d``).

    ``stride`` defaults to ``kernel``. With ``ceil_mode=True`` the division rounds up, but a
    last window that would start in the right padding (at or after ``in + lo``) is dropped,
    PyTorch's rule. (PyTorch also requires ``padding <= kernel // 2``; that is not checked here.)
    """
    op = "pool_output_size"
    if not isinstance(ceil_mode, bool):
        raise TypeError(f"{op}: ceil_mode must be a bool, got {ceil_mode!r}")
    if stride is None:
        stride = kernel
    return _sliding_output_size(op, in_size, kernel, stride, padding, dilation, ceil_mode)


def conv_transpose_output_size(
    in_size: int | Sequence[int],
    kernel: int | Sequence[int],
    stride: int | Sequence[int] = 1,
    padding: Any = 0,
    output_padding: int | Sequence[int] = 0,
    dilation: int | Sequence[int] = 1,
) -> int | tuple[int, ...]:
    """Spatial output size of a transposed convolution (as ``torch.nn.ConvTranspose2d``).

    ``out = (in - 1) * stride - lo - hi + dilation * (kernel - 1) + output_padding + 1``, with
    ``0 <= output_padding < max(stride, dilation)``; ``"SAME"`` gives ``in * stride +
    output_padding`` (needs ``dilation * (kernel - 1) + 1 >= stride``), as
    :func:`jaxcnn.functional.conv_transpose`.
    """
    op = "conv_transpose_output_size"
    n, scalar = _rank(op, in_size, kernel, stride, dilation, output_padding)
    sizes = _ints(in_size, n, "in_size", op)
    ks = _ints(kernel, n, "kernel", op)
    ss = _ints(stride, n, "stride", op)
    ds = _ints(dilation, n, "dilation", op)
    ops = _ints(output_padding, n, "output_padding", op, minimum=0)
    pad = _padding(padding, n, scalar, op)
    outs = []
    for i in range(n):
        axis = "" if scalar else f" on axis {i}"
        if ops[i] >= max(ss[i], ds[i]):
            raise ValueError(
                f"{op}: output_padding={ops[i]} must be smaller than stride={ss[i]} or dilation={ds[i]}{axis}"
            )
        k_eff = ds[i] * (ks[i] - 1) + 1
        if pad == "SAME":
            if k_eff < ss[i]:
                raise ValueError(
                    f"{op}: padding='SAME' needs dilation * (kernel - 1) + 1 >= stride, got "
                    f"kernel={ks[i]}, dilation={ds[i]}, stride={ss[i]}{axis}"
                )
            lo, hi = (k_eff - ss[i]) // 2, k_eff - ss[i] - (k_eff - ss[i]) // 2
        elif pad == "VALID":
            lo, hi = 0, 0
        else:
            lo, hi = pad[i]
        out = (sizes[i] - 1) * ss[i] - lo - hi + k_eff - 1 + ops[i] + 1
        if out < 1:
            raise ValueError(
                f"{op}: output size would be {out} <= 0{axis}: padding={(lo, hi)} crops more than "
                f"the full output of in_size={sizes[i]}, kernel={ks[i]}, stride={ss[i]}"
            )
        outs.append(out)
    return _unwrap(tuple(outs), scalar)


# ----------------------------------------------------------------------- receptive fields


@dataclasses.dataclass(frozen=True)
class LayerSpec:
    """A sliding-window layer (convolution or pooling) as far as geometry goes.

    Attributes:
      name: a label for the reports.
      kernel, stride, dilation: an int, or one int per spatial axis.
      padding: ``"SAME"``, ``"VALID"``, an int, a ``(lo, hi)`` pair (one axis) or one int /
        pair per axis (see the module docstring).
      ceil_mode: pooling's ``ceil_mode`` (only changes the output size).
    """

    name: str
    kernel: int | tuple[int, ...]
    stride: int | tuple[int, ...] = 1
    padding: Any = 0
    dilation: int | tuple[int, ...] = 1
    ceil_mode: bool = False


@dataclasses.dataclass(frozen=True)
class ReceptiveField:
    """Geometry of one layer's output, in input-pixel coordinates (pixel ``i`` is centred at ``i``).

    Attributes:
      name: the layer's name.
      size: receptive field ``r``: the input pixels one output sees, per axis.
      jump: distance in input pixels between neighbouring outputs (the product of strides).
      start: centre of output 0's receptive field; output ``m`` is centred at
        ``start + m * jump`` and sees ``[centre - (size - 1) / 2, centre + (size - 1) / 2]``
        (a half-integer ``start`` comes from even kernels; negative means it reaches into padding).
      output_size: the layer's output size, when ``receptive_fields`` got an ``input_size``.
    """

    name: str
    size: int | tuple[int, ...]
    jump: int | tuple[int, ...]
    start: float | tuple[float, ...]
    output_size: int | tuple[int, ...] | None = None


def receptive_fields(
    specs: Sequence[LayerSpec], input_size: int | Sequence[int] | None = None
) -> list[ReceptiveField]:
    """Receptive field, jump and start of every layer of a chain of conv/pool layers.

    With ``k_eff = d * (k - 1) + 1`` and ``r_0 = 1, j_0 = 1, start_0 = 0``:

        r_out = r_in + (k_eff - 1) * j_in
        j_out = j_in * s
        start_out = start_in + ((k_eff - 1) / 2 - p_lo) * j_in

    Args:
      specs: the layers in order (a :class:`LayerSpec` each).
      input_size: optional ``H`` or ``(H, W)``; then every entry also has ``output_size``, and
        ``"SAME"`` padding with stride > 1 is resolved (it needs the size).

    Returns:
      One :class:`ReceptiveField` per layer; its fields are ints (floats for ``start``) for a
      1-axis chain, tuples when any size is a tuple.

    Example: two 3x3 convs see 5x5; 3x3 conv, 2x2/2 pool, 3x3 conv see 8 with jump 2.
    """
    op = "receptive_fields"
    if isinstance(specs, LayerSpec) or not _is_seq(specs):
        raise TypeError(f"{op}: specs must be a sequence of LayerSpec, got {type(specs).__name__}")
    for i, spec in enumerate(specs):
        if not isinstance(spec, LayerSpec):
            raise TypeError(f"{op}: specs[{i}] must be a LayerSpec, got {spec!r}")
    n, scalar = _rank(op, input_size, *[v for s in specs for v in (s.kernel, s.stride, s.dilation)])
    sizes = None if input_size is None else _ints(input_size, n, "input_size", op)
    r, j, start = [1] * n, [1] * n, [0.0] * n
    results = []
    for li, spec in enumerate(specs):
        where = f"{op}: layer {li} ({spec.name!r})"
        if not isinstance(spec.ceil_mode, bool):
            raise TypeError(f"{where}: ceil_mode must be a bool, got {spec.ceil_mode!r}")
        ks = _ints(spec.kernel, n, "kernel", where)
        ss = _ints(spec.stride, n, "stride", where)
        ds = _ints(spec.dilation, n, "dilation", where)
        pad = _padding(spec.padding, n, scalar, where)
        outs = []
        for a in range(n):
            k_eff = ds[a] * (ks[a] - 1) + 1
            if pad == "SAME":
                if sizes is None:
                    if ss[a] != 1:
                        raise ValueError(
                            f"{where}: padding='SAME' with stride={ss[a]} depends on the input "
                            f"size; pass input_size"
                        )
                    p = ((k_eff - 1) // 2, k_eff - 1 - (k_eff - 1) // 2)
                else:
                    p = _same_pair(sizes[a], k_eff, ss[a])
            elif pad == "VALID":
                p = (0, 0)
            else:
                p = pad[a]
            start[a] = start[a] + ((k_eff - 1) / 2 - p[0]) * j[a]
            r[a] = r[a] + (k_eff - 1) * j[a]
            j[a] = j[a] * ss[a]
            if sizes is not None:
                axis = "" if scalar else f" on axis {a}"
                outs.append(_window_size(where, axis, sizes[a], ks[a], ss[a], ds[a], p, spec.ceil_mode))
        if sizes is not None:
            sizes = tuple(outs)
        results.append(
            ReceptiveField(
                name=spec.name,
                size=_unwrap(tuple(r), scalar),
                jump=_unwrap(tuple(j), scalar),
                start=_unwrap(tuple(start), scalar),
                output_size=None if sizes is None else _unwrap(sizes, scalar),
            )
        )
    return results


# ---------------------------------------------------------------------- parameter counts


def conv_params(
    c_in: int, c_out: int, kernel: int | Sequence[int], groups: int = 1, bias: bool = True
) -> int:
    """Trainable parameters of a convolution: ``prod(kernel) * c_in / groups * c_out (+ c_out)``.

    ``kernel`` is an int for a square 2D ``k x k`` window, or a tuple with one size per
    spatial axis (``(k,)`` for 1D, ``(kd, kh, kw)`` for 3D). Same count for a transposed conv.
    """
    op = "conv_params"
    c_in = _int(c_in, "c_in", op, 1)
    c_out = _int(c_out, "c_out", op, 1)
    groups = _int(groups, "groups", op, 1)
    if not isinstance(bias, bool):
        raise TypeError(f"{op}: bias must be a bool, got {bias!r}")
    if _is_seq(kernel):
        if len(kernel) == 0:
            raise ValueError(f"{op}: kernel must have at least one size, got {kernel!r}")
        window = _ints(kernel, len(kernel), "kernel", op)
    else:
        window = (_int(kernel, "kernel", op, 1),) * 2
    if c_in % groups or c_out % groups:
        raise ValueError(f"{op}: groups={groups} must divide c_in={c_in} and c_out={c_out}")
    return math.prod(window) * (c_in // groups) * c_out + (c_out if bias else 0)


def dense_params(in_features: int, out_features: int, bias: bool = True) -> int:
    """Trainable parameters of a dense (fully connected) layer: ``in * out (+ out)``."""
    op = "dense_params"
    in_features = _int(in_features, "in_features", op, 1)
    out_features = _int(out_features, "out_features", op, 1)
    if not isinstance(bias, bool):
        raise TypeError(f"{op}: bias must be a bool, got {bias!r}")
    return in_features * out_features + (out_features if bias else 0)


def batch_norm_params(channels: int, affine: bool = True) -> int:
    """Trainable parameters of batch norm: scale and shift per channel, ``2 * channels``.

    The running mean and variance (another ``2 * channels`` numbers, Flax's ``batch_stats`` /
    PyTorch's buffers) are state, not trained, and are not counted; ``affine=False`` gives 0.
    """
    op = "batch_norm_params"
    channels = _int(channels, "channels", op, 1)
    if not isinstance(affine, bool):
        raise TypeError(f"{op}: affine must be a bool, got {affine!r}")
    return 2 * channels if affine else 0
