"""Forward + backward microbenchmarks of single convolution and pooling layers.

Each case times one call that computes the layer's output and its gradients with respect to
the input and (for convolutions) the kernel, for a fixed cotangent:

- ``jaxcnn``: ``jaxcnn.functional`` with its defaults (fast paths chosen automatically), NHWC,
  compiled by ``jaxcnn.backends.cpu.jit`` (jaxcnn's XLA options) as jaxcnn's training loop
  compiles its steps;
- ``lax``: the reference path: ``jaxcnn.functional.conv``/``conv_transpose`` with
  ``impl="lax"`` (one ``lax.conv_general_dilated``) or ``lax.reduce_window`` for pooling,
  which is what a plain JAX program would write;
- ``torch NCHW`` / ``torch channels_last``: ``torch.nn.functional`` in eager mode,
  ``.backward()`` into leaf tensors, at PyTorch's default thread count and at 1 thread (as in
  :mod:`.train_step`; jaxcnn is compared with the fastest).

FLOPs of a convolution count its three products (forward, input gradient, kernel gradient),
``2 * N * prod(out) * prod(window) * C_in / groups * C_out`` each; pooling has none worth
counting. The JAX gradients of ``jaxcnn`` are checked against ``lax`` in the same run.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from experiments.benchmarks.timing import interleave, versus
from experiments.benchmarks.train_step import TORCH_FRAMEWORKS, _with_threads, torch_threads
from jaxcnn.backends import cpu


def cases(quick: bool) -> list[dict[str, Any]]:
    """``(name, kind, arguments)`` of every case; ``quick`` shrinks the shapes."""
    n, hw, c = (4, 16, 16) if quick else (32, 32, 64)
    conv = lambda name, k, c_out, **kw: {  # noqa: E731
        "name": name, "kind": "conv", "x": (n, hw, hw, c), "window": k, "c_out": c_out,
        "stride": kw.get("stride", 1), "padding": kw.get("padding", 0), "dilation": kw.get("dilation", 1),
        "groups": kw.get("groups", 1),
    }
    tconv = lambda name, k, c_out, **kw: {  # noqa: E731
        "name": name, "kind": "conv_transpose", "x": (n, hw // 2, hw // 2, c), "window": k, "c_out": c_out,
        "stride": kw.get("stride", 1), "padding": kw.get("padding", 0), "output_padding": kw.get("output_padding", 0),
    }
    pool = lambda name, kind, k, s, p: {  # noqa: E731
        "name": name, "kind": kind, "x": (n, hw, hw, c), "window": k, "stride": s, "padding": p,
    }
    return [
        conv("conv 3x3", 3, c, padding=1),
        conv("conv 3x3 stride 2", 3, 2 * c, padding=1, stride=2),
        conv("conv 1x1", 1, 2 * c),
        conv("conv 3x3 dilation 2", 3, c, padding=2, dilation=2),
        conv("conv 3x3 groups 4", 3, c, padding=1, groups=4),
        conv("depthwise 3x3", 3, c, padding=1, groups=c),
        conv("conv 3x3 C_in 3 (stem)", 3, c, padding=1) | {"x": (n, hw, hw, 3)},
        tconv("conv_transpose 2x2 stride 2", 2, c // 2, stride=2),
        tconv("conv_transpose 3x3 stride 2", 3, c // 2, stride=2, padding=1, output_padding=1),
        pool("max_pool 2x2", "max_pool", 2, 2, 0),
        pool("max_pool 3x3 stride 2 pad 1", "max_pool", 3, 2, 1),
        pool("avg_pool 2x2", "avg_pool", 2, 2, 0),
        pool("avg_pool 3x3 stride 2 pad 1", "avg_pool", 3, 2, 1),
    ]


def _flops(case: dict[str, Any]) -> float | None:
    k2 = case["window"] ** 2
    n, h, w, c = case["x"]
    if case["kind"] == "conv":
        s, p, d = case["stride"], case["padding"], case["dilation"]
        oh = (h + 2 * p - d * (case["window"] - 1) - 1) // s + 1
        ow = (w + 2 * p - d * (case["window"] - 1) - 1) // s + 1
        return 3 * 2.0 * n * oh * ow * k2 * (c // case["groups"]) * case["c_out"]
    if case["kind"] == "conv_transpose":
        return 3 * 2.0 * n * h * w * k2 * c * case["c_out"]
    return None


def conv_setup(case: dict[str, Any]) -> tuple[Callable, jnp.ndarray, jnp.ndarray, jnp.ndarray]:
    """``(op, x, w, ct)`` of a conv or conv_transpose case: ``op(x, w, impl)`` through
    ``jaxcnn.functional`` (NHWC, HWIO), seeded inputs and a cotangent of the output's shape."""
    from jaxcnn import functional as F

    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal(case["x"]).astype(np.float32))
    k, c_in, c_out = case["window"], case["x"][-1], case["c_out"]
    if case["kind"] == "conv":
        shape = (k, k, c_in // case["groups"], c_out)
        kw = dict(stride=case["stride"], padding=case["padding"], dilation=case["dilation"], groups=case["groups"])
        op = lambda x, w, impl: F.conv(x, w, impl=impl, **kw)  # noqa: E731
    else:
        shape = (k, k, c_in, c_out)
        kw = dict(stride=case["stride"], padding=case["padding"], output_padding=case["output_padding"])
        op = lambda x, w, impl: F.conv_transpose(x, w, impl=impl, **kw)  # noqa: E731
    w = jnp.asarray((rng.standard_normal(shape) / math.sqrt(k * k * c_in)).astype(np.float32))
    ct = jnp.asarray(rng.standard_normal(op(x, w, "lax").shape).astype(np.float32))
    return op, x, w, ct


def _jax_fns(case: dict[str, Any]) -> tuple[dict[str, Callable], tuple]:
    from jaxcnn import functional as F

    kind = case["kind"]
    if kind in ("conv", "conv_transpose"):
        op, x, w, ct = conv_setup(case)
        # value_and_grad: the value needs the forward pass, which jax.grad alone would drop as
        # dead code (the gradients of this linear loss do not depend on it); PyTorch runs it.
        fns = {
            name: jit(jax.value_and_grad(lambda x, w, impl=impl: jnp.vdot(op(x, w, impl), ct), argnums=(0, 1)))
            for name, impl, jit in (("jaxcnn", None, cpu.jit), ("lax", "lax", jax.jit))
        }
        return fns, (x, w)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal(case["x"]).astype(np.float32))
    win, s, p = case["window"], case["stride"], case["padding"]
    if kind == "max_pool":
        ours = lambda x: F.max_pool(x, win, s, p)  # noqa: E731
        ref = lambda x: lax.reduce_window(  # noqa: E731
            x, -jnp.inf, lax.max, (1, win, win, 1), (1, s, s, 1), ((0, 0), (p, p), (p, p), (0, 0))
        )
    else:
        ours = lambda x: F.avg_pool(x, win, s, p)  # noqa: E731
        ref = lambda x: lax.reduce_window(  # noqa: E731
            x, 0.0, lax.add, (1, win, win, 1), (1, s, s, 1), ((0, 0), (p, p), (p, p), (0, 0))
        ) / (win * win)
    ct = jnp.asarray(rng.standard_normal(ours(x).shape).astype(np.float32))
    fns = {
        name: jit(jax.value_and_grad(lambda x, f=f: jnp.vdot(f(x), ct)))
        for name, f, jit in (("jaxcnn", ours, cpu.jit), ("lax", ref, jax.jit))
    }
    return fns, (x,)


