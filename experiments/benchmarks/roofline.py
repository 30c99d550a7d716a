"""The machine's practical float32 ceiling: a large matmul in JAX and in PyTorch, interleaved.

Achieved GFLOP/s elsewhere in the suite are reported as a fraction of the faster of the two,
measured in the same run (so the same load conditions apply).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from experiments.benchmarks.timing import interleave


def run(size: int, *, rounds: int, reps: int) -> dict[str, Any]:
    """GFLOP/s of a ``size x size`` float32 matmul in JAX (jitted) and PyTorch (eager)."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size)).astype(np.float32)
    b = rng.standard_normal((size, size)).astype(np.float32)
    ja, jb = jnp.asarray(a), jnp.asarray(b)
    matmul = jax.jit(jnp.matmul)
    candidates = {"jax": lambda: matmul(ja, jb).block_until_ready()}
    try:
        import torch

        ta, tb = torch.from_numpy(a), torch.from_numpy(b)
        candidates["torch"] = lambda: torch.matmul(ta, tb)
    except ImportError:
        pass
    timings = interleave(candidates, rounds=rounds, reps=reps)
    flops = 2.0 * size**3
    result: dict[str, Any] = {"size": size, "flops": flops}
    for name, t in timings.items():
        result[f"{name}_gflops_best"] = flops / t.best / 1e9
        result[f"{name}_gflops_median"] = flops / t.median / 1e9
    result["reference_gflops"] = max(result[f"{n}_gflops_best"] for n in timings)
    return result
