"""Train-step throughput and memory: jaxcnn against raw lax, flax.linen and PyTorch eager.

For every model and batch size, each framework gets a full training step on one fixed random
batch already in memory: forward, cross-entropy loss, backward, Adam update (learning rate
1e-3), BatchNorm statistics in training mode where the model has BatchNorm. Candidates:

- ``jaxcnn``: the model from ``jaxcnn.models`` and ``jaxcnn.train.make_train_step`` (which
  also computes accuracy, the gradient norm and a finiteness guard), jitted with the state
  donated, by ``jaxcnn.backends.cpu.jit`` (jaxcnn's XLA options) with the CPU kernels on, as
  ``jaxcnn train`` compiles it;
- ``jaxcnn[conv=lax]``: the same with the CPU kernels off (every op its plain ``lax``
  program), still with jaxcnn's XLA options;
- ``jaxcnn[xla defaults]``: the CPU kernels on, compiled by plain ``jax.jit`` (XLA's default
  options, and the kernels planned for them);
- ``jaxcnn[plain jax.jit]``: the CPU kernels off and plain ``jax.jit``: what a user's own
  ``jax.jit`` of the step gets by default;
- ``flax.linen`` and ``lax``: the peers of :mod:`experiments.benchmarks.peers` with a plain
  jitted step (loss, grads, Adam), state donated;
- ``torch NCHW`` / ``torch channels_last``: the PyTorch peer in eager mode, ``torch.optim.Adam``
  with its defaults, contiguous or ``channels_last`` memory format for model and batch, with
  PyTorch's default thread count; ``... 1 thread`` the same with ``torch.set_num_threads(1)``
  (on a loaded 2-core machine PyTorch's OpenMP threads wait on each other and one thread is
  often several times faster). jaxcnn is compared with the fastest of the four. With
  ``torch_device="cuda"`` (a GPU run) model and batch live on the GPU.

Every JAX step blocks on its result before the next starts (as a loop reading the loss
would); PyTorch eager is synchronous on the CPU, and a CUDA step ends with
``torch.cuda.synchronize()``.

Memory, per candidate, honest about what each figure is:

- JAX: the compiled step's ``memory_analysis()``: arguments + outputs - aliased (donated)
  + temporaries: XLA's buffer plan for the step, parameters and optimizer state included;
- PyTorch: parameters + optimizer state + batch (resident before the step) plus the peak of
  bytes newly allocated during one step, read from ``torch.profiler``'s memory events
  (activations, gradients, temporaries). Allocator caching is not counted in either.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from experiments.benchmarks import peers
from experiments.benchmarks.timing import interleave, versus
from jaxcnn.backends import cpu

LEARNING_RATE = 1e-3
try:
    import torch as _torch

    DEFAULT_TORCH_THREADS = _torch.get_num_threads()
except ImportError:
    DEFAULT_TORCH_THREADS = 1

# input (H, W, C), classes, segmentation?, default batch sizes, quick batch sizes
MODELS: dict[str, dict[str, Any]] = {
    "SimpleCNN": {"input": (28, 28, 1), "classes": 10, "segmentation": False, "batches": (32, 128), "quick": (16,)},
    "LeNet5": {"input": (28, 28, 1), "classes": 10, "segmentation": False, "batches": (32, 128), "quick": (16,)},
    "ResNet18": {"input": (32, 32, 3), "classes": 10, "segmentation": False, "batches": (32,), "quick": (2,)},
    "UNet": {"input": (64, 64, 3), "classes": 2, "segmentation": True, "batches": (8,), "quick": (2,)},
}
TORCH_FRAMEWORKS = ("torch NCHW", "torch channels_last", "torch NCHW 1 thread", "torch channels_last 1 thread")
FRAMEWORKS = ("jaxcnn", "jaxcnn[conv=lax]", "jaxcnn[xla defaults]", "jaxcnn[plain jax.jit]", "flax.linen", "lax", *TORCH_FRAMEWORKS)


@dataclass
class Candidate:
    """One framework's ready-to-run train step for one model and batch."""

    name: str
    run: Callable[[], None]
    memory: dict[str, Any] = field(default_factory=dict)
    compile_s: float | None = None
    flops: float | None = None


