"""Where a train step's time goes: the XLA operations of jaxcnn's compiled step, by time.

Command (from the repository root)::

    python -m experiments.benchmarks.profile --model ResNet18 --batch 32
    python -m experiments.benchmarks.profile --model SimpleCNN --batch 128 --steps 10 --out prof.json

It builds the same step as the ``jaxcnn`` column of :mod:`.train_step` (the model from
``jaxcnn.models``, ``make_train_step``, Adam, compiled by ``jaxcnn.backends.cpu.jit`` with
the state donated, in a process that keeps the memory it frees as the ``jaxcnn`` command's
does: :mod:`jaxcnn.backends.cpu.host_memory`), runs a few warm-up steps, then traces ``--steps`` steps with
``jax.profiler`` and sums the duration of each XLA operation (a fusion, a convolution, a
copy) over them. It prints the wall time per step, the operations that took longest and
the same grouped by kind (the name before the first ``.``: ``transpose_copy_fusion``,
``ynn_fusion``, ``convolution`` ...), each as milliseconds per step and share of the step.

Shares are of the wall time; operations that run concurrently on both cores can add up to
more than 100%. Read the rows as lower bounds for convolutions and dots: the loops XLA
emits itself (fusions, copies, transposes) are timed in full, but the events of calls into
a library (Eigen's convolutions, YNNPACK) can cover far less than their cost (ResNet-18's
convolutions show a few percent of the step on 2 cores, well below their FLOPs at any rate
this CPU reaches).
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from jaxcnn.backends.cpu import host_memory

# Events that are not XLA operations: Python frames ("$file.py:line name"), the executor's
# own spans and the runtime's dispatch.
_NOT_OPS = ("$", "ThunkExecutor", "PjitFunction", "TfrtCpu", "PjRt")


def op_times(events: Iterable[dict[str, Any]], steps: int) -> dict[str, float]:
    """Milliseconds per step of each operation: the summed ``dur`` (microseconds) of its
    complete (``"ph": "X"``) events, divided by ``steps``."""
    total: collections.Counter[str] = collections.Counter()
    for event in events:
        name = event.get("name", "")
        if event.get("ph") != "X" or not name or name.startswith(_NOT_OPS):
            continue
        total[name] += float(event.get("dur", 0.0))
    return {name: us / 1e3 / steps for name, us in total.items()}


def by_kind(times: dict[str, float]) -> dict[str, float]:
    """Operation times summed by kind, the name before the first ``.``
    (``transpose_copy_fusion.45`` and ``transpose_copy_fusion`` are both ``transpose_copy_fusion``)."""
    kinds: collections.Counter[str] = collections.Counter()
    for name, ms in times.items():
        kinds[name.split(".")[0]] += ms
    return dict(kinds)


def _trace_events(trace_dir: str) -> list[dict[str, Any]]:
    files = sorted(glob.glob(f"{trace_dir}/**/*.trace.json.gz", recursive=True))
    if not files:
        raise RuntimeError(f"jax.profiler wrote no *.trace.json.gz under {trace_dir}")
    with gzip.open(files[-1], "rt") as f:
        trace = json.load(f)
    return trace["traceEvents"] if isinstance(trace, dict) else trace


def profile(model: str, batch: int, steps: int, warmup: int = 3) -> dict[str, Any]:
    """Traces ``steps`` train steps of ``model`` at ``batch``; see the module docstring."""
    import jax

    from experiments.benchmarks import train_step

    if model not in train_step.MODELS:
        raise ValueError(f"profile: unknown model {model!r}; expected one of {tuple(train_step.MODELS)}")
    if batch < 1 or steps < 1:
        raise ValueError(f"profile: batch and steps must be >= 1, got batch={batch}, steps={steps}")
    candidate = train_step.build(model, batch, ("jaxcnn",))["jaxcnn"]
    for _ in range(warmup):
        candidate.run()
    with tempfile.TemporaryDirectory() as trace_dir:
        jax.profiler.start_trace(trace_dir, create_perfetto_trace=True)
        start = time.perf_counter()
        for _ in range(steps):
            candidate.run()
        step_ms = (time.perf_counter() - start) / steps * 1e3
        jax.profiler.stop_trace()
        times = op_times(_trace_events(trace_dir), steps)
    return {"model": model, "batch": batch, "steps": steps, "step_ms": step_ms, "ops_ms": times,
            "kinds_ms": by_kind(times)}


def _table(title: str, rows: dict[str, float], step_ms: float, top: int) -> str:
    lines = [title, f"{'ms/step':>9}  {'share':>6}  name"]
    for name, ms in sorted(rows.items(), key=lambda kv: -kv[1])[:top]:
        lines.append(f"{ms:9.2f}  {ms / step_ms:6.1%}  {name}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="ResNet18")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--out", type=Path, default=None, help="also write the figures as JSON")
    args = parser.parse_args(argv)
    # As the jaxcnn command and the benchmarks run (JAXCNN_HOST_MEMORY=default opts out).
    print(f"host memory: {host_memory.keep_freed_memory()}")
    result = profile(args.model, args.batch, args.steps)
    print(f"{args.model} batch {args.batch}: {result['step_ms']:.1f} ms per step (wall, {args.steps} traced steps)")
    print(_table("\nby operation:", result["ops_ms"], result["step_ms"], args.top))
    print(_table("\nby kind:", result["kinds_ms"], result["step_ms"], args.top))
    if args.out is not None:
        args.out.write_text(json.dumps(result, indent=1) + "\n")
        print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