def torch_conv_setup(case: dict[str, Any], memory_format: Any) -> tuple[Any, Any, Callable, Any]:
    """``(x, weight, op, ct)`` of a conv or conv_transpose case in PyTorch (NCHW shapes, the
    given memory format, leaves that require grad), ``op(x, weight)`` the functional call."""
    import torch
    import torch.nn.functional as torch_f

    torch.manual_seed(0)
    n, h, w, c = case["x"]
    k = case["window"]
    x = torch.randn(n, c, h, w).contiguous(memory_format=memory_format).requires_grad_(True)
    if case["kind"] == "conv":
        weight = torch.randn(case["c_out"], c // case["groups"], k, k)
        op = lambda x, wt: torch_f.conv2d(  # noqa: E731
            x, wt, None, case["stride"], case["padding"], case["dilation"], case["groups"]
        )
    else:
        weight = torch.randn(c, case["c_out"], k, k)
        op = lambda x, wt: torch_f.conv_transpose2d(  # noqa: E731
            x, wt, None, case["stride"], case["padding"], case["output_padding"]
        )
    weight = weight.contiguous(memory_format=memory_format).requires_grad_(True)
    with torch.no_grad():
        ct = torch.randn_like(op(x, weight)).contiguous(memory_format=memory_format)
    return x, weight, op, ct


def _torch_fns(case: dict[str, Any]) -> dict[str, Callable]:
    import torch
    import torch.nn.functional as torch_f

    torch.manual_seed(0)
    n, h, w, c = case["x"]
    kind = case["kind"]
    out: dict[str, Callable] = {}
    for fmt in TORCH_FRAMEWORKS:
        cl = "channels_last" in fmt
        memory_format = torch.channels_last if cl else torch.contiguous_format
        if kind in ("conv", "conv_transpose"):
            x, weight, op, ct = torch_conv_setup(case, memory_format)

            def run(x=x, weight=weight, op=op, ct=ct):
                x.grad = weight.grad = None
                op(x, weight).backward(ct)
        else:
            x = torch.randn(n, c, h, w).contiguous(memory_format=memory_format).requires_grad_(True)
            win, s, p = case["window"], case["stride"], case["padding"]
            op = (lambda x: torch_f.max_pool2d(x, win, s, p)) if kind == "max_pool" else (
                lambda x: torch_f.avg_pool2d(x, win, s, p)
            )
            ct = torch.randn_like(op(x)).contiguous(memory_format=memory_format)

            def run(x=x, op=op, ct=ct):
                x.grad = None
                op(x).backward(ct)

        out[fmt] = _with_threads(run, torch_threads(fmt))
    return out


def relative_difference(ours: Any, ref: Any) -> float:
    """Largest absolute difference between two pytrees of arrays, over ``ref``'s largest
    magnitude (1 when ``ref`` is all zeros)."""
    scale = max(float(np.max(np.abs(r))) for r in jax.tree.leaves(ref)) or 1.0
    return max(float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
               for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(ref))) / scale


