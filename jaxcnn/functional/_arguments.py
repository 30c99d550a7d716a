"""Argument normalisation and validation shared by the functional ops.

Every public op checks its arguments here, in Python, at trace time, so a user sees a
``ValueError``/``TypeError`` that names the argument and the shapes instead of an XLA error.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

# A layout is written once, as data: the position of the channel axis and the kernel
# convention. "NHWC"/"NCHW" are accepted for any spatial rank (1D/2D/3D); the rank-specific
# spellings are accepted too and must agree with the input's rank.
_CHANNELS_LAST = {"NHWC": None, "NWC": 1, "NDHWC": 3, "channels_last": None}
_CHANNELS_FIRST = {"NCHW": None, "NCW": 1, "NCDHW": 3, "channels_first": None}
LAYOUTS = tuple(_CHANNELS_LAST) + tuple(_CHANNELS_FIRST)


def channels_last(layout: str, op: str, spatial_rank: int | None = None) -> bool:
    """True for a channels-last layout, False for channels-first; raises on anything else."""
    if layout in _CHANNELS_LAST:
        fixed = _CHANNELS_LAST[layout]
        result = True
    elif layout in _CHANNELS_FIRST:
        fixed = _CHANNELS_FIRST[layout]
        result = False
    else:
        raise ValueError(f"{op}: unknown layout={layout!r}; expected one of {LAYOUTS}")
    if fixed is not None and spatial_rank is not None and fixed != spatial_rank:
        raise ValueError(
            f"{op}: layout={layout!r} is for {fixed} spatial dimension(s) but the input has "
            f"{spatial_rank}; use 'NHWC' or 'NCHW', which fit any rank"
        )
    return result


def conv_dimension_numbers(spatial_rank: int, is_channels_last: bool) -> tuple[str, str, str]:
    """``lax.conv_general_dilated`` dimension numbers for a layout.

    Channels-last: input ``(N, *spatial, C)``, kernel ``(*spatial, I, O)``.
    Channels-first: input ``(N, C, *spatial)``, kernel ``(O, I, *spatial)`` (PyTorch).
    """
    sp = "DHW"[3 - spatial_rank :]
    if is_channels_last:
        return (f"N{sp}C", f"{sp}IO", f"N{sp}C")
    return (f"NC{sp}", f"OI{sp}", f"NC{sp}")


def as_array(x: Any, name: str, op: str) -> jnp.ndarray:
    """Converts to a JAX array, rejecting objects that are not array-like."""
    if isinstance(x, (str, bytes)) or x is None:
        raise TypeError(f"{op}: {name} must be an array, got {type(x).__name__}")
    try:
        return jnp.asarray(x)
    except TypeError as err:
        raise TypeError(f"{op}: {name} must be an array, got {type(x).__name__}") from err


def check_floating(x: jnp.ndarray, name: str, op: str) -> None:
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(
            f"{op}: {name} must have a floating dtype, got {x.dtype} (shape {tuple(x.shape)}); "
            f"cast it first, e.g. {name}.astype(jnp.float32)"
        )


def check_rank(x: jnp.ndarray, name: str, op: str, ranks: Sequence[int], meaning: str = "") -> None:
    if x.ndim not in ranks:
        expected = " or ".join(str(r) for r in ranks)
        hint = f" ({meaning})" if meaning else ""
        raise ValueError(
            f"{op}: {name} must have rank {expected}{hint}, got shape {tuple(x.shape)} (rank {x.ndim})"
        )


def check_nonempty(x: jnp.ndarray, name: str, op: str) -> None:
    if x.size == 0:
        raise ValueError(f"{op}: {name} is empty, shape {tuple(x.shape)}")


def as_tuple(value: Any, n: int, name: str, op: str, *, minimum: int = 1,
             broadcast_one: bool = True) -> tuple[int, ...]:
    """An int or a length-``n`` sequence of ints -> ``n``-tuple, each ``>= minimum``.

    With ``broadcast_one`` a one-element sequence counts as its int, as PyTorch's pooling and
    convolutions read ``stride=(1,)`` (not its ``output_size`` or ``interpolate(size=...)``).
    """
    if broadcast_one and isinstance(value, Sequence) and not isinstance(value, str) and len(value) == 1:
        value = value[0]
    if isinstance(value, bool):
        raise TypeError(f"{op}: {name} must be an int or {n} ints, got {value!r}")
    if isinstance(value, int) or (hasattr(value, "__index__") and not isinstance(value, Sequence)):
        values = (int(value),) * n
    elif isinstance(value, Sequence) and not isinstance(value, str):
        if len(value) != n:
            raise ValueError(
                f"{op}: {name}={tuple(value)!r} has {len(value)} entries but the input has "
                f"{n} spatial dimension(s)"
            )
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            raise TypeError(f"{op}: {name} must contain ints, got {tuple(value)!r}")
        values = tuple(int(v) for v in value)
    else:
        raise TypeError(f"{op}: {name} must be an int or {n} ints, got {value!r}")
    if any(v < minimum for v in values):
        raise ValueError(f"{op}: {name} must be >= {minimum} in every dimension, got {values}")
    return values


def explicit_padding(
    padding: Any, n: int, op: str, name: str = "padding"
) -> tuple[tuple[int, int], ...] | str:
    """Normalises ``padding`` to ``"VALID"``, ``"SAME"`` or ``n`` non-negative ``(lo, hi)`` pairs.

    Accepted: ``"VALID"``/``"SAME"`` (any case), an int, ``n`` ints, or ``n`` ``(lo, hi)`` pairs;
    a one-int sequence ``(p,)`` counts as ``p`` on every axis, as in PyTorch.
    """
    if isinstance(padding, Sequence) and not isinstance(padding, str) and len(padding) == 1 \
            and isinstance(padding[0], int) and not isinstance(padding[0], bool):
        padding = padding[0]
    if isinstance(padding, str):
        upper = padding.upper()
        if upper not in ("VALID", "SAME"):
            raise ValueError(
                f"{op}: {name}={padding!r} is not understood; expected 'VALID', 'SAME', an int, "
                f"{n} ints or {n} (lo, hi) pairs"
            )
        return upper
    if isinstance(padding, bool):
        raise TypeError(f"{op}: {name} must be a string, an int or pairs, got {padding!r}")
    if isinstance(padding, int):
        pairs = ((padding, padding),) * n
    elif isinstance(padding, Sequence):
        if len(padding) != n:
            raise ValueError(
                f"{op}: {name}={tuple(padding)!r} has {len(padding)} entries but the input has "
                f"{n} spatial dimension(s)"
            )
        pairs = []
        for p in padding:
            if isinstance(p, int) and not isinstance(p, bool):
                pairs.append((p, p))
            elif (
                isinstance(p, Sequence)
                and len(p) == 2
                and all(isinstance(v, int) and not isinstance(v, bool) for v in p)
            ):
                pairs.append((int(p[0]), int(p[1])))
            else:
                raise TypeError(f"{op}: {name} entries must be ints or (lo, hi) int pairs, got {p!r}")
        pairs = tuple(pairs)
    else:
        raise TypeError(f"{op}: {name} must be a string, an int or pairs, got {padding!r}")
    if any(v < 0 for pair in pairs for v in pair):
        raise ValueError(f"{op}: {name} must be non-negative, got {pairs}")
    return tuple(pairs)


def same_padding(
    in_sizes: Sequence[int], window: Sequence[int], stride: Sequence[int], dilation: Sequence[int]
) -> tuple[tuple[int, int], ...]:
    """Explicit pairs for ``"SAME"``: output size ``ceil(in / stride)``, extra padding at the end.

    For stride 1 this is also PyTorch's ``padding='same'``.
    """
    pairs = []
    for size, k, s, d in zip(in_sizes, window, stride, dilation):
        effective = d * (k - 1) + 1
        out = -(-size // s)
        total = max((out - 1) * s + effective - size, 0)
        pairs.append((total // 2, total - total // 2))
    return tuple(pairs)


def check_label_range(labels: Any, num_classes: int, op: str, *, ignore_index: int | None = None,
                      name: str = "labels") -> None:
    """Raises ``ValueError`` naming the first label outside ``[0, num_classes)`` (and not
    ``ignore_index``) and its position, as PyTorch does.

    Only concrete labels can be checked: under ``jit``/``vmap``/``grad`` tracing the values are
    unknown, and the caller's traced fallback applies (NaN loss, or the position not counted).
    """
    if isinstance(labels, jax.core.Tracer):
        return
    values = np.asarray(labels)
    bad = (values < 0) | (values >= num_classes)
    if ignore_index is not None:
        bad &= values != ignore_index
    if not bad.any():
        return
    where = np.argwhere(bad)
    position = tuple(int(i) for i in where[0])
    index = ", ".join(map(str, position)) if position else ""
    ignored = "" if ignore_index is None else f" and is not ignore_index={ignore_index}"
    raise ValueError(
        f"{op}: {name}[{index}] = {values[position]} is outside [0, {num_classes}){ignored} "
        f"({len(where)} such {name} in all, shape {values.shape})"
    )


def check_batch_axis(x: jnp.ndarray, kernel: jnp.ndarray, layout: str, op: str) -> None:
    """A single example given to a batched op: ``x`` one rank short of a kernel of rank 3-5.

    PyTorch accepts an unbatched ``(C, H, W)``; here every op takes a batch, so the message
    says what is missing rather than that the kernel has the wrong rank.
    """
    n = kernel.ndim - 2
    if kernel.ndim not in (3, 4, 5) or x.ndim != kernel.ndim - 1:
        return
    spatial = ", ".join("DHW"[3 - n :])
    last = layout in _CHANNELS_LAST
    axes = f"({spatial}, C)" if last else f"(C, {spatial})"
    raise ValueError(
        f"{op}: x must have a batch axis: got {tuple(x.shape)}, read as one example {axes} "
        f"(layout {layout}), for the {n}D kernel of shape {tuple(kernel.shape)}; expected "
        f"{'(N, ' + spatial + ', C)' if last else '(N, C, ' + spatial + ')'}, e.g. x[None] for a single example"
    )