def _batch(model: str, batch: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    spec = MODELS[model]
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, *spec["input"])).astype(np.float32)
    label_shape = (batch, *spec["input"][:2]) if spec["segmentation"] else (batch,)
    y = rng.integers(0, spec["classes"], label_shape).astype(np.int32)
    return x, y


def _cost_flops(compiled) -> float | None:
    try:
        cost = compiled.cost_analysis()
    except Exception:  # noqa: BLE001 - not every backend implements it
        return None
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else None
    if not cost or "flops" not in cost:
        return None
    return float(cost["flops"])


def _jax_memory(compiled) -> dict[str, Any]:
    try:
        ma = compiled.memory_analysis()
    except Exception as err:  # noqa: BLE001
        return {"method": "unavailable", "error": f"{type(err).__name__}: {err}"}
    if ma is None:
        return {"method": "unavailable"}
    parts = {
        "argument_bytes": int(ma.argument_size_in_bytes),
        "output_bytes": int(ma.output_size_in_bytes),
        "alias_bytes": int(ma.alias_size_in_bytes),
        "temp_bytes": int(ma.temp_size_in_bytes),
    }
    total = parts["argument_bytes"] + parts["output_bytes"] - parts["alias_bytes"] + parts["temp_bytes"]
    return {"method": "xla memory_analysis: arguments + outputs - aliased + temporaries", "bytes": total, **parts}


def jax_candidate(
    name: str, step: Callable, carry: Any, args: tuple, kernels: bool = False, jaxcnn_jit: bool = False
) -> Candidate:
    """AOT-compiles ``step(carry, *args) -> (carry, aux)`` with the carry donated: by
    ``jaxcnn.backends.cpu.jit`` (jaxcnn's XLA options) or by plain ``jax.jit``, traced with the
    CPU kernels on or off."""
    import time

    start = time.perf_counter()
    jit = cpu.jit if jaxcnn_jit else jax.jit
    with cpu.kernels(kernels):
        compiled = jit(step, donate_argnums=0).lower(carry, *args).compile()
    compile_s = time.perf_counter() - start
    holder = [carry]

    def run():
        holder[0], aux = compiled(holder[0], *args)
        jax.block_until_ready(aux)

    return Candidate(name, run, _jax_memory(compiled), compile_s, _cost_flops(compiled))


def _xent(outputs, labels):
    return optax.softmax_cross_entropy_with_integer_labels(outputs.astype(jnp.float32), labels).mean()


def _plain_step(apply_fn: Callable, tx: optax.GradientTransformation) -> Callable:
    def step(carry, x, y):
        params, state, opt_state = carry

        def loss_fn(p):
            out, new_state = apply_fn(p, state, x)
            return _xent(out, y), new_state

        (loss, new_state), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), new_state, opt_state), loss

    return step


def _jaxcnn_candidate(
    model_name: str, x: np.ndarray, y: np.ndarray, kernels: bool, name: str, jaxcnn_jit: bool = True
) -> Candidate:
    from jaxcnn.models import get_model
    from jaxcnn.train import classification_task, create_train_state, make_train_step, segmentation_task

    spec = MODELS[model_name]
    kwargs: dict[str, Any] = {"num_classes": spec["classes"]}
    if model_name == "ResNet18":
        kwargs["small_input"] = True
    model = get_model(model_name, **kwargs)
    tx = optax.adam(LEARNING_RATE)
    task = segmentation_task(spec["classes"]) if spec["segmentation"] else classification_task(spec["classes"])
    with cpu.kernels(kernels):
        state = create_train_state(model, tx, jax.random.PRNGKey(0), jnp.asarray(x[:1]))
    step = make_train_step(model, task, tx)
    batch = {"image": jnp.asarray(x), "label": jnp.asarray(y)}
    return jax_candidate(name, lambda s, b: step(s, b), state, (batch,), kernels, jaxcnn_jit)


