"""Each pass of the convolution microbenchmarks timed on its own: where the gap lies.

For every convolution case of :mod:`.micro` (same shapes), three passes are timed separately:

- ``forward``: the output;
- ``input gradient``: the input's cotangent for a fixed output cotangent;
- ``kernel gradient``: the kernel's cotangent for the same.

``jaxcnn`` runs ``jaxcnn.functional`` with its defaults, each pass its own computation compiled
by ``jaxcnn.backends.cpu.jit`` (the forward pass drops out of the two gradients, which do not
depend on it), and is checked against the same pass of ``impl="lax"`` in the run. PyTorch
runs ``torch.nn.functional`` under ``no_grad`` for the forward pass and
``torch.ops.aten.convolution_backward`` (what autograd calls for a convolution) with one
output selected for each gradient, NCHW and channels_last at PyTorch's default thread count.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax

from experiments.benchmarks import micro
from experiments.benchmarks.timing import interleave, versus
from experiments.benchmarks.train_step import _with_threads, torch_threads
from jaxcnn.backends import cpu

PASSES = ("forward", "input gradient", "kernel gradient")
TORCH_LAYOUTS = ("torch NCHW", "torch channels_last")


def _jax_passes(op: Callable, impl: str | None, jit: Callable) -> dict[str, Callable]:
    """The three passes of ``op(x, w, impl)`` as compiled functions of ``(x, w, ct)``."""
    return {
        "forward": jit(lambda x, w, ct: op(x, w, impl)),
        "input gradient": jit(lambda x, w, ct: jax.vjp(lambda x: op(x, w, impl), x)[1](ct)[0]),
        "kernel gradient": jit(lambda x, w, ct: jax.vjp(lambda w: op(x, w, impl), w)[1](ct)[0]),
    }


def _torch_passes(case: dict[str, Any], layout: str) -> dict[str, Callable[[], None]]:
    import torch

    memory_format = torch.channels_last if "channels_last" in layout else torch.contiguous_format
    x, weight, op, ct = micro.torch_conv_setup(case, memory_format)
    transposed = case["kind"] == "conv_transpose"
    stride, padding = [case["stride"]] * 2, [case["padding"]] * 2
    dilation = [case.get("dilation", 1)] * 2
    output_padding = [case.get("output_padding", 0)] * 2 if transposed else [0, 0]
    groups = case.get("groups", 1)

    def backward(mask):
        def run():
            with torch.no_grad():
                torch.ops.aten.convolution_backward(
                    ct, x, weight, None, stride, padding, dilation, transposed, output_padding, groups, mask
                )
        return run

    def forward():
        with torch.no_grad():
            op(x, weight)

    fns = {"forward": forward, "input gradient": backward([True, False, False]),
           "kernel gradient": backward([False, True, False])}
    return {name: _with_threads(fn, torch_threads(layout)) for name, fn in fns.items()}


def run(quick: bool, *, rounds: int, reps: int, log=print) -> list[dict[str, Any]]:
    """One row per case, pass and framework: ``op``, ``pass``, ``framework``, ``ms_best``,
    ``ms_median``, rounds, and for ``jaxcnn`` its speed against the faster PyTorch layout
    (``vs_best_torch``) and its largest difference from the lax pass (relative)."""
    rows = []
    for case in micro.cases(quick):
        if case["kind"] not in ("conv", "conv_transpose"):
            continue
        op, x, w, ct = micro.conv_setup(case)
        args = (x, w, ct)
        ours = _jax_passes(op, None, cpu.jit)
        reference = _jax_passes(op, "lax", jax.jit)
        try:
            peers = {layout: _torch_passes(case, layout) for layout in TORCH_LAYOUTS}
        except ImportError:
            peers = {}
        line = []
        for name in PASSES:
            diff = micro.relative_difference(ours[name](*args), reference[name](*args))
            candidates = {"jaxcnn": lambda f=ours[name]: jax.block_until_ready(f(*args))}
            candidates.update({layout: fns[name] for layout, fns in peers.items()})
            timings = interleave(candidates, rounds=rounds, reps=reps)
            best_torch = min(peers, key=lambda k: timings[k].best) if peers else None
            for framework, t in timings.items():
                row = {"op": case["name"], "pass": name, "framework": framework,
                       "ms_best": 1e3 * t.best, "ms_median": 1e3 * t.median, **t.as_dict()}
                if framework == "jaxcnn":
                    row["max_abs_diff_vs_lax_relative"] = diff
                    if best_torch is not None:
                        row["vs_best_torch"] = versus(best_torch, timings[best_torch], t)
                rows.append(row)
            line.append(f"{name} " + " / ".join(f"{1e3 * t.best:.2f}" for t in timings.values()))
        log(f"passes: {case['name']:30s} ms ({' / '.join(candidates)}): " + " | ".join(line))
    return rows
