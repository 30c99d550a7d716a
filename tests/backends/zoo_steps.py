"""Tiny train steps of every zoo model, shared by the CPU-backend tests.

Run as a script (``python tests/backends/zoo_steps.py``, with ``XLA_FLAGS`` asking for 8 host
devices), it trains each model two steps data-parallel over 8 devices (plain ``jax.jit`` and
``NamedSharding``) with the reference program, then with the CPU kernels on under ``jax.jit``
and under ``jaxcnn.backends.cpu.jit``, and prints one JSON line per model: the losses of each
and the collectives of each compiled step that are not ``all-reduce``/``all-gather`` over all
devices at the top level (what would make XLA:CPU wait on a subset of devices inside a loop).
"""

from __future__ import annotations

import json
import math
import re
import sys

import jax
import jax.numpy as jnp
import numpy as np

from jaxcnn import functional as F
from jaxcnn import models

# name -> (model, input shape (batch 16: 2 per device of 8), task): tiny widths, every layer kind of the real model.
CASES = {
    "SimpleCNN": (lambda: models.SimpleCNN(num_classes=3), (16, 12, 12, 1), "classify"),
    "LeNet5": (lambda: models.LeNet5(num_classes=3), (16, 28, 28, 1), "classify"),
    "AllConvNet": (lambda: models.AllConvNet(num_classes=3, width=12), (16, 28, 28, 1), "classify"),
    "ResNet18": (lambda: models.ResNet18(num_classes=3, small_input=True, width=8), (16, 8, 8, 3), "classify"),
    "UNet": (lambda: models.UNet(num_classes=3, features=(4, 8)), (16, 8, 8, 1), "segment"),
    "FCN": (lambda: models.FCN(num_classes=3, small_input=True, width=8), (16, 16, 16, 3), "segment"),
    "SignalRegressor": (lambda: models.SignalRegressor(num_outputs=2, features=(4, 8)), (16, 16, 1), "regress"),
}


def case(name: str):
    """``(loss_fn, variables, x, y)``: ``loss_fn(params, batch_stats, x, y, key)`` is the mean
    training loss (batch norm in training mode, dropout on)."""
    make, shape, task = CASES[name]
    model = make()
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=shape), jnp.float32)
    if task == "classify":
        y = jnp.asarray(rng.integers(0, 3, size=shape[0]), jnp.int32)
    elif task == "segment":
        y = jnp.asarray(rng.integers(0, 3, size=shape[:3]), jnp.int32)
    else:
        y = jnp.asarray(rng.normal(size=(shape[0], 2)), jnp.float32)
    variables = model.init(jax.random.key(0), x, train=False)
    variables = {"params": variables["params"], "batch_stats": variables.get("batch_stats", {})}

    def loss_fn(params, batch_stats, x, y, key):
        out, _ = model.apply({"params": params, "batch_stats": batch_stats}, x, train=True,
                             mutable=["batch_stats"], rngs={"dropout": key})
        if task == "regress":
            return F.mse(out, y)
        return F.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1))

    return loss_fn, variables, x, y


def train_step(loss_fn, lr: float = 0.1):
    """Plain SGD on ``loss_fn``: ``(params, batch_stats, x, y, key) -> (params, loss)``."""

    def step(params, batch_stats, x, y, key):
        loss, grads = jax.value_and_grad(loss_fn)(params, batch_stats, x, y, key)
        return jax.tree.map(lambda p, g: p - lr * g, params, grads), loss

    return step


def _group_size(line: str) -> int | None:
    """Devices per replica group of a collective's HLO line (``None`` when not stated)."""
    mesh = re.search(r"replica_groups=mesh\[([^\]]*)\] \{([^}]*)\}", line)
    if mesh:
        sizes = dict(re.findall(r"'(\w+)'=(\d+)", mesh.group(1)))
        return math.prod(int(sizes[a]) for a in re.findall(r"'(\w+)'", mesh.group(2)))
    iota = re.search(r"replica_groups=\[(\d+),(\d+)\]<=", line)
    if iota:
        return int(iota.group(2))
    listed = re.search(r"replica_groups=\{\{([\d,]*)\}", line)
    return len(listed.group(1).split(",")) if listed else None


def suspicious_collectives(hlo: str, devices: int) -> list[str]:
    """Collectives of compiled HLO text that sit inside a called computation (a loop body),
    move data between device pairs, or span fewer than ``devices`` devices: an empty list
    for a data-parallel step whose every collective is a top-level reduction over all devices."""
    found, computation = [], None
    for line in hlo.splitlines():
        if line and not line.startswith(" ") and line.rstrip().endswith("{"):
            computation = "ENTRY" if line.startswith("ENTRY") else line.split()[0]
        match = re.search(r"= \S+ (all-reduce|all-gather|all-to-all|reduce-scatter|collective-permute)(-start)?\(",
                          line)
        if not match:
            continue
        size = _group_size(line)
        if computation != "ENTRY" or match.group(1) == "collective-permute" or size != devices:
            found.append(f"{computation}: {match.group(1)} over {size} devices")
    return found


def _run(devices: int = 8, steps: int = 2) -> None:
    from jax.sharding import Mesh, NamedSharding
    from jax.sharding import PartitionSpec as P

    from jaxcnn.backends import cpu

    mesh = Mesh(np.array(jax.devices()[:devices]), ("data",))
    batch = NamedSharding(mesh, P("data"))
    replicated = NamedSharding(mesh, P())
    for name in CASES:
        loss_fn, variables, x, y = case(name)
        x, y = jax.device_put(x, batch), jax.device_put(y, batch)
        result = {"model": name}
        for mode in ("lax", "kernels", "kernels+options"):
            jit = cpu.jit if mode == "kernels+options" else jax.jit
            step = jit(train_step(loss_fn), in_shardings=(replicated, replicated, batch, batch, None),
                       out_shardings=(replicated, replicated))
            with cpu.kernels(mode != "lax"):
                compiled = step.lower(variables["params"], variables["batch_stats"], x, y,
                                      jax.random.key(1)).compile()
            params, losses = jax.device_put(variables["params"], replicated), []
            for i in range(steps):
                params, loss = compiled(params, variables["batch_stats"], x, y, jax.random.key(i))
                losses.append(float(loss))
            result[mode] = losses
            result[mode + " collectives"] = suspicious_collectives(compiled.as_text(), devices)
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    _run(int(sys.argv[1]) if len(sys.argv) > 1 else 8)
