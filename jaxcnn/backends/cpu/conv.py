"""Convolution kernels for XLA:CPU: im2col, phase, taps, pointwise, grouped, depthwise and
transposed forms of :func:`jaxcnn.functional.conv` / ``conv_transpose``.

Used only when the CPU backend is on (see :mod:`jaxcnn.backends.cpu` and
``docs/cpu_backend.md``, which also holds the measurements behind each rule).

What. Each pass can be one ``dot_general`` on patches built from shifted (strided) slices:

- forward: ``y = patches(x) @ K``, ``patches(x)`` ``(N, *out, taps * C_in)`` and ``K`` the
  kernel reshaped to ``(taps * C_in, C_out)``;
- kernel gradient: ``dK = patches_t(x) @ dy`` with the patches built already transposed,
  ``(taps * C_in, N * prod(out))``, from the input moved to channels-first: a plain
  row-major matmul;
- input gradient: ``dx = col2im(dy @ K^T)``, each tap's columns zero-padded back into place
  and summed (XLA fuses the sum into one loop).

Strided layers have two more forms, each a sum over phases (the cells of the stride's
lattice) of stride-1 pieces: :func:`phase_conv` reads each input phase through the taps that
land on it, so that the input gradient JAX derives has no zero-dilated output gradient to
convolve; :func:`matmul_transpose` (the transposed convolution) sums each output phase's
taps and interleaves the phases with a reshape instead of padding every tap into place.
A single-channel input's forward pass has a third form, :func:`taps_conv`: the sum over the
window's taps of shifted inputs times kernel rows, all elementwise (as for depthwise layers).
The forward pass and the input gradient build their patches a few images at a time (a
``lax.scan`` over interleaved batch chunks, :func:`_chunked`) only to bound memory.

How it plugs in. :func:`conv_fast` is a ``jax.custom_jvp`` whose tangent is a sum of two
linear maps, one per argument, each written so that its transpose is the implementation
chosen for that pass: reverse mode then computes ``dx`` and ``dK`` that way, forward mode and
higher derivatives keep working. :func:`plan` picks each pass's implementation at trace time
from the dtype, layout, channel counts and the XLA options the step is compiled with; the
platform is chosen by the caller (``lax.platform_dependent``). Only the summation order
differs from ``lax.conv_general_dilated``; the tests hold values and gradients to float32
rounding. Nothing here changes a global JAX or XLA setting.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.custom_derivatives import SymbolicZero

# The forward pass and the input gradient stack their chunks' outputs, which costs a pass
# over the output; they are chunked only to bound memory.
WIDE_CHUNK_BYTES = 64 << 20
# Eigen's convolution is slow when the channels it contracts (THIN_INPUT) or produces
# (THIN_OUTPUT) are this few; see :func:`plan`.
THIN_INPUT = 4
THIN_OUTPUT = 8
# A single-channel input (a grey first layer) producing at most this many channels runs its
# forward pass as a sum over taps (:func:`taps_conv`); see :func:`plan`.
TAPS_MAX_OUTPUT = 16

Pads = tuple[tuple[int, int], ...]


class Plan(NamedTuple):
    """A convolution's static geometry and the implementation of each pass."""

    stride: tuple[int, ...]
    pads: Pads
    dilation: tuple[int, ...]
    precision: Any
    forward: str  # "lax" | "im2col" | "taps"
    input_grad: str  # "lax" | "im2col" | "phase"
    kernel_grad: str
    wide_chunk: int  # images per chunk of the im2col forward pass / input gradient


def _cpu_float(dtype: Any) -> bool:
    """Whether "auto" may take a kernel: float32/float64 (the platform is chosen by the caller,
    ``lax.platform_dependent``)."""
    return jnp.dtype(dtype) in (jnp.dtype(jnp.float32), jnp.dtype(jnp.float64))


def out_sizes(
    in_sizes: tuple[int, ...], window: tuple[int, ...], stride: tuple[int, ...], pads: Pads, dilation: tuple[int, ...]
) -> tuple[int, ...]:
    return tuple(
        (size + lo + hi - d * (k - 1) - 1) // s + 1
        for size, k, s, (lo, hi), d in zip(in_sizes, window, stride, pads, dilation)
    )