def _flax_candidate(model_name: str, x: np.ndarray, y: np.ndarray) -> Candidate:
    spec = MODELS[model_name]
    model = peers.flax_model(model_name, spec["classes"])
    variables = model.init(jax.random.PRNGKey(0), jnp.asarray(x[:1]), train=False)
    tx = optax.adam(LEARNING_RATE)

    def apply_fn(p, s, inputs):
        if s:
            out, mutated = model.apply({"params": p, "batch_stats": s}, inputs, train=True, mutable=["batch_stats"])
            return out, mutated["batch_stats"]
        return model.apply({"params": p}, inputs, train=True), s

    params = variables["params"]
    carry = (params, variables.get("batch_stats", {}), tx.init(params))
    return jax_candidate("flax.linen", _plain_step(apply_fn, tx), carry, (jnp.asarray(x), jnp.asarray(y)))


def _lax_candidate(model_name: str, x: np.ndarray, y: np.ndarray) -> Candidate:
    spec = MODELS[model_name]
    init, apply = peers.lax_model(model_name, spec["input"], spec["classes"])
    params, state = init(jax.random.PRNGKey(0), x[:1])
    tx = optax.adam(LEARNING_RATE)
    carry = (params, state, tx.init(params))
    step = _plain_step(lambda p, s, inputs: apply(p, s, inputs, True), tx)
    return jax_candidate("lax", step, carry, (jnp.asarray(x), jnp.asarray(y)))


def _torch_peak_bytes(step: Callable[[], None]) -> int:
    """Peak bytes newly allocated (and live) during one ``step()``, from torch.profiler."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "trace.json")
        prof.export_chrome_trace(path)
        with open(path) as f:
            events = json.load(f)["traceEvents"]
    totals = [e["args"].get("Total Allocated", 0) for e in events if e.get("name") == "[memory]"]
    return int(max(totals, default=0))


def torch_threads(name: str) -> int:
    """The thread count a PyTorch candidate runs with: 1, or PyTorch's default at import."""
    return 1 if name.endswith("1 thread") else DEFAULT_TORCH_THREADS


def _with_threads(fn: Callable[[], None], threads: int) -> Callable[[], None]:
    import torch

    def run():
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
        fn()

    return run


def _torch_candidate(model_name: str, x: np.ndarray, y: np.ndarray, name: str, device: str = "cpu") -> Candidate:
    import torch
    import torch.nn.functional as torch_f

    channels_last = "channels_last" in name

    spec = MODELS[model_name]
    torch.manual_seed(0)
    model = peers.torch_model(model_name, spec["input"][-1], spec["classes"])
    xt = torch.from_numpy(np.ascontiguousarray(np.moveaxis(x, -1, 1)))
    yt = torch.from_numpy(y.astype(np.int64))
    cuda = device.startswith("cuda")
    model, xt, yt = model.to(device), xt.to(device), yt.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        xt = xt.contiguous(memory_format=torch.channels_last)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = torch_f.cross_entropy(model(xt), yt)
        loss.backward()
        opt.step()
        if cuda:  # CUDA runs asynchronously; each JAX step blocks on its result too
            torch.cuda.synchronize()

    run = _with_threads(step, torch_threads(name))
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        run()  # the optimizer state
        return Candidate(name, run, {"method": "torch.cuda.max_memory_allocated over the first step",
                                     "bytes": int(torch.cuda.max_memory_allocated())})

    run()  # creates the optimizer state
    resident = sum(p.numel() * p.element_size() for p in model.parameters())
    resident += sum(b.numel() * b.element_size() for b in model.buffers())
    for state in opt.state.values():
        resident += sum(v.numel() * v.element_size() for v in state.values() if torch.is_tensor(v))
    resident += xt.numel() * xt.element_size() + yt.numel() * yt.element_size()
    try:
        peak = _torch_peak_bytes(run)
        memory = {
            "method": "torch: params + buffers + Adam state + batch, plus peak bytes allocated during one step "
            "(torch.profiler memory events)",
            "bytes": resident + peak,
            "resident_bytes": resident,
            "step_peak_bytes": peak,
        }
    except Exception as err:  # noqa: BLE001 - the profiler is optional for the timing
        memory = {"method": "unavailable", "error": f"{type(err).__name__}: {err}", "resident_bytes": resident}
    return Candidate(name, run, memory)


