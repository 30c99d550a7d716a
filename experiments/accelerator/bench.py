"""The ``bench`` phase: ResNet-50 bfloat16 train steps of jaxcnn and PyTorch on one GPU, then ResNet-18 and U-Net.

    python -m experiments.accelerator.bench --out DIR [--budget-s 150] [--dry-run]

Writes ``DIR/bench.json`` and ``DIR/bench.md`` after every item, so what finished is kept
when the budget runs out. Items, each skipped (with the reason recorded) when the time left
is below its estimate:

- ``matmul``: a large bfloat16 matmul in JAX, the reference for "fraction of matmul";
- ``resnet50``: :func:`experiments.benchmarks.gpu.compare`: jaxcnn's engine step against
  torchvision's ResNet-50 (``channels_last``, autocast bfloat16, SGD), 224x224, the largest of
  :data:`RESNET50_BATCHES` that fits both, interleaved rounds;
- ``train_steps``: :func:`experiments.benchmarks.train_step.run` for ResNet-18 (32x32, CIFAR
  stem) and U-Net (64x64), float32, Adam, jaxcnn against PyTorch NCHW and channels_last on the
  same GPU.

``--dry-run`` runs every item on tiny shapes on whatever device there is (a CPU in the tests):
SimpleCNN (28x28, its PyTorch peer) at batch 2 stands in for every model.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

# Before JAX starts: the JAX and PyTorch candidates share the GPU, so neither may take it all.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import jax  # noqa: E402

from experiments.benchmarks import gpu, peers, train_step  # noqa: E402
from experiments.benchmarks.timing import environment  # noqa: E402

RESNET50_BATCHES = (256, 128, 64)
# Seconds an item is expected to need (compilation included); it is skipped with less left.
ESTIMATE_S = {"matmul": 10, "resnet50": 90, "train_steps": 60}
GPU_STEPS = {"ResNet18": (256,), "UNet": (32,)}
GPU_FRAMEWORKS = ("jaxcnn", "torch NCHW", "torch channels_last")


def _torch_info() -> tuple[str | None, dict[str, Any]]:
    try:
        import torch
    except ImportError:
        return None, {"torch": None}
    cuda = torch.cuda.is_available()
    info = {
        "torch": torch.__version__,
        "cuda_available": cuda,
        "device_name": torch.cuda.get_device_name(0) if cuda else None,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        # float32 steps (ResNet-18, U-Net): what each framework does with float32 convolutions.
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
        "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
    }
    return ("cuda" if cuda else "cpu"), info


def markdown(data: dict[str, Any]) -> str:
    """The tables of a ``bench.json``: ResNet-50 first, then the float32 train steps."""
    device = data.get("device", "?")
    lines = [f"Device: **{device}** (JAX {data['environment']['jax']}, PyTorch {data['torch'].get('torch')}); "
             f"bf16 matmul reference {_fmt(data.get('matmul', {}).get('tflops'), 1)} TFLOP/s.", ""]
    r50 = data.get("resnet50")
    if r50 and "frameworks" in r50:
        jx, pt = r50["frameworks"].get("jaxcnn", {}), r50["frameworks"].get("torch", {})
        ratio = r50.get("jaxcnn_vs_torch", {})
        lines += [
            "| model | batch | image | jaxcnn img/s | PyTorch img/s | jaxcnn / PyTorch (best; paired median) "
            "| jaxcnn MFU | PyTorch MFU |",
            "|---|---|---|---|---|---|---|---|",
            f"| {r50['model']} | {r50['batch']} | {r50['image_size']} | {_fmt(jx.get('images_per_s_best'))} "
            f"| {_fmt(pt.get('images_per_s_best'))} | {_fmt(ratio.get('speedup_best'), 2)}; "
            f"{_fmt(ratio.get('speedup_paired_median'), 2)} | {_pct(jx.get('mfu'))} | {_pct(pt.get('mfu'))} |",
            "",
        ]
    elif r50:
        lines += [f"ResNet-50: {r50.get('skipped') or r50.get('error')}", ""]
    rows = data.get("train_steps")
    if isinstance(rows, list) and rows:
        lines += ["| model (float32, Adam) | batch | framework | img/s (best) | img/s (median) | vs best PyTorch |",
                  "|---|---|---|---|---|---|"]
        for row in rows:
            vs = row.get("vs_best_torch")
            lines.append(f"| {row['model']} | {row['batch']} | {row['framework']} | {_fmt(row['images_per_s_best'])} "
                         f"| {_fmt(row['images_per_s_median'])} | "
                         f"{_fmt(vs['speedup_best'], 2) + 'x ' + vs['torch'] if vs else '-'} |")
    elif isinstance(rows, dict):
        lines.append(f"Train steps: {rows.get('skipped') or rows.get('error')}")
    return "\n".join(lines) + "\n"


def _fmt(value, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _pct(value) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _write(out: Path, data: dict[str, Any]) -> None:
    (out / "bench.json").write_text(json.dumps(data, indent=1) + "\n")
    (out / "bench.md").write_text(markdown(data))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m experiments.accelerator.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="folder for bench.json and bench.md")
    parser.add_argument("--budget-s", type=float, default=150.0, help="seconds for the whole phase")
    parser.add_argument("--dry-run", action="store_true", help="tiny shapes, one round: checks the code path")
    args = parser.parse_args(argv)
    start = time.monotonic()
    left = lambda: args.budget_s - (time.monotonic() - start)  # noqa: E731
    log = lambda msg: print(msg, flush=True)  # noqa: E731
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    dry = args.dry_run
    torch_device, torch_info = _torch_info()
    if not gpu.on_gpu() and not dry:
        log(f"bench: JAX's default backend is {jax.default_backend()!r}, not a GPU; the figures are not GPU figures")
    data: dict[str, Any] = {
        "schema": "jaxcnn-accelerator-bench/1",
        "dry_run": dry,
        "device": jax.devices()[0].device_kind,
        "environment": environment(),
        "torch": torch_info,
        "jax_default_matmul_precision": str(jax.config.jax_default_matmul_precision),
        "budget_s": args.budget_s,
    }
    rounds, reps = (1, 1) if dry else (5, 10)

    def item(name: str, fn):
        if left() < (1 if dry else ESTIMATE_S[name]):
            data[name] = {"skipped": f"{left():.0f} s left of the phase, below the {ESTIMATE_S[name]} s estimate"}
            log(f"bench: {name} skipped: {data[name]['skipped']}")
        else:
            log(f"bench: {name} ({left():.0f} s left)")
            try:
                data[name] = fn()
            except Exception as err:  # noqa: BLE001 - record it and keep the other items
                data[name] = {"error": f"{type(err).__name__}: {err}"[:2000]}
                log(f"bench: {name} failed: {data[name]['error']}")
            gpu.free_device_memory()
        data["elapsed_s"] = time.monotonic() - start
        _write(out, data)

    def matmul():
        n = 256 if dry else 8192
        return {"n": n, "tflops": gpu.matmul_tflops(n, rounds=3, reps=2 if dry else 20)}

    def resnet50():
        reference = (data.get("matmul") or {}).get("tflops")
        if dry:  # the same code on a model that compiles in a second: SimpleCNN and its PyTorch peer
            return gpu.compare(jax_model="SimpleCNN", torch_model="SimpleCNN peer", batches=(2,), size=28, classes=10,
                               rounds=rounds, reps=reps, torch_device=torch_device,
                               torch_builder=lambda classes: peers.torch_model("SimpleCNN", 3, classes),
                               matmul_reference_tflops=reference, log=log)
        return gpu.compare(jax_model="ResNet50", torch_model="resnet50", batches=RESNET50_BATCHES, size=224,
                           rounds=rounds, reps=reps, torch_device=torch_device, matmul_reference_tflops=reference,
                           log=log)

    def train_steps():
        models = ["SimpleCNN"] if dry else list(GPU_STEPS)
        batches = {"SimpleCNN": (2,)} if dry else GPU_STEPS
        frameworks = ("jaxcnn", "torch NCHW") if dry else GPU_FRAMEWORKS
        if torch_device is None:
            frameworks = ("jaxcnn",)
        return train_step.run(models, batches, frameworks, rounds=rounds, block_s=0.01 if dry else 0.3, log=log,
                              torch_device=torch_device or "cpu")

    item("matmul", matmul)
    item("resnet50", resnet50)
    item("train_steps", train_steps)
    log(markdown(data))
    return data


if __name__ == "__main__":
    main(sys.argv[1:])