def run(quick: bool, *, rounds: int, reps: int, reference_gflops: float | None, log=print) -> list[dict[str, Any]]:
    rows = []
    for case in cases(quick):
        jax_fns, args = _jax_fns(case)
        ours = jax.device_get(jax_fns["jaxcnn"](*args)[1])  # the gradients
        ref = jax.device_get(jax_fns["lax"](*args)[1])
        diff = relative_difference(ours, ref)
        candidates: dict[str, Callable] = {
            name: (lambda f=f: jax.block_until_ready(f(*args))) for name, f in jax_fns.items()
        }
        try:
            candidates.update(_torch_fns(case))
        except ImportError:
            pass
        timings = interleave(candidates, rounds=rounds, reps=reps)
        flops = _flops(case)
        torch_names = [k for k in candidates if k in TORCH_FRAMEWORKS]
        best_torch = min(torch_names, key=lambda k: timings[k].best) if torch_names else None
        line = []
        for name, t in timings.items():
            row = {
                "op": case["name"],
                "kind": case["kind"],
                "case": {k: v for k, v in case.items() if k not in ("name",)},
                "framework": name,
                "ms_best": 1e3 * t.best,
                "ms_median": 1e3 * t.median,
                **t.as_dict(),
                "flops": flops,
                "gflops_per_s_best": flops / t.best / 1e9 if flops else None,
                "fraction_of_matmul": flops / t.best / 1e9 / reference_gflops if flops and reference_gflops else None,
            }
            if name == "jaxcnn":
                row["max_abs_diff_vs_lax_relative"] = diff
            if best_torch is not None and name not in TORCH_FRAMEWORKS:
                row["vs_best_torch"] = versus(best_torch, timings[best_torch], t)
            rows.append(row)
            line.append(f"{name} {1e3 * t.best:.2f} ms")
        log(f"micro: {case['name']:30s} " + " | ".join(line))
    return rows
