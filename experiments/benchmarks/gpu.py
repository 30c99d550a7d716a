"""GPU part: ResNet-50 bfloat16 training throughput and model FLOPs utilisation (MFU).

Runs only when JAX's default backend is a GPU; otherwise returns ``{"skipped": reason}``.
The step is ``jaxcnn.models.ResNet50(dtype=bfloat16)`` (float32 parameters, bfloat16
compute) with ``jaxcnn.train.make_train_step`` and SGD with momentum on 224x224 random
images. FLOPs per step come from XLA's cost analysis of the compiled step; MFU divides the
achieved FLOP/s by the device's dense bfloat16 peak from :data:`PEAK_BF16_FLOPS` (by device
kind; ``None`` when the kind is not listed) and, independently of any table, by the rate of
a large bfloat16 matmul measured in the same run.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from experiments.benchmarks.timing import interleave

# Dense (no sparsity) bfloat16 tensor-core peaks from the vendors' data sheets, FLOP/s.
PEAK_BF16_FLOPS = {
    "H200": 989e12,
    "H100 80GB HBM3": 989e12,  # SXM
    "H100 PCIe": 756e12,
    "H100": 989e12,
    "A100": 312e12,
    "L4": 121e12,
    "A10G": 70e12,
}


def _peak(kind: str) -> float | None:
    for name, peak in PEAK_BF16_FLOPS.items():
        if name in kind:
            return peak
    return None


def run(quick: bool, *, rounds: int, log=print) -> dict[str, Any]:
    backend = jax.default_backend()
    if backend not in ("gpu", "cuda", "rocm"):
        return {"skipped": f"no GPU: JAX's default backend is {backend!r}"}
    from jaxcnn.models import ResNet50
    from jaxcnn.train import classification_task, create_train_state, make_train_step

    device = jax.devices()[0]
    batch, size = (8, 64) if quick else (128, 224)
    rng = np.random.default_rng(0)
    images = jnp.asarray(rng.standard_normal((batch, size, size, 3)).astype(np.float32))
    labels = jnp.asarray(rng.integers(0, 1000, (batch,)).astype(np.int32))
    model = ResNet50(num_classes=1000, dtype=jnp.bfloat16)
    tx = optax.sgd(0.1, momentum=0.9)
    state = create_train_state(model, tx, jax.random.PRNGKey(0), images[:1])
    step = jax.jit(make_train_step(model, classification_task(1000), tx), donate_argnums=0)
    batch_dict = {"image": images, "label": labels}
    compiled = step.lower(state, batch_dict).compile()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    flops = float(cost["flops"]) if cost and "flops" in cost else None
    holder = [state]

    def train():
        holder[0], metrics = compiled(holder[0], batch_dict)
        jax.block_until_ready(metrics)

    n = 8192 if not quick else 2048
    a = jnp.ones((n, n), jnp.bfloat16)
    matmul = jax.jit(jnp.matmul)

    def mm():
        matmul(a, a).block_until_ready()

    timings = interleave({"train": train, "matmul": mm}, rounds=rounds, reps=5 if quick else 20)
    t = timings["train"].best
    matmul_flops = 2.0 * n**3 / timings["matmul"].best
    peak = _peak(device.device_kind)
    result = {
        "device": device.device_kind,
        "model": "ResNet50 (bfloat16 compute, float32 params)",
        "batch": batch,
        "image_size": size,
        "images_per_s_best": batch / t,
        "images_per_s_median": batch / timings["train"].median,
        "flops_per_step": flops,
        "achieved_tflops": flops / t / 1e12 if flops else None,
        "peak_bf16_tflops": peak / 1e12 if peak else None,
        "mfu": flops / t / peak if flops and peak else None,
        "matmul_bf16_tflops": matmul_flops / 1e12,
        "fraction_of_matmul": flops / t / matmul_flops if flops else None,
    }
    log(f"gpu: ResNet-50 bf16 {result['images_per_s_best']:.0f} img/s, MFU {result['mfu']}")
    return result
