"""Interleaved timing and the run's environment: the measuring rules every benchmark shares.

On a shared machine the speed of everything drifts with the load of its neighbours, so
candidates are never timed one after the other. :func:`interleave` runs them in rounds: in
each round every candidate runs ``reps`` times back to back and is timed; the rounds repeat.
A candidate's figure is its best round (least disturbed) with the median beside it, and a
ratio between two candidates is taken both from the bests and as the median of the per-round
ratios (each round's pair ran within moments of each other).
"""

from __future__ import annotations

import datetime
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import jax
import numpy as np

from jaxcnn.backends import cpu
from jaxcnn.backends.cpu import host_memory
from jaxcnn.backends.cpu.options import compiler_options


@dataclass
class Timing:
    """Seconds per call of one candidate, one entry per round."""

    rounds: list[float] = field(default_factory=list)

    @property
    def best(self) -> float:
        return min(self.rounds)

    @property
    def median(self) -> float:
        return statistics.median(self.rounds)

    def as_dict(self) -> dict:
        return {
            "best_s": self.best,
            "median_s": self.median,
            "rounds_s": [round(t, 6) for t in self.rounds],
        }


def interleave(
    candidates: dict[str, Callable[[], None]], *, rounds: int, reps: int, warmup: int = 1
) -> dict[str, Timing]:
    """Times each blocking ``candidates[name]()`` in interleaved rounds (see module doc)."""
    for fn in candidates.values():
        for _ in range(warmup):
            fn()
    out = {name: Timing() for name in candidates}
    for r in range(rounds):
        # Alternate the order so no candidate always runs right after the same neighbour.
        names = list(candidates) if r % 2 == 0 else list(reversed(candidates))
        for name in names:
            fn = candidates[name]
            start = time.perf_counter()
            for _ in range(reps):
                fn()
            out[name].rounds.append((time.perf_counter() - start) / reps)
    return out


def paired_ratio(slow: Timing, fast: Timing) -> float:
    """Median over rounds of ``slow / fast`` time, i.e. how many times faster ``fast`` is."""
    return float(np.median([s / f for s, f in zip(slow.rounds, fast.rounds)]))


def versus(peer_name: str, peer: Timing, candidate: Timing) -> dict:
    """How many times faster ``candidate`` is than ``peer``: best over best and paired median."""
    return {
        "torch": peer_name,
        "speedup_best": peer.best / candidate.best,
        "speedup_paired_median": paired_ratio(peer, candidate),
    }


def _git_revision() -> str | None:
    try:
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True, text=True,
            timeout=10,
        )
        if rev.returncode:
            return None
        return rev.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def environment() -> dict:
    """Machine, versions, load and the XLA settings in force (recorded next to the numbers)."""
    import flax
    import optax

    try:
        import torch

        torch_info = {"version": torch.__version__, "threads": torch.get_num_threads()}
    except ImportError:
        torch_info = None
    try:
        load = os.getloadavg()
    except OSError:
        load = None
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "host": platform.node(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "load_average_at_start": load,
        "jax": jax.__version__,
        "jax_backend": jax.default_backend(),
        "jax_devices": [str(d) for d in jax.devices()],
        "flax": flax.__version__,
        "optax": optax.__version__,
        "numpy": np.__version__,
        "torch": torch_info,
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        # Whether the CPU kernels are on outside the candidates' own scopes (jaxcnn.backends.cpu).
        "jaxcnn_cpu_kernels": cpu.state(),
        # The per-computation options the jaxcnn candidates are compiled with.
        "jaxcnn_compiler_options": compiler_options(),
        # Whether this process's malloc keeps freed memory (jaxcnn.backends.cpu.host_memory), for every framework.
        "host_memory": host_memory.state(),
        "git_revision": _git_revision(),
    }
