"""GPU part: ResNet-50 bfloat16 train-step images/s and model FLOPs utilisation (MFU), against PyTorch.

Runs only when JAX's default backend is a GPU; otherwise :func:`run` returns
``{"skipped": reason}``. Candidates, on one fixed random batch of 224x224 images already on
the device, each a full training step with SGD (learning rate 0.1, momentum 0.9):

- ``jaxcnn``: ``jaxcnn.models.ResNet50(dtype=bfloat16)`` (float32 parameters, bfloat16
  compute), NHWC, stepped by ``jaxcnn.train.make_train_step`` and compiled as the training
  loop compiles it (:func:`experiments.benchmarks.train_step.jax_candidate`), state donated;
- ``torch``: ``torchvision.models.resnet50()`` on CUDA in ``channels_last`` memory format
  (model and batch), ``torch.autocast(dtype=bfloat16)``, ``torch.optim.SGD``, eager, with
  ``torch.backends.cudnn.benchmark`` on (as NVIDIA's reference scripts run it); each step
  ends with ``torch.cuda.synchronize()`` as each JAX step blocks on its result.

Both models are ResNet-50 v1.5 (the stride in the 3x3 convolution). FLOPs per step come from
XLA's cost analysis of the compiled jaxcnn step and are used for both (same architecture);
MFU divides the achieved FLOP/s by the device's dense bfloat16 peak from
:data:`PEAK_BF16_FLOPS` (by device kind; ``None`` when the kind is not listed) and,
independently of any table, by the rate of a large bfloat16 matmul measured in the same run.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from experiments.benchmarks.timing import Timing, interleave, versus
from experiments.benchmarks.train_step import Candidate, jax_candidate

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
LEARNING_RATE = 0.1
MOMENTUM = 0.9


def peak_bf16_flops(kind: str) -> float | None:
    """The dense bfloat16 peak of a device kind (``jax.Device.device_kind``), or ``None``."""
    for name, peak in PEAK_BF16_FLOPS.items():
        if name in kind:
            return peak
    return None


def on_gpu() -> bool:
    return jax.default_backend() in ("gpu", "cuda", "rocm")


def random_batch(batch: int, size: int, classes: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Images ``(batch, size, size, 3)`` float32 and integer labels ``(batch,)``."""
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((batch, size, size, 3)).astype(np.float32),
            rng.integers(0, classes, (batch,)).astype(np.int32))


def jaxcnn_step(model_name: str, images: np.ndarray, labels: np.ndarray, classes: int,
                model_kwargs: dict | None = None) -> Candidate:
    """jaxcnn's bfloat16 train step of ``model_name`` (a ``jaxcnn.models`` name) on one batch."""
    from jaxcnn.models import get_model
    from jaxcnn.train import classification_task, create_train_state, make_train_step

    model = get_model(model_name, num_classes=classes, dtype=jnp.bfloat16, **(model_kwargs or {}))
    tx = optax.sgd(LEARNING_RATE, momentum=MOMENTUM)
    state = create_train_state(model, tx, jax.random.PRNGKey(0), jnp.asarray(images[:1]))
    step = make_train_step(model, classification_task(classes), tx)
    batch = {"image": jnp.asarray(images), "label": jnp.asarray(labels)}
    return jax_candidate("jaxcnn", lambda s, b: step(s, b), state, (batch,), jaxcnn_jit=True)


def torch_step(builder: Callable[[int], Any], images: np.ndarray, labels: np.ndarray, classes: int,
               device: str) -> Candidate:
    """PyTorch's bfloat16-autocast, channels_last SGD train step of ``builder(classes)`` on ``device``."""
    import torch
    import torch.nn.functional as torch_f

    start = time.perf_counter()
    torch.manual_seed(0)
    cuda = device.startswith("cuda")
    if cuda:
        torch.backends.cudnn.benchmark = True
    model = builder(classes).to(device=device, memory_format=torch.channels_last).train()
    x = torch.from_numpy(np.ascontiguousarray(np.moveaxis(images, -1, 1))).to(device)
    x = x.contiguous(memory_format=torch.channels_last)
    y = torch.from_numpy(labels.astype(np.int64)).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=LEARNING_RATE, momentum=MOMENTUM)
    device_type = "cuda" if cuda else "cpu"

    def run():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device_type, dtype=torch.bfloat16):
            loss = torch_f.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        if cuda:
            torch.cuda.synchronize()

    if cuda:
        torch.cuda.reset_peak_memory_stats()
    run()  # the optimizer state, and cuDNN's algorithm search
    memory: dict[str, Any] = {"method": "unavailable"}
    if cuda:
        memory = {"method": "torch.cuda.max_memory_allocated over the first step", "bytes":
                  int(torch.cuda.max_memory_allocated())}
    return Candidate("torch", run, memory, time.perf_counter() - start)


def torchvision_resnet(name: str) -> Callable[[int], Any]:
    """``torchvision.models.<name>`` with ``num_classes``, randomly initialised."""
    def build(classes: int):
        import torchvision

        return getattr(torchvision.models, name)(num_classes=classes)

    return build