def _chunk(batch: int, per_image_bytes: int, limit: int, at_most: int | None = None) -> int:
    """The largest divisor of ``batch`` whose patches fit in ``limit`` bytes (at least 1),
    and no larger than ``at_most`` when given."""
    target = max(1, limit // max(per_image_bytes, 1))
    if at_most is not None:
        target = min(target, at_most)
    if target >= batch:
        return batch
    return max(d for d in range(1, target + 1) if batch % d == 0)


def _loop_chunk(batch: int, out_bytes_per_image: int) -> int:
    """Images per chunk of :func:`taps_conv`: at most half the batch, so that it is a loop
    whose output is materialised, and at most ``WIDE_CHUNK_BYTES / 8`` of output per chunk."""
    return _chunk(batch, out_bytes_per_image, WIDE_CHUNK_BYTES // 8, at_most=max(batch // 2, 1))


def plan(
    impl: str,
    x_shape: tuple[int, ...],
    dtype: Any,
    window: tuple[int, ...],
    c_out: int,
    stride: tuple[int, ...],
    pads: Pads,
    dilation: tuple[int, ...],
    precision: Any,
    *,
    channels_last: bool,
    groups: int,
    xla_options: bool = False,
) -> Plan | None:
    """The kernel plan for a convolution, or ``None`` to use ``lax`` for every pass.

    ``"lax"``: ``None``. Otherwise the kernels need channels last and ``groups == 1``.
    ``"im2col"``: every pass by im2col. ``"auto"``: float32/float64 only, pass by pass
    (``thin`` means ``C <= THIN_OUTPUT``):

    - with ``xla_options`` (compiled with :data:`jaxcnn.backends.cpu.CPU_OPTIONS`, XLA's own
      convolutions): the forward pass and the kernel gradient by ``lax``, except the kernel
      gradient of a grey or RGB input into many maps (``C_in <= THIN_INPUT < THIN_OUTPUT <
      C_out``), which is im2col;
    - under XLA's default options: the kernel gradient by im2col unless both channel counts
      are thin (``C_in <= THIN_INPUT`` and ``C_out <= THIN_OUTPUT``); the forward pass by
      im2col when ``C_in <= THIN_INPUT`` or ``C_out <= THIN_OUTPUT``, else ``lax``;
    - in both: the input gradient by im2col when ``C_in <= THIN_OUTPUT``, by
      :func:`phase_conv` for a layer with a stride above 1, a window wider than one cell, no
      dilation and neither channel count thin, else ``lax``; a single-channel input (window
      wider than one cell) takes its forward pass by :func:`taps_conv` when ``C_out <=
      TAPS_MAX_OUTPUT``, else ``lax``.

    A 1x1 window without padding does not come here under ``"auto"``: it is one matrix
    product (:func:`use_pointwise`).
    """
    if impl == "lax" or not channels_last or groups != 1 or x_shape[0] == 0:
        return None  # an empty batch has nothing to split into chunks
    outs = out_sizes(tuple(x_shape[1:-1]), window, stride, pads, dilation)
    itemsize = jnp.dtype(dtype).itemsize
    per_image = math.prod(outs) * math.prod(window) * x_shape[-1] * itemsize
    wide = _chunk(x_shape[0], per_image, WIDE_CHUNK_BYTES)
    if impl == "im2col":
        return Plan(stride, pads, dilation, precision, "im2col", "im2col", "im2col", wide)
    if not _cpu_float(dtype):
        return None
    c_in = x_shape[-1]
    thin = c_in <= THIN_OUTPUT or c_out <= THIN_OUTPUT
    by_phase = (
        not thin and math.prod(window) > 1
        and any(s > 1 for s in stride) and all(d == 1 for d in dilation)
    )
    if xla_options:
        # Compiled with jaxcnn.backends.cpu.CPU_OPTIONS, XLA's own (Eigen) convolutions run
        # the forward pass and the kernel gradient faster than im2col, thin layers included,
        # but for the kernel gradient of a grey or RGB input into many maps (see docstring).
        forward = "lax"
        kernel_grad = "im2col" if c_in <= THIN_INPUT and c_out > THIN_OUTPUT else "lax"
    else:
        forward = "im2col" if c_in <= THIN_INPUT or c_out <= THIN_OUTPUT else "lax"
        kernel_grad = "lax" if c_in <= THIN_INPUT and c_out <= THIN_OUTPUT else "im2col"
    if c_in == 1 and math.prod(window) > 1:
        forward = "taps" if c_out <= TAPS_MAX_OUTPUT else "lax"
        if forward == "taps":
            wide = _loop_chunk(x_shape[0], math.prod(outs) * c_out * itemsize)
    input_grad = "im2col" if c_in <= THIN_OUTPUT else "phase" if by_phase else "lax"
    if forward == input_grad == kernel_grad == "lax":
        return None
    return Plan(stride, pads, dilation, precision, forward, input_grad, kernel_grad, wide)


def _patches(
    x: jnp.ndarray, window: tuple[int, ...], stride: tuple[int, ...], pads: Pads, dilation: tuple[int, ...]
) -> jnp.ndarray:
    """``(N, *in, C)`` -> ``(N, *out, taps * C)``, tap-major with taps in row-major order.

    Column ``t * C + c`` holds channel ``c`` under window offset ``t``: the row order of an
    HWIO kernel reshaped to ``(taps * C, O)``. The taps are stacked on a new axis before the
    channels (a concatenation along the channel axis itself is slower in XLA:CPU).
    """
    cols = _shifted(x, window, stride, pads, dilation)
    if len(cols) == 1:
        return cols[0]
    stacked = jnp.stack(cols, axis=-2)
    return stacked.reshape((*stacked.shape[:-2], -1))


def _patches_transposed(
    x: jnp.ndarray, window: tuple[int, ...], stride: tuple[int, ...], pads: Pads, dilation: tuple[int, ...]
) -> jnp.ndarray:
    """``(N, *in, C)`` -> ``(taps * C, N * prod(out))``: :func:`_patches` transposed.

    Built from ``x`` moved to ``(C, N, *in)`` (a transpose of the input, not of the 9x larger
    patches), so the kernel gradient ``patches^T @ dy`` is a plain row-major matmul, which
    XLA:CPU hands to its fast matmul library (faster than the transposed form).
    """
    n = len(window)
    xt = jnp.moveaxis(x, -1, 0)
    if any(p != (0, 0) for p in pads):
        xt = jnp.pad(xt, ((0, 0), (0, 0), *pads))
    outs = out_sizes(xt.shape[2:], window, stride, ((0, 0),) * n, dilation)
    cols = []
    for offset in np.ndindex(*window):
        start = (0, 0, *(o * d for o, d in zip(offset, dilation)))
        limit = (*xt.shape[:2], *(b + (m - 1) * s + 1 for b, m, s in zip(start[2:], outs, stride)))
        cols.append(lax.slice(xt, start, limit, (1, 1, *stride)))
    stacked = jnp.stack(cols, axis=0)
    return stacked.reshape(stacked.shape[0] * stacked.shape[1], -1)


def _kernel_tangent_chunk(x: jnp.ndarray, tk: jnp.ndarray, p: Plan) -> jnp.ndarray:
    """``patches(x) @ tK`` written on the transposed patches: ``(N, *out, O)``.

    Linear in ``tK``; its transpose is ``patches_t(x) @ dy``, the row-major kernel gradient.
    """
    window = tk.shape[:-2]
    pt = _patches_transposed(x, window, p.stride, p.pads, p.dilation)
    k = tk.reshape(-1, tk.shape[-1])
    y = lax.dot_general(pt, k, (((0,), (0,)), ((), ())), precision=p.precision)
    outs = out_sizes(tuple(x.shape[1:-1]), window, p.stride, p.pads, p.dilation)
    return y.reshape((x.shape[0], *outs, tk.shape[-1]))


def _chunked(fn, x: jnp.ndarray, other: jnp.ndarray, chunk: int, remat: bool = True) -> jnp.ndarray:
    """``fn(x, other)`` over the batch of ``x`` in chunks of ``chunk`` images (a ``lax.scan``).

    With ``remat``, ``fn`` is rematerialised (``jax.checkpoint``): what it computes from
    ``x`` alone (the patches) is rebuilt chunk by chunk in the transposed pass instead of
    being saved.

    The chunks interleave: chunk ``k`` holds images ``k, k + n/chunk, k + 2 n/chunk, ...``.
    A batch split over devices in contiguous blocks (data parallelism) then keeps every
    chunk's images on their own device whenever each device's share is a multiple of the
    number of chunks: the loop runs on local data, with no collective inside it. Contiguous
    chunks would cut each device's block across loop iterations, and XLA partitions that
    with collectives over subsets of the devices inside the loop, which XLA:CPU can deadlock.
    """
    body = jax.checkpoint(fn, prevent_cse=False) if remat else fn
    n = x.shape[0]
    if chunk >= n:
        return body(x, other)
    count = n // chunk
    chunks = jnp.swapaxes(x.reshape((chunk, count, *x.shape[1:])), 0, 1)
    _, ys = lax.scan(lambda carry, xc: (carry, body(xc, other)), None, chunks)
    return jnp.swapaxes(ys, 0, 1).reshape((n, *ys.shape[2:]))


def kernel_tangent(x: jnp.ndarray, tk: jnp.ndarray, p: Plan) -> jnp.ndarray:
    """The kernel tangent ``conv(x, tK)`` whose transpose is the im2col kernel gradient.

    One matrix product over the whole batch, not a loop over batch chunks: the kernel gradient
    contracts the batch, and a loop doing so puts a collective into every iteration when the
    batch is split over devices (see :func:`_chunked`).
    """
    return _chunked(functools.partial(_kernel_tangent_chunk, p=p), x, tk, x.shape[0])


def _im2col_chunk(x: jnp.ndarray, kernel: jnp.ndarray, p: Plan) -> jnp.ndarray:
    patches = _patches(x, kernel.shape[:-2], p.stride, p.pads, p.dilation)
    k = kernel.reshape(-1, kernel.shape[-1])
    return lax.dot_general(patches, k, (((patches.ndim - 1,), (0,)), ((), ())), precision=p.precision)


def im2col_conv(x: jnp.ndarray, kernel: jnp.ndarray, p: Plan) -> jnp.ndarray:
    """``patches(x) @ K``, ``p.wide_chunk`` images at a time; linear in each argument.

    Under reverse mode its transpose in ``x`` is col2im (the input gradient), chunk by chunk.
    """
    return _chunked(functools.partial(_im2col_chunk, p=p), x, kernel, p.wide_chunk)


def lax_conv(x: jnp.ndarray, kernel: jnp.ndarray, p: Plan) -> jnp.ndarray:
    n = x.ndim - 2
    sp = "DHW"[3 - n :]
    return lax.conv_general_dilated(
        x,
        kernel,
        window_strides=p.stride,
        padding=p.pads,
        rhs_dilation=p.dilation,
        dimension_numbers=(f"N{sp}C", f"{sp}IO", f"N{sp}C"),
        precision=p.precision,
    )


def _phase_taps(size: int, stride: int, dilation: int) -> list[tuple[int, int, int, int]]:
    """One axis of a strided convolution split by input phase: ``(start, k0, taps, step)`` each.

    Window tap ``k`` reads padded input ``o * s + k * d``: phase ``(k * d) % s`` of that axis,
    at phase offset ``o + (k * d) // s``. Taps ``k0, k0 + s/g, ...`` (``g = gcd(s, d)``) share a
    phase and sit ``d/g`` apart there, so each phase is a stride-1 convolution with
    dilation ``d/g`` whose padded input starts at ``start`` (stride ``s``) in the padded axis.
    """
    g = math.gcd(stride, dilation)
    out = []
    for k0 in range(min(stride // g, size)):
        taps = len(range(k0, size, stride // g))
        out.append((k0 * dilation, k0, taps, stride // g))
    return out


def phase_conv(x: jnp.ndarray, kernel: jnp.ndarray, p: Plan) -> jnp.ndarray:
    """A strided convolution as a sum of stride-1 convolutions, one per input phase.

    ``x`` ``(N, *in, C)``, HWIO ``kernel``; the same values as :func:`lax_conv` up to the
    summation order. Why: XLA differentiates a strided convolution in its input by convolving
    the output gradient dilated with ``stride - 1`` zeros, which XLA:CPU's convolutions run
    several times slower than the forward pass. Here each term reads one phase of the padded input (a strided slice) through the
    taps that land on it, so the input gradient JAX derives is a stride-1 convolution per phase
    whose result is placed back with an interior pad: no multiplications by inserted zeros.
    """
    window = kernel.shape[:-2]
    n = len(window)
    if any(lo or hi for lo, hi in p.pads):
        x = lax.pad(x, np.array(0, x.dtype), ((0, 0, 0), *((lo, hi, 0) for lo, hi in p.pads), (0, 0, 0)))
    outs = out_sizes(tuple(x.shape[1:-1]), window, p.stride, ((0, 0),) * n, p.dilation)
    sp = "DHW"[3 - n :]
    axes = [_phase_taps(k, s, d) for k, s, d in zip(window, p.stride, p.dilation)]
    total = None
    for choice in np.ndindex(*(len(a) for a in axes)):
        phases = [a[i] for a, i in zip(axes, choice)]
        start = [0] + [first for first, _, _, _ in phases] + [0]
        # Each phase reads (out - 1) + (taps - 1) * d/g + 1 cells, stride s apart.
        limit = [x.shape[0]] + [
            first + ((m - 1) + (taps - 1) * (d // math.gcd(s, d))) * s + 1
            for (first, _, taps, _), m, s, d in zip(phases, outs, p.stride, p.dilation)
        ] + [x.shape[-1]]
        phase = lax.slice(x, start, limit, (1, *p.stride, 1))
        sub = lax.slice(
            kernel, [k0 for _, k0, _, _ in phases] + [0, 0],
            [k0 + (taps - 1) * step + 1 for _, k0, taps, step in phases] + list(kernel.shape[-2:]),
            [step for *_, step in phases] + [1, 1],
        )
        term = lax.conv_general_dilated(
            phase, sub, window_strides=(1,) * n, padding=((0, 0),) * n,
            rhs_dilation=tuple(d // math.gcd(s, d) for s, d in zip(p.stride, p.dilation)),
            dimension_numbers=(f"N{sp}C", f"{sp}IO", f"N{sp}C"), precision=p.precision,
        )
        total = term if total is None else total + term
    return total


def _tap_sum(x: jnp.ndarray, kernel: jnp.ndarray, p: Plan) -> jnp.ndarray:
    """Sum over the window's taps of shifted inputs times the kernel, all elementwise.

    ``x`` ``(N, *in, C)``, ``kernel`` ``(*window, 1, C * m)`` -> ``(N, *out, C * m)``: a
    depthwise convolution with channel multiplier ``m``; with ``C == 1``, any convolution of a
    single-channel input.
    """
    window = kernel.shape[:-2]
    c, o = x.shape[-1], kernel.shape[-1]
    k = kernel.reshape(math.prod(window), o)
    y = None
    for t, col in enumerate(_shifted(x, window, p.stride, p.pads, p.dilation)):
        # Output channel i * m + j reads input channel i. Repeating the input keeps the
        # channels the minor axis (a trailing axis of size m = 1 defeats vectorisation).
        if o != c:
            col = jnp.repeat(col, o // c, axis=-1)
        term = col * k[t].reshape((1,) * (col.ndim - 1) + (o,))
        y = term if y is None else y + term
    return y


def taps_conv(x: jnp.ndarray, kernel: jnp.ndarray, p: Plan) -> jnp.ndarray:
    """:func:`_tap_sum` over batch chunks of ``p.wide_chunk`` images (a loop).

    Why the loop. Written whole, the sum of a window's taps fuses into whatever reduces the
    output next (a loss, a batch norm), and XLA:CPU runs such a reduction over strided slices
    much slower than the sum itself; a loop over batch chunks materialises the output first.
    ``p.wide_chunk`` comes from :func:`_loop_chunk`.
    """
    return _chunked(functools.partial(_tap_sum, p=p), x, kernel, p.wide_chunk, remat=False)


_IMPLEMENTATIONS = {"lax": lax_conv, "im2col": im2col_conv, "phase": phase_conv, "taps": taps_conv}


@functools.partial(jax.custom_jvp, nondiff_argnums=(2,))
def conv_fast(x: jnp.ndarray, kernel: jnp.ndarray, p: Plan) -> jnp.ndarray:
    """Channels-last convolution, ``groups=1``: ``x`` ``(N, *in, C)``, ``kernel``
    ``(*window, C, O)``, zero padding ``p.pads``; each pass by the implementation in ``p``."""
    return _IMPLEMENTATIONS[p.forward](x, kernel, p)


def _bilinear_jvp(y: jnp.ndarray, input_term, kernel_term, primals, tangents):
    """``(y, f(tx, K) + f(x, tK))``, the tangent of a bilinear ``f(x, K)``, skipping zeros.

    Each term is written with the implementation wanted for its transpose: ``input_term``
    becomes the input gradient and ``kernel_term`` the kernel gradient under reverse mode.
    """
    x, kernel = primals
    tx, tk = tangents
    terms = []
    if not isinstance(tx, SymbolicZero):
        terms.append(input_term(tx, kernel))
    if not isinstance(tk, SymbolicZero):
        terms.append(kernel_term(x, tk))
    return y, functools.reduce(jnp.add, terms) if terms else jnp.zeros_like(y)


def _conv_fast_jvp(p: Plan, primals, tangents):
    kernel_term = functools.partial(kernel_tangent, p=p) if p.kernel_grad == "im2col" else \
        functools.partial(lax_conv, p=p)
    input_term = functools.partial(_IMPLEMENTATIONS[p.input_grad], p=p)
    return _bilinear_jvp(conv_fast(*primals, p), input_term, kernel_term, primals, tangents)


conv_fast.defjvp(_conv_fast_jvp, symbolic_zeros=True)


def matmul_transpose(
    x: jnp.ndarray, kernel: jnp.ndarray, out_spatial: tuple[int, ...], p: Plan
) -> jnp.ndarray:
    """The transpose in its input of the convolution ``p`` with HWIO ``kernel``, by output phase.

    ``x`` ``(N, *in, O)`` -> ``(N, *out_spatial, C)``. This is PyTorch's ``conv_transpose``
    with weight ``(C_in_T, C_out_T, *window)`` moved to ``(*window, C_out_T, C_in_T)``;
    ``out_spatial`` includes ``output_padding`` (smaller than the stride). One matmul gives
    every tap's contribution, ``x @ K^T`` ``(N, *in, taps, C)``; input cell ``m`` under tap
    ``o`` lands at ``m * s + o * d - lo``, in output phase ``(o * d - lo) mod s``. Each of the
    ``prod(stride)`` phases is a sum of shifted slices of its taps' columns, and the phases
    are interleaved by one reshape. Why: placing every tap into the full output with an
    interior pad (col2im) writes ``taps`` full-size arrays, and its gradient reads them back.
    Plain differentiable JAX: its gradients are slices, pads and matmuls.
    """
    window, c = kernel.shape[:-2], kernel.shape[-2]
    n, batch, in_sizes = len(window), x.shape[0], x.shape[1:-1]
    k = kernel.reshape(-1, kernel.shape[-1])
    cols = lax.dot_general(x, k, (((x.ndim - 1,), (1,)), ((), ())), precision=p.precision)  # (N, *in, T*C)
    # One (N, *in, C) array per tap by a split, whose transpose is one concatenation: indexing
    # the taps instead transposes to one full-size pad per tap, summed, which XLA:CPU writes
    # out before the matmul.
    cols = lax.split(cols, [c] * math.prod(window), axis=cols.ndim - 1)
    rows = [-(-size // s) for size, s in zip(out_spatial, p.stride)]  # output cells per phase, rounded up
    # Per axis and phase r: the taps o landing there and the input offset q of output row j
    # (input cell j + q); Python's floor division is exact where the remainder is zero.
    taps = [
        [[(o, (r + lo - o * d) // s) for o in range(size) if (r + lo - o * d) % s == 0] for r in range(s)]
        for size, s, d, (lo, _) in zip(window, p.stride, p.dilation, p.pads)
    ]
    zero = np.array(0, x.dtype)
    phases = []
    for phase in np.ndindex(*p.stride):
        total = None
        for combo in itertools.product(*(taps[axis][r] for axis, r in enumerate(phase))):
            t = int(np.ravel_multi_index([o for o, _ in combo], window))
            # Negative padding crops: row j of the result is input cell j + q, zero outside.
            config = [(0, 0, 0), *((-q, j - m + q, 0) for (_, q), j, m in zip(combo, rows, in_sizes)), (0, 0, 0)]
            placed = lax.pad(cols[t], zero, config)
            total = placed if total is None else total + placed
        phases.append(jnp.zeros((batch, *rows, c), x.dtype) if total is None else total)
    # (s_1, .., s_n, N, J_1, .., J_n, C) -> (N, J_1, s_1, .., J_n, s_n, C): phase r of axis a
    # is output row j * s_a + r; rows past the output (rounding up) are cropped.
    y = jnp.stack(phases).reshape((*p.stride, batch, *rows, c))
    y = y.transpose((n, *(a for i in range(n) for a in (n + 1 + i, i)), 2 * n + 1))
    y = y.reshape((batch, *(j * s for j, s in zip(rows, p.stride)), c))
    return lax.slice(y, (0,) * y.ndim, (batch, *out_spatial, c))


def plan_transpose(
    impl: str,
    dtype: Any,
    window: tuple[int, ...],
    stride: tuple[int, ...],
    pads: Pads,
    dilation: tuple[int, ...],
    output_padding: tuple[int, ...],
    precision: Any,
    *,
    channels_last: bool,
    groups: int,
) -> Plan | None:
    """The plan for :func:`matmul_transpose`, or ``None`` to use ``lax``.

    Needs channels last, ``groups == 1`` and ``output_padding < stride`` on every axis.
    ``"auto"``: float32/float64 and a stride above 1 on some axis
    (``lax`` then convolves an input dilated with zeros, ``1 - 1/stride^2`` of it wasted
    work; at stride 1 it is an ordinary convolution that Eigen runs well).
    """
    if impl == "lax" or not channels_last or groups != 1:
        return None
    if any(e >= s for e, s in zip(output_padding, stride)):
        return None
    p = Plan(stride, pads, dilation, precision, "im2col", "im2col", "im2col", 0)
    if impl == "im2col":
        return p
    if not _cpu_float(dtype):
        return None
    return p if any(s > 1 for s in stride) else None


def use_pointwise(impl: str, dtype: Any, window, pads: Pads, *, channels_last: bool, groups: int) -> bool:
    """Whether a convolution is one matrix product (:func:`pointwise_conv`).

    ``"auto"``, float32/float64, channels last, ``groups == 1``, a 1x1 window and no padding
    (any stride), under either XLA options.
    """
    return (
        impl == "auto" and channels_last and groups == 1
        and math.prod(window) == 1 and all(p == (0, 0) for p in pads) and _cpu_float(dtype)
    )


def pointwise_conv(x: jnp.ndarray, kernel: jnp.ndarray, stride, precision: Any = None) -> jnp.ndarray:
    """1x1 convolution without padding, ``(N, *in, C)``, ``(1, ..., 1, C, O)`` -> ``(N, *out, O)``.

    The strided input reshaped to rows, times the kernel: plain JAX, so every derivative is a
    matmul too. Two-dimensional on purpose: the kernel gradient then contracts one axis of
    ``N * prod(out)`` rows, faster than contracting ``N, *out`` as separate axes.
    """
    if any(s > 1 for s in stride):
        x = x[(slice(None), *(slice(None, None, s) for s in stride), slice(None))]
    c, o = kernel.shape[-2:]
    y = lax.dot(x.reshape(-1, c), kernel.reshape(c, o), precision=precision)
    return y.reshape((*x.shape[:-1], o))


def use_grouped(impl: str, dtype: Any, *, channels_last: bool, groups: int) -> bool:
    """Whether a grouped (``groups > 1``) convolution takes :func:`grouped_conv`.

    ``"auto"``: float32/float64, channels last (XLA:CPU differentiates grouped convolutions
    very slowly).
    """
    if impl == "lax" or not channels_last or groups == 1:
        return False
    if impl == "im2col":
        return True
    return _cpu_float(dtype)


def _shifted(x: jnp.ndarray, window, stride, pads, dilation) -> list[jnp.ndarray]:
    """``(N, *in, C)`` -> one ``(N, *out, C)`` strided slice per window tap, row-major."""
    if any(p != (0, 0) for p in pads):
        x = jnp.pad(x, ((0, 0), *pads, (0, 0)))
    outs = out_sizes(x.shape[1:-1], window, stride, ((0, 0),) * len(window), dilation)
    cols = []
    for offset in np.ndindex(*window):
        start = (0, *(o * d for o, d in zip(offset, dilation)), 0)
        limit = (x.shape[0], *(b + (m - 1) * s + 1 for b, m, s in zip(start[1:-1], outs, stride)), x.shape[-1])
        cols.append(lax.slice(x, start, limit, (1, *stride, 1)))
    return cols


# Grouped convolutions with at most this many groups run as one dense convolution per group
# (each on the fast path's plan); more groups take one batched matmul, whose cost does not
# grow with the group count (docs/cpu_backend.md has the measurements).
SPLIT_GROUPS = 8
# Under "auto", a grouped convolution with few channels per group (at most THIN_OUTPUT in or
# out) or more than SPLIT_GROUPS groups, and at most this many channels in and out, is one
# dense convolution with a block-diagonal kernel: `groups` times the FLOPs, but run at the
# speed of an ordinary convolution; above this many channels the extra FLOPs cost more.
BLOCK_DIAGONAL_MAX_CHANNELS = 128


def block_diagonal(kernel: jnp.ndarray, groups: int) -> jnp.ndarray:
    """``(*window, C // groups, O)`` -> the equivalent dense ``(*window, C, O)`` kernel: input
    channel ``g * (C // groups) + c`` to output ``h * (O // groups) + j`` is
    ``kernel[..., c, g * (O // groups) + j]`` when ``g == h``, else exactly zero."""
    *window, per_group, o = kernel.shape
    k = kernel.reshape(*window, per_group, groups, o // groups)
    eye = jnp.eye(groups, dtype=kernel.dtype)
    return jnp.einsum("...cgo,gh->...gcho", k, eye).reshape(*window, groups * per_group, o)


def _dense_conv(x: jnp.ndarray, kernel: jnp.ndarray, stride, pads: Pads, dilation, precision, impl: str,
                xla_options: bool = False):
    """A ``groups=1`` channels-last convolution by the path :func:`conv` would take."""
    window = kernel.shape[:-2]
    if use_pointwise(impl, x.dtype, window, pads, channels_last=True, groups=1):
        return pointwise_conv(x, kernel, stride, precision)
    # plan() returns None when every pass would be lax; conv_fast runs that plan as plain lax.
    p = plan(impl, x.shape, x.dtype, window, kernel.shape[-1], stride, pads, dilation, precision,
             channels_last=True, groups=1, xla_options=xla_options) or Plan(stride, pads, dilation, precision, "lax", "lax", "lax", 0)
    return conv_fast(x, kernel, p)


def grouped_conv(
    x: jnp.ndarray,
    kernel: jnp.ndarray,
    stride,
    pads: Pads,
    dilation,
    groups: int,
    precision: Any = None,
    impl: str = "auto",
    xla_options: bool = False,
) -> jnp.ndarray:
    """Channels-last grouped convolution without ``feature_group_count``.

    ``x`` ``(N, *in, C)``, ``kernel`` ``(*window, C // groups, O)``; output channel
    ``g * (O // groups) + j`` sees input channels ``g * (C // groups) + c``, as in
    ``lax.conv_general_dilated`` with ``feature_group_count=groups``. Depthwise
    (``C // groups == 1``): :func:`depthwise_conv`. Under ``"auto"``, few channels per group
    or many groups within :data:`BLOCK_DIAGONAL_MAX_CHANNELS`: one dense convolution with the
    :func:`block_diagonal` kernel. Else up to :data:`SPLIT_GROUPS` groups: one dense
    convolution per group (:func:`plan` picks each pass), concatenated. Otherwise one batched
    (over groups) matmul on the patches.
    """
    window = kernel.shape[:-2]
    c, o = x.shape[-1], kernel.shape[-1]
    per_group, out_per_group = c // groups, o // groups
    stride, dilation = tuple(stride), tuple(dilation)
    if per_group == 1:
        return depthwise_conv(x, kernel, depthwise_plan(x.shape, x.dtype, window, stride, pads, dilation, precision))
    few_per_group = min(per_group, out_per_group) <= THIN_OUTPUT or groups > SPLIT_GROUPS
    if impl == "auto" and few_per_group and max(c, o) <= BLOCK_DIAGONAL_MAX_CHANNELS:
        return _dense_conv(x, block_diagonal(kernel, groups), stride, pads, dilation, precision, impl, xla_options)
    if groups <= SPLIT_GROUPS:
        outs = [
            _dense_conv(x[..., g * per_group : (g + 1) * per_group],
                        kernel[..., g * out_per_group : (g + 1) * out_per_group], stride, pads, dilation, precision,
                        impl, xla_options)
            for g in range(groups)
        ]
        return jnp.concatenate(outs, axis=-1)
    taps = math.prod(window)
    cols = _shifted(x, window, stride, pads, dilation)
    patches = jnp.stack(cols, axis=-2)  # (N, *out, taps, C)
    patches = patches.reshape((*patches.shape[:-1], groups, per_group))
    k = kernel.reshape(taps, per_group, groups, out_per_group)
    lead = patches.ndim - 3
    # Contract taps and channels-in-group, batch over groups: (groups, N, *out, O // groups).
    y = lax.dot_general(
        patches, k, (((lead, lead + 2), (0, 1)), ((lead + 1,), (2,))), precision=precision
    )
    y = jnp.moveaxis(y, 0, -2)
    return y.reshape((*y.shape[:-2], o))


def depthwise_plan(x_shape, dtype, window, stride, pads: Pads, dilation, precision) -> Plan:
    """Chunks for :func:`depthwise_conv`: ``wide_chunk`` for the forward pass (:func:`_loop_chunk`)."""
    outs = out_sizes(tuple(x_shape[1:-1]), window, stride, pads, dilation)
    per_image = math.prod(outs) * x_shape[-1] * jnp.dtype(dtype).itemsize
    n = x_shape[0]
    wide = _loop_chunk(n, per_image)
    kind = "depthwise"
    return Plan(stride, pads, dilation, precision, kind, kind, kind, wide)


@functools.partial(jax.custom_jvp, nondiff_argnums=(2,))
def depthwise_conv(x: jnp.ndarray, kernel: jnp.ndarray, p: Plan) -> jnp.ndarray:
    """Depthwise convolution ``(N, *in, C)``, ``(*window, 1, C * m)`` -> ``(N, *out, C * m)``.

    The forward pass is :func:`taps_conv` (a loop over batch chunks). The kernel gradient, a
    reduction over the batch, is one elementwise sum (:func:`kernel_tangent` says why not a
    loop); the input gradient is plain transposed JAX, which XLA fuses well.
    """
    return taps_conv(x, kernel, p)


def _depthwise_jvp(p: Plan, primals, tangents):
    taps = functools.partial(_tap_sum, p=p)
    kernel_term = lambda x, tk: _chunked(taps, x, tk, x.shape[0])  # noqa: E731  (see kernel_tangent)
    return _bilinear_jvp(depthwise_conv(*primals, p), taps, kernel_term, primals, tangents)


depthwise_conv.defjvp(_depthwise_jvp, symbolic_zeros=True)


def conv_kernel(
    impl: str, x_shape: tuple[int, ...], dtype: Any, window: tuple[int, ...], c_out: int, stride: tuple[int, ...],
    pads: Pads, dilation: tuple[int, ...], groups: int, precision: Any, *, channels_last: bool, xla_options: bool,
) -> Callable[[jnp.ndarray, jnp.ndarray], jnp.ndarray] | None:
    """The kernel ``(x, kernel) -> y`` for a convolution with zero padding ``pads`` (bias
    excluded), or ``None`` when ``lax.conv_general_dilated`` is kept.

    ``impl``: ``"auto"`` (the rules of :func:`use_pointwise`, :func:`plan` and
    :func:`use_grouped`; ``xla_options`` says whether the computation is compiled with
    :data:`jaxcnn.backends.cpu.CPU_OPTIONS`) or ``"im2col"`` (matrix products for every pass
    where supported).
    """
    if use_pointwise(impl, dtype, window, pads, channels_last=channels_last, groups=groups):
        return functools.partial(_pointwise, stride=stride, precision=precision)
    p = plan(impl, x_shape, dtype, window, c_out, stride, pads, dilation, precision,
             channels_last=channels_last, groups=groups, xla_options=xla_options)
    if p is not None:
        return lambda x, kernel: conv_fast(x, kernel, p)
    if use_grouped(impl, dtype, channels_last=channels_last, groups=groups):
        return functools.partial(grouped_conv, stride=stride, pads=pads, dilation=dilation, groups=groups,
                                 precision=precision, impl=impl, xla_options=xla_options)
    return None


def _pointwise(x: jnp.ndarray, kernel: jnp.ndarray, *, stride, precision) -> jnp.ndarray:
    return pointwise_conv(x, kernel, stride, precision)


def conv_transpose_kernel(
    impl: str, dtype: Any, window: tuple[int, ...], stride: tuple[int, ...], pads: Pads, dilation: tuple[int, ...],
    output_padding: tuple[int, ...], out_spatial: tuple[int, ...], groups: int, precision: Any, *,
    channels_last: bool,
) -> Callable[[jnp.ndarray, jnp.ndarray], jnp.ndarray] | None:
    """The kernel ``(x, kernel) -> y`` of a transposed convolution, ``kernel`` in PyTorch's
    ``(C_in, C_out, *window)`` order (bias excluded), or ``None`` to keep ``lax``."""
    p = plan_transpose(impl, dtype, window, stride, pads, dilation, output_padding, precision,
                       channels_last=channels_last, groups=groups)
    if p is None:
        return None

    def run(x: jnp.ndarray, kernel: jnp.ndarray) -> jnp.ndarray:
        # PyTorch's (C_in, C_out, *window) is the HWIO kernel (*window, C_out, C_in) of the
        # convolution whose input gradient this is.
        return matmul_transpose(x, jnp.moveaxis(kernel, (0, 1), (-1, -2)), out_spatial, p)

    return run
