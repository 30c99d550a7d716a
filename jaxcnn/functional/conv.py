"""Convolution and transposed convolution, 1D/2D/3D, on ``lax.conv_general_dilated``.

A network's "convolution" is cross-correlation: the kernel is not flipped. For the
flipped, signal-processing convolution see :func:`jaxcnn.functional.convolve2d`.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxcnn.functional import _arguments as args
from jaxcnn.functional import _fast_conv

PADDING_MODES = ("zeros", "constant", "reflect", "replicate", "circular")
# jnp.pad's name for each padding mode.
_JNP_PAD_MODE = {"constant": "constant", "reflect": "reflect", "replicate": "edge", "circular": "wrap"}


def _spatial_axes(ndim: int, is_channels_last: bool) -> tuple[int, ...]:
    return tuple(range(1, ndim - 1)) if is_channels_last else tuple(range(2, ndim))


def pad_spatial(
    x: jnp.ndarray,
    pairs: tuple[tuple[int, int], ...],
    *,
    mode: str = "zeros",
    value: float = 0.0,
    layout: str = "NHWC",
) -> jnp.ndarray:
    """Pads the spatial axes of ``x`` with ``(lo, hi)`` pairs in one of :data:`PADDING_MODES`.

    Args:
      x: ``(N, *spatial, C)`` for ``layout="NHWC"`` or ``(N, C, *spatial)`` for ``"NCHW"``.
      pairs: one ``(lo, hi)`` pair per spatial axis.
      mode: ``"zeros"``, ``"constant"`` (with ``value``), ``"reflect"`` (mirror without the
        edge, as PyTorch), ``"replicate"`` (repeat the edge) or ``"circular"`` (wrap around).
    """
    op = "pad_spatial"
    if mode not in PADDING_MODES:
        raise ValueError(f"{op}: unknown padding_mode={mode!r}; expected one of {PADDING_MODES}")
    x = args.as_array(x, "x", op)
    last = args.channels_last(layout, op, x.ndim - 2)
    axes = _spatial_axes(x.ndim, last)
    if not isinstance(pairs, (tuple, list)) or len(pairs) != len(axes) or not all(
        isinstance(p, (tuple, list)) and len(p) == 2
        and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 0 for v in p)
        for p in pairs
    ):
        raise ValueError(
            f"{op}: pairs must be one (lo, hi) pair of ints >= 0 per spatial axis ({len(axes)} for x shape "
            f"{tuple(x.shape)}), got {pairs!r}"
        )
    pairs = tuple((int(lo), int(hi)) for lo, hi in pairs)
    widths = [(0, 0)] * x.ndim
    for axis, pair in zip(axes, pairs):
        widths[axis] = pair
    if all(p == (0, 0) for p in pairs):
        return x
    if mode == "reflect":
        for axis, (lo, hi) in zip(axes, pairs):
            if lo >= x.shape[axis] or hi >= x.shape[axis]:
                raise ValueError(
                    f"{op}: reflect padding {(lo, hi)} must be smaller than the input size "
                    f"{x.shape[axis]} on axis {axis} (input shape {tuple(x.shape)})"
                )
    if mode in ("replicate", "circular"):
        for axis, (lo, hi) in zip(axes, pairs):
            if x.shape[axis] == 0:
                raise ValueError(f"{op}: cannot {mode}-pad an empty axis {axis}")
            if mode == "circular" and (lo > x.shape[axis] or hi > x.shape[axis]):
                raise ValueError(
                    f"{op}: circular padding {(lo, hi)} must not exceed the input size "
                    f"{x.shape[axis]} on axis {axis} (input shape {tuple(x.shape)})"
                )
    if mode == "zeros":
        return jnp.pad(x, widths)
    if mode == "constant":
        return jnp.pad(x, widths, constant_values=jnp.asarray(value, x.dtype))
    return jnp.pad(x, widths, mode=_JNP_PAD_MODE[mode])


def _add_bias(y: jnp.ndarray, bias: jnp.ndarray | None, is_channels_last: bool) -> jnp.ndarray:
    if bias is None:
        return y
    shape = [1] * y.ndim
    shape[-1 if is_channels_last else 1] = bias.shape[0]
    return y + bias.reshape(shape).astype(y.dtype)


def _check_bias(bias: Any, c_out: int, dtype: Any, op: str) -> jnp.ndarray | None:
    if bias is None:
        return None
    bias = args.as_array(bias, "bias", op)
    if bias.shape != (c_out,):
        raise ValueError(f"{op}: bias must have shape ({c_out},) (one per output channel), got {tuple(bias.shape)}")
    return bias


def _check_dtypes(x: jnp.ndarray, kernel: jnp.ndarray, op: str) -> None:
    args.check_floating(x, "x", op)
    if x.dtype != kernel.dtype:
        raise TypeError(
            f"{op}: x has dtype {x.dtype} but kernel has dtype {kernel.dtype}; cast one to the "
            f"other (e.g. kernel.astype(x.dtype)) so the compute precision is explicit"
        )


def conv(
    x: Any,
    kernel: Any,
    bias: Any = None,
    *,
    stride: int | tuple[int, ...] = 1,
    padding: Any = "VALID",
    dilation: int | tuple[int, ...] = 1,
    groups: int = 1,
    padding_mode: str = "zeros",
    pad_value: float = 0.0,
    layout: str = "NHWC",
    precision: Any = None,
    impl: str | None = None,
) -> jnp.ndarray:
    """N-dimensional convolution (cross-correlation) of a batch, 1D/2D/3D by the rank of ``x``.

    Args:
      x: ``(N, *spatial, C_in)`` for ``layout="NHWC"`` or ``(N, C_in, *spatial)`` for
        ``layout="NCHW"``, with 1, 2 or 3 spatial axes.
      kernel: ``(*window, C_in // groups, C_out)`` for NHWC (Flax's convention) or PyTorch's
        ``(C_out, C_in // groups, *window)`` for NCHW.
      bias: optional ``(C_out,)``.
      stride, dilation: an int or one int per spatial axis, each >= 1.
      padding: ``"VALID"``, ``"SAME"`` (output ``ceil(in / stride)``; PyTorch's ``'same'`` for
        stride 1), an int, one int per axis, or one ``(lo, hi)`` pair per axis.
      groups: feature groups; ``groups == C_in`` with ``C_out = k * C_in`` is a depthwise conv.
      padding_mode: ``"zeros"``, ``"constant"`` (fills with ``pad_value``, e.g. 1.0),
        ``"reflect"``, ``"replicate"`` or ``"circular"``, as in ``torch.nn.Conv2d``.
      layout: ``"NHWC"`` (channels last, default) or ``"NCHW"`` (channels first, PyTorch
        parity: same arguments as ``torch.nn.functional.conv{1,2,3}d`` give the same numbers).
      precision: passed to ``lax.conv_general_dilated`` (or the fast path's ``dot_general``).
      impl: ``"auto"`` (default), ``"lax"`` or ``"im2col"``; ``None`` reads the environment
        variable ``JAXCNN_CONV_IMPL`` (default ``"auto"``). ``"lax"`` is the reference path,
        one ``lax.conv_general_dilated`` (and JAX's derived gradients). ``"auto"``, on the CPU
        backend for float32/float64 NHWC convolutions with ``groups=1``, computes the kernel
        gradient (and, for very thin channel counts, the forward pass and the input
        gradient) as matrix products on im2col patches, several times faster on XLA:CPU
        (``jaxcnn.functional._fast_conv``); a 1x1 convolution without padding is one
        matrix product of the (strided) input's rows with the kernel; grouped convolutions
        run as one dense convolution with a block-diagonal kernel (few channels per group or
        many groups, up to 128 channels), one convolution per group (up to 8 groups) or a
        batched matmul on shifted slices, and depthwise ones as elementwise products of shifted slices with a chunked kernel
        gradient, 3-50x faster to differentiate there; elsewhere it is ``"lax"``.
        ``"im2col"`` uses the matrix products for every pass where supported. All give the
        same values and gradients up to float rounding (tested), forward mode included. Read
        at trace time: a function already jitted keeps the path it was traced with.

    Returns:
      ``(N, *out_spatial, C_out)`` (NHWC) or ``(N, C_out, *out_spatial)`` (NCHW), where
      ``out = floor((in + lo + hi - dilation * (k - 1) - 1) / stride) + 1``.

    Example: a 5x5 image and the 3x3 filter [[1,0,1],[0,1,0],[1,0,1]] give a 3x3 map::

      conv(image[None, :, :, None], filt[:, :, None, None])[0, :, :, 0]
    """
    op = "conv"
    impl = _fast_conv.resolve_impl(impl, op)
    x = args.as_array(x, "x", op)
    kernel = args.as_array(kernel, "kernel", op)
    args.check_rank(x, "x", op, (3, 4, 5), "batch, 1-3 spatial axes and channels")
    n = x.ndim - 2
    last = args.channels_last(layout, op, n)
    if kernel.ndim != x.ndim:
        raise ValueError(
            f"{op}: kernel must have rank {x.ndim} to match x of shape {tuple(x.shape)} "
            f"({n} spatial dims), got kernel shape {tuple(kernel.shape)}"
        )
    _check_dtypes(x, kernel, op)
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
        raise ValueError(f"{op}: groups must be a positive int, got {groups!r}")
    if padding_mode not in PADDING_MODES:
        raise ValueError(f"{op}: unknown padding_mode={padding_mode!r}; expected one of {PADDING_MODES}")
    stride = args.as_tuple(stride, n, "stride", op)
    dilation = args.as_tuple(dilation, n, "dilation", op)
    pad = args.explicit_padding(padding, n, op)

    if last:
        window, c_in_per_group, c_out = kernel.shape[:n], kernel.shape[-2], kernel.shape[-1]
        c_in, in_sizes = x.shape[-1], x.shape[1:-1]
        kernel_desc = "(*window, C_in // groups, C_out)"
    else:
        c_out, c_in_per_group, window = kernel.shape[0], kernel.shape[1], kernel.shape[2:]
        c_in, in_sizes = x.shape[1], x.shape[2:]
        kernel_desc = "(C_out, C_in // groups, *window)"
    if c_in % groups:
        raise ValueError(f"{op}: groups={groups} must divide the input channels C_in={c_in} (x shape {tuple(x.shape)})")
    if c_out % groups:
        raise ValueError(
            f"{op}: groups={groups} must divide the output channels C_out={c_out} "
            f"(kernel shape {tuple(kernel.shape)})"
        )
    if c_in_per_group * groups != c_in:
        raise ValueError(
            f"{op}: channel mismatch: x of shape {tuple(x.shape)} has C_in={c_in} channels "
            f"(layout {layout}) but kernel {tuple(kernel.shape)} {kernel_desc} expects "
            f"C_in // groups = {c_in_per_group} with groups={groups}"
        )
    if any(k < 1 for k in window):
        raise ValueError(f"{op}: kernel window must be non-empty, got kernel shape {tuple(kernel.shape)}")
    bias = _check_bias(bias, c_out, x.dtype, op)

    if pad == "SAME":
        pad = args.same_padding(in_sizes, window, stride, dilation)
    elif pad == "VALID":
        pad = ((0, 0),) * n
    for axis, (size, k, d, (lo, hi)) in enumerate(zip(in_sizes, window, dilation, pad)):
        if size + lo + hi < d * (k - 1) + 1:
            raise ValueError(
                f"{op}: kernel is larger than the padded input on spatial axis {axis}: input "
                f"{size} + padding {(lo, hi)} < dilated window {d * (k - 1) + 1} "
                f"(x shape {tuple(x.shape)}, kernel shape {tuple(kernel.shape)}, dilation {dilation})"
            )
    if padding_mode != "zeros":
        x = pad_spatial(x, pad, mode=padding_mode, value=pad_value, layout=layout)
        pad = ((0, 0),) * n
        in_sizes = x.shape[1:-1] if last else x.shape[2:]

    if _fast_conv.use_pointwise(impl, x.dtype, window, pad, channels_last=last, groups=groups):
        return _add_bias(_fast_conv.pointwise_conv(x, kernel, stride, precision), bias, last)
    fast = _fast_conv.plan(
        impl, x.shape, x.dtype, tuple(window), c_out, stride, tuple(pad), dilation, precision,
        channels_last=last, groups=groups,
    )
    if fast is not None:
        return _add_bias(_fast_conv.conv_fast(x, kernel, fast), bias, last)
    if _fast_conv.use_grouped(impl, x.dtype, channels_last=last, groups=groups):
        y = _fast_conv.grouped_conv(x, kernel, stride, tuple(pad), dilation, groups, precision, impl)
        return _add_bias(y, bias, last)
    y = lax.conv_general_dilated(
        x,
        kernel,
        window_strides=stride,
        padding=pad,
        rhs_dilation=dilation,
        dimension_numbers=args.conv_dimension_numbers(n, last),
        feature_group_count=groups,
        precision=precision,
    )
    return _add_bias(y, bias, last)


def conv_transpose(
    x: Any,
    kernel: Any,
    bias: Any = None,
    *,
    stride: int | tuple[int, ...] = 1,
    padding: Any = 0,
    output_padding: int | tuple[int, ...] = 0,
    dilation: int | tuple[int, ...] = 1,
    groups: int = 1,
    layout: str = "NHWC",
    precision: Any = None,
    impl: str | None = None,
) -> jnp.ndarray:
    """Transposed convolution (the gradient of :func:`conv` w.r.t. its input), 1D/2D/3D.

    Args:
      x: ``(N, *spatial, C_in)`` (NHWC) or ``(N, C_in, *spatial)`` (NCHW).
      kernel: PyTorch's ``(C_in, C_out // groups, *window)`` for NCHW; for NHWC the same
        kernel with its axes moved, ``(*window, C_in, C_out // groups)``.
      bias: optional ``(C_out,)``.
      stride, dilation: an int or one int per spatial axis.
      padding: as in ``torch.nn.ConvTranspose2d`` — an int, one int per axis or ``(lo, hi)``
        pairs, the amount cropped from each side of the full output; or ``"VALID"`` (= 0) or
        ``"SAME"`` (output ``in * stride``, needs ``dilation * (k - 1) + 1 >= stride``).
      output_padding: extra size added at the end of each axis, ``< max(stride, dilation)``.
      precision: passed to ``lax.conv_general_dilated`` (or the fast path's ``dot_general``).
      impl: ``"auto"``, ``"lax"`` or ``"im2col"`` as in :func:`conv` (``None`` reads
        ``JAXCNN_CONV_IMPL``). The matmul path computes the transposed convolution as the
        input gradient of a convolution, one matmul ``x @ K^T`` whose columns are summed
        into each output phase; it needs NHWC, ``groups=1`` and ``output_padding < stride``
        on every axis.

    Returns:
      ``out = (in - 1) * stride - lo - hi + dilation * (k - 1) + output_padding + 1``
      per spatial axis, laid out like ``x`` with ``C_out`` channels.
    """
    op = "conv_transpose"
    impl = _fast_conv.resolve_impl(impl, op)
    x = args.as_array(x, "x", op)
    kernel = args.as_array(kernel, "kernel", op)
    args.check_rank(x, "x", op, (3, 4, 5), "batch, 1-3 spatial axes and channels")
    n = x.ndim - 2
    last = args.channels_last(layout, op, n)
    if kernel.ndim != x.ndim:
        raise ValueError(
            f"{op}: kernel must have rank {x.ndim} to match x of shape {tuple(x.shape)}, "
            f"got kernel shape {tuple(kernel.shape)}"
        )
    _check_dtypes(x, kernel, op)
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
        raise ValueError(f"{op}: groups must be a positive int, got {groups!r}")
    stride = args.as_tuple(stride, n, "stride", op)
    dilation = args.as_tuple(dilation, n, "dilation", op)
    output_padding = args.as_tuple(output_padding, n, "output_padding", op, minimum=0)
    if last:
        window, k_in, c_out_per_group = kernel.shape[:n], kernel.shape[-2], kernel.shape[-1]
        c_in, in_sizes = x.shape[-1], x.shape[1:-1]
        # To PyTorch's (C_in, C_out // groups, *window).
        kernel = jnp.moveaxis(kernel, (n, n + 1), (0, 1))
    else:
        k_in, c_out_per_group, window = kernel.shape[0], kernel.shape[1], kernel.shape[2:]
        c_in, in_sizes = x.shape[1], x.shape[2:]
    if k_in != c_in:
        raise ValueError(
            f"{op}: channel mismatch: x of shape {tuple(x.shape)} has C_in={c_in} channels "
            f"(layout {layout}) but the kernel has {k_in} input channels (kernel shape "
            f"{tuple(kernel.shape)}, expected (C_in, C_out // groups, *window) in PyTorch order)"
        )
    if c_in % groups:
        raise ValueError(f"{op}: groups={groups} must divide the input channels C_in={c_in}")
    c_out = c_out_per_group * groups
    bias = _check_bias(bias, c_out, x.dtype, op)
    for axis, (op_, s, d) in enumerate(zip(output_padding, stride, dilation)):
        if op_ >= max(s, d):
            raise ValueError(
                f"{op}: output_padding={output_padding} must be smaller than stride or dilation "
                f"on every axis (axis {axis}: stride {s}, dilation {d})"
            )

    pad = args.explicit_padding(padding, n, op)
    if pad == "VALID":
        pad = ((0, 0),) * n
    elif pad == "SAME":
        pairs = []
        for axis, (k, s, d) in enumerate(zip(window, stride, dilation)):
            total = d * (k - 1) + 1 - s
            if total < 0:
                raise ValueError(
                    f"{op}: padding='SAME' needs dilation*(k-1)+1 >= stride, got window {k}, "
                    f"stride {s}, dilation {d} on axis {axis}"
                )
            pairs.append((total // 2, total - total // 2))
        pad = tuple(pairs)
    out_spatial = []
    for axis, (size, k, s, d, (lo, hi), extra) in enumerate(
        zip(in_sizes, window, stride, dilation, pad, output_padding)
    ):
        out = (size - 1) * s - lo - hi + d * (k - 1) + extra + 1
        out_spatial.append(out)
        if out < 1:
            raise ValueError(
                f"{op}: padding {(lo, hi)} crops everything on spatial axis {axis}: output size "
                f"would be {out} (x shape {tuple(x.shape)}, kernel shape {tuple(kernel.shape)})"
            )

    fast = _fast_conv.plan_transpose(
        impl, x.dtype, tuple(window), stride, tuple(pad), dilation, output_padding, precision,
        channels_last=last, groups=groups,
    )
    if fast is not None:
        # PyTorch's (C_in, C_out, *window) is the HWIO kernel (*window, C_out, C_in) of the
        # convolution whose input gradient this is.
        forward_kernel = jnp.moveaxis(kernel, (0, 1), (-1, -2))
        y = _fast_conv.matmul_transpose(x, forward_kernel, tuple(out_spatial), fast)
        return _add_bias(y, bias, last)

    # The transposed conv is a conv of the stride-dilated input with the spatially flipped
    # kernel whose in/out channels are swapped within each group.
    k = kernel.reshape((groups, c_in // groups, c_out_per_group) + tuple(window))
    k = jnp.swapaxes(k, 1, 2).reshape((c_out, c_in // groups) + tuple(window))
    k = jnp.flip(k, axis=tuple(range(2, 2 + n)))
    conv_pad = tuple(
        (d * (kk - 1) - lo, d * (kk - 1) - hi + extra)
        for kk, d, (lo, hi), extra in zip(window, dilation, pad, output_padding)
    )
    dn = args.conv_dimension_numbers(n, last)
    dn = (dn[0], "OI" + dn[1].replace("I", "").replace("O", ""), dn[2])
    # Negative padding crops, which lax supports; it is applied after lhs dilation.
    y = lax.conv_general_dilated(
        x,
        k,
        window_strides=(1,) * n,
        padding=conv_pad,
        lhs_dilation=stride,
        rhs_dilation=dilation,
        dimension_numbers=dn,
        feature_group_count=groups,
        precision=precision,
    )
    return _add_bias(y, bias, last)