def matmul_tflops(n: int, rounds: int, reps: int) -> float:
    """Best rate of an ``n x n x n`` bfloat16 matmul in JAX, TFLOP/s."""
    a = jnp.ones((n, n), jnp.bfloat16)
    matmul = jax.jit(jnp.matmul)
    timing = interleave({"matmul": lambda: matmul(a, a).block_until_ready()}, rounds=rounds, reps=reps)
    return 2.0 * n**3 / timing["matmul"].best / 1e12


def is_out_of_memory(err: BaseException) -> bool:
    text = f"{type(err).__name__}: {err}"
    return "RESOURCE_EXHAUSTED" in text or "OutOfMemory" in text or "out of memory" in text.lower()


def free_device_memory() -> None:
    import gc

    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:
        pass


def compare(
    *,
    jax_model: str,
    torch_model: str,
    batches: Sequence[int],
    size: int,
    classes: int = 1000,
    rounds: int,
    reps: int,
    torch_device: str | None,
    model_kwargs: dict | None = None,
    torch_builder: Callable[[int], Any] | None = None,
    matmul_reference_tflops: float | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """jaxcnn against PyTorch on the largest of ``batches`` that fits both, interleaved.

    ``torch_device``: where the PyTorch step runs (``None``: no PyTorch candidate);
    ``torch_builder(classes)``: its model (default ``torchvision.models.<torch_model>``).
    """
    builder = torch_builder or torchvision_resnet(torch_model)
    tried = []
    candidates: dict[str, Candidate] = {}
    batch = None
    for b in sorted(batches, reverse=True):
        images, labels = random_batch(b, size, classes)
        try:
            candidates = {"jaxcnn": jaxcnn_step(jax_model, images, labels, classes, model_kwargs)}
            candidates["jaxcnn"].run()
            if torch_device is not None:
                candidates["torch"] = torch_step(builder, images, labels, classes, torch_device)
            batch = b
            break
        except Exception as err:  # noqa: BLE001 - only running out of memory moves on to a smaller batch
            if not is_out_of_memory(err):
                raise
            tried.append({"batch": b, "error": f"{type(err).__name__}: {str(err)[:300]}"})
            log(f"  batch {b} does not fit: {type(err).__name__}")
            candidates = {}
            free_device_memory()
    if batch is None:
        raise RuntimeError(f"no batch of {list(batches)} fits: {tried}")
    timings: dict[str, Timing] = interleave({k: c.run for k, c in candidates.items()}, rounds=rounds, reps=reps)
    flops = candidates["jaxcnn"].flops
    device = jax.devices()[0]
    peak = peak_bf16_flops(device.device_kind)
    result: dict[str, Any] = {
        "device": device.device_kind,
        "model": f"jaxcnn {jax_model} (bfloat16 compute, float32 params) vs PyTorch {torch_model} (autocast bf16)",
        "batch": batch,
        "batches_tried_too_large": tried,
        "image_size": size,
        "flops_per_step": flops,
        "flops_source": "XLA cost analysis of the compiled jaxcnn step (same architecture for both)",
        "peak_bf16_tflops": peak / 1e12 if peak else None,
        "matmul_bf16_tflops": matmul_reference_tflops,
        "frameworks": {},
    }
    for name, cand in candidates.items():
        t = timings[name]
        achieved = flops / t.best if flops else None
        row = {
            "images_per_s_best": batch / t.best,
            "images_per_s_median": batch / t.median,
            "step_ms_best": 1e3 * t.best,
            **t.as_dict(),
            "compile_or_setup_s": cand.compile_s,
            "achieved_tflops": achieved / 1e12 if achieved else None,
            "mfu": achieved / peak if achieved and peak else None,
            "fraction_of_matmul": achieved / 1e12 / matmul_reference_tflops
            if achieved and matmul_reference_tflops else None,
            "memory": cand.memory,
        }
        result["frameworks"][name] = row
        log(f"  {jax_model} batch {batch} {name:7s} {row['images_per_s_best']:9.1f} img/s "
            f"(median {row['images_per_s_median']:9.1f}), MFU {row['mfu']}")
    if "torch" in timings:
        result["jaxcnn_vs_torch"] = versus("torch", timings["torch"], timings["jaxcnn"])
    return result


def run(quick: bool, *, rounds: int, log=print) -> dict[str, Any]:
    """The benchmark suite's GPU part: ResNet-50 at batch 128 (quick: 8 at 64x64), with PyTorch on CUDA."""
    if not on_gpu():
        return {"skipped": f"no GPU: JAX's default backend is {jax.default_backend()!r}"}
    try:
        import torch

        torch_device = "cuda" if torch.cuda.is_available() else None
    except ImportError:
        torch_device = None
    matmul = matmul_tflops(2048 if quick else 8192, rounds, 5 if quick else 20)
    result = compare(jax_model="ResNet50", torch_model="resnet50", batches=(8,) if quick else (128,),
                     size=64 if quick else 224, rounds=rounds, reps=5 if quick else 20, torch_device=torch_device,
                     matmul_reference_tflops=matmul, log=log)
    jaxcnn = result["frameworks"]["jaxcnn"]
    # The flat keys the report and older JSON files read.
    result.update(images_per_s_best=jaxcnn["images_per_s_best"], images_per_s_median=jaxcnn["images_per_s_median"],
                  achieved_tflops=jaxcnn["achieved_tflops"], mfu=jaxcnn["mfu"],
                  fraction_of_matmul=jaxcnn["fraction_of_matmul"])
    return result