def build(model_name: str, batch: int, frameworks: tuple[str, ...], torch_device: str = "cpu") -> dict[str, Candidate]:
    """The candidates of one group; PyTorch's on ``torch_device`` (``"cpu"``, ``"cuda"``)."""
    x, y = _batch(model_name, batch)
    out: dict[str, Candidate] = {}
    for fw in frameworks:
        if fw == "jaxcnn":
            out[fw] = _jaxcnn_candidate(model_name, x, y, True, fw)
        elif fw == "jaxcnn[conv=lax]":
            out[fw] = _jaxcnn_candidate(model_name, x, y, False, fw)
        elif fw == "jaxcnn[xla defaults]":
            out[fw] = _jaxcnn_candidate(model_name, x, y, True, fw, jaxcnn_jit=False)
        elif fw == "jaxcnn[plain jax.jit]":
            out[fw] = _jaxcnn_candidate(model_name, x, y, False, fw, jaxcnn_jit=False)
        elif fw == "flax.linen":
            out[fw] = _flax_candidate(model_name, x, y)
        elif fw == "lax":
            out[fw] = _lax_candidate(model_name, x, y)
        elif fw in TORCH_FRAMEWORKS:
            out[fw] = _torch_candidate(model_name, x, y, fw, torch_device)
        else:
            raise ValueError(f"unknown framework {fw!r}; expected one of {FRAMEWORKS}")
    return out


def _reps(candidates: dict[str, Candidate], target_s: float) -> int:
    """Steps per timed block so the slowest candidate's block lasts about ``target_s``."""
    import time

    slowest = 0.0
    for c in candidates.values():
        start = time.perf_counter()
        c.run()
        slowest = max(slowest, time.perf_counter() - start)
    return max(1, math.ceil(target_s / max(slowest, 1e-6)))


def run(
    models: list[str],
    batch_sizes: dict[str, tuple[int, ...]],
    frameworks: tuple[str, ...],
    *,
    rounds: int,
    block_s: float,
    log: Callable[[str], None] = print,
    torch_device: str = "cpu",
) -> list[dict[str, Any]]:
    """Measures every (model, batch) group, frameworks interleaved; returns one row per candidate."""
    rows = []
    for model_name in models:
        for batch in batch_sizes[model_name]:
            log(f"train: {model_name} batch {batch}: building {', '.join(frameworks)}")
            candidates = build(model_name, batch, frameworks, torch_device)
            reps = _reps(candidates, block_s)
            timings = interleave({k: c.run for k, c in candidates.items()}, rounds=rounds, reps=reps)
            flops = next((c.flops for k, c in candidates.items() if k == "lax" and c.flops), None)
            if flops is None:
                flops = next((c.flops for k, c in candidates.items() if k == "jaxcnn[conv=lax]" and c.flops), None)
            torch_names = [k for k in candidates if k in TORCH_FRAMEWORKS]
            best_torch = min(torch_names, key=lambda k: timings[k].best) if torch_names else None
            for name, cand in candidates.items():
                t = timings[name]
                row = {
                    "model": model_name,
                    "batch": batch,
                    "framework": name,
                    "images_per_s_best": batch / t.best,
                    "images_per_s_median": batch / t.median,
                    "step_ms_best": 1e3 * t.best,
                    "step_ms_median": 1e3 * t.median,
                    "steps_per_round": reps,
                    **t.as_dict(),
                    "compile_s": cand.compile_s,
                    "flops_per_step": flops,
                    "gflops_per_s_best": flops / t.best / 1e9 if flops else None,
                    "memory": cand.memory,
                }
                if best_torch is not None and name not in TORCH_FRAMEWORKS:
                    row["vs_best_torch"] = versus(best_torch, timings[best_torch], t)
                rows.append(row)
                log(
                    f"  {name:22s} {batch / t.best:9.1f} img/s (median {batch / t.median:9.1f})"
                    + (f"  x{row['vs_best_torch']['speedup_best']:.2f} vs {best_torch}" if "vs_best_torch" in row else "")
                )
    return rows
