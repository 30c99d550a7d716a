"""The benchmark suite in one command: jaxcnn against raw lax, flax.linen and PyTorch eager.

Command (from the repository root)::

    python -m experiments.benchmarks                  # everything; writes results/bench.json
    python -m experiments.benchmarks --quick          # smoke test, ~1-2 min; results/bench_quick.json
    python -m experiments.benchmarks --only train --batch-sizes 32,128 --models SimpleCNN
    python -m experiments.benchmarks.report --markdown   # the tables again, from the JSON

Parts (each module's docstring says exactly what it measures):

- ``matmul``: a large float32 matmul in JAX and PyTorch, the reference for "of matmul";
- ``train`` (:mod:`.train_step`): train-step images/s and memory for SimpleCNN (28x28x1),
  LeNet-5, ResNet-18 (32x32x3, small stem) and U-Net (64x64x3), frameworks interleaved;
- ``micro`` (:mod:`.micro`): forward + backward of single conv and pooling layers;
- ``passes`` (:mod:`.passes`): the forward pass, input gradient and kernel gradient of each
  conv layer of ``micro``, timed one by one against PyTorch's (where the gap lies);
- ``gpu`` (:mod:`.gpu`): ResNet-50 bfloat16 images/s and MFU against PyTorch's on the same GPU,
  skipped without a GPU.

Timing is interleaved (:mod:`.timing`): within a group, every candidate runs once per round,
for several rounds; a figure is the best round, a ratio best over best with the median of
per-round ratios beside it. The suite sets no XLA flag and no JAX option: what runs is each
library's default (jaxcnn's steps are compiled by ``jaxcnn.backends.cpu.jit`` with the CPU
kernels on, as ``jaxcnn train`` compiles them, and beside them with the kernels off and by
plain ``jax.jit``; the peers with XLA's defaults); ``XLA_FLAGS`` and ``JAXCNN_XLA_OPTIONS``
from the environment are honoured and recorded in the JSON. Like the ``jaxcnn`` command, the
suite switches the CPU kernels on (:func:`jaxcnn.backends.cpu.enable`; the ``micro`` and
``passes`` parts compare them with ``impl="lax"``) and lets its process keep the memory it
frees (:mod:`jaxcnn.backends.cpu.host_memory`), which applies to every framework in it;
``JAXCNN_HOST_MEMORY=default`` opts out. Numbers depend on the machine and its load: rerun,
don't copy.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from experiments.benchmarks import micro, passes, report, roofline, train_step
from experiments.benchmarks.timing import environment
from jaxcnn.backends import cpu
from jaxcnn.backends.cpu import host_memory

RESULTS = Path(__file__).resolve().parent / "results"
PARTS = ("matmul", "train", "micro", "passes", "gpu")
SCHEMA = "jaxcnn-benchmarks/1"


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m experiments.benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small shapes, few rounds: a smoke test (~1-2 min)")
    parser.add_argument(
        "--only", choices=("train", "micro", "passes", "gpu"), action="append",
        help="run only this part (repeatable); the matmul reference always runs",
    )
    parser.add_argument("--batch-sizes", help="comma-separated batch sizes for every model, e.g. 32,128")
    parser.add_argument("--models", help=f"comma-separated subset of {','.join(train_step.MODELS)}")
    parser.add_argument("--frameworks", help=f"comma-separated subset of {','.join(train_step.FRAMEWORKS)}")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 5, quick 2)")
    parser.add_argument("--out", help="JSON path (default results/bench.json, quick results/bench_quick.json)")
    return parser.parse_args(argv)


def _csv(value: str | None, allowed, what: str) -> list[str] | None:
    if value is None:
        return None
    items = [v.strip() for v in value.split(",") if v.strip()]
    bad = [v for v in items if v not in allowed]
    if bad:
        raise SystemExit(f"unknown {what}: {bad}; expected some of {list(allowed)}")
    return items


def main(argv: list[str] | None = None) -> dict:
    args = _parse(argv)
    quick = args.quick
    parts = set(args.only or ("train", "micro", "passes", "gpu"))
    rounds = args.rounds or (2 if quick else 5)
    models = _csv(args.models, train_step.MODELS, "models") or list(train_step.MODELS)
    frameworks = tuple(_csv(args.frameworks, train_step.FRAMEWORKS, "frameworks") or train_step.FRAMEWORKS)
    if args.batch_sizes:
        try:
            sizes = tuple(int(b) for b in args.batch_sizes.split(","))
        except ValueError:
            raise SystemExit(f"--batch-sizes must be comma-separated ints, got {args.batch_sizes!r}") from None
        if any(b < 1 for b in sizes):
            raise SystemExit(f"--batch-sizes must be positive, got {sizes}")
        batch_sizes = {m: sizes for m in models}
    else:
        batch_sizes = {m: train_step.MODELS[m]["quick" if quick else "batches"] for m in models}
    out_path = Path(args.out) if args.out else RESULTS / ("bench_quick.json" if quick else "bench.json")
    log = lambda msg: print(msg, flush=True)  # noqa: E731

    host = host_memory.keep_freed_memory()
    kernels = cpu.enable()
    started = time.perf_counter()
    data: dict = {
        "schema": SCHEMA,
        "command": " ".join(["python -m experiments.benchmarks", *(argv if argv is not None else sys.argv[1:])]),
        "environment": environment(),
        "settings": {
            "quick": quick, "rounds": rounds, "parts": sorted(parts), "models": models, "frameworks": list(frameworks),
            "batch_sizes": batch_sizes,
        },
    }
    log(f"jaxcnn benchmarks ({'quick' if quick else 'full'}); no XLA flags set by the suite; "
        f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}; jaxcnn compiler options: {data['environment']['jaxcnn_compiler_options']}; "
        f"host memory: {host}; CPU kernels: {kernels} (the jaxcnn[conv=lax] and jaxcnn[plain jax.jit] "
        "candidates run with them off)")

    size = 512 if quick else 2048
    data["matmul"] = roofline.run(size, rounds=rounds, reps=2 if quick else 5)
    log(f"matmul {size}^3 float32: jax {data['matmul']['jax_gflops_best']:.1f} GFLOP/s"
        + (f", torch {data['matmul']['torch_gflops_best']:.1f} GFLOP/s" if "torch_gflops_best" in data["matmul"] else ""))
    reference = data["matmul"]["reference_gflops"]

    if "train" in parts:
        per_model_frameworks = {}
        for m in models:
            fws = frameworks
            if quick and m in ("ResNet18", "UNet") and not args.frameworks:
                # Compiling four JAX variants of the big models takes minutes on 2 cores; the
                # quick run keeps one JAX and one PyTorch candidate for them.
                fws = tuple(f for f in ("jaxcnn", "torch NCHW") if f in frameworks)
            per_model_frameworks[m] = fws
        data["settings"]["frameworks_per_model"] = {m: list(f) for m, f in per_model_frameworks.items()}
        rows = []
        for m in models:
            rows += train_step.run(
                [m], batch_sizes, per_model_frameworks[m], rounds=rounds, block_s=0.05 if quick else 0.5, log=log
            )
        for row in rows:
            if row.get("flops_per_step") and row.get("gflops_per_s_best"):
                row["fraction_of_matmul"] = row["gflops_per_s_best"] / reference
        data["train"] = rows
    if "micro" in parts:
        data["micro"] = micro.run(quick, rounds=rounds, reps=1 if quick else 3, reference_gflops=reference, log=log)
    if "passes" in parts:
        data["passes"] = passes.run(quick, rounds=rounds, reps=1 if quick else 3, log=log)
    if "gpu" in parts:
        from experiments.benchmarks import gpu

        try:
            data["gpu"] = gpu.run(quick, rounds=rounds, log=log)
        except Exception as err:  # noqa: BLE001 - record, don't lose the CPU results
            data["gpu"] = {"error": f"{type(err).__name__}: {err}"}
    data["elapsed_s"] = time.perf_counter() - started
    try:
        data["environment"]["load_average_at_end"] = os.getloadavg()
    except OSError:
        pass

    out_path.parent.mkdir(parents=True, exist_ok=True)
    with open(out_path, "w") as f:
        json.dump(data, f, indent=1)
    print()
    print(report.render(data, markdown=False))
    print(f"\nwrote {out_path} ({data['elapsed_s']:.0f} s)")
    return data


if __name__ == "__main__":
    main()
