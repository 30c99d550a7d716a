"""With the CPU kernels on, the plain ``jax.jit`` + ``NamedSharding`` data-parallel step of every
zoo model runs on 8 devices, in both compilation modes, and gives the reference program's losses.

One subprocess (the device count is fixed when JAX starts) runs ``zoo_steps.py``. Besides the
losses, each compiled step's collectives are checked: all top-level reductions over all 8
devices, none inside a loop. Kernels whose loops cut the batch across iterations once put
all-reduces over 2- and 4-device subsets inside loop bodies, and XLA:CPU aborted such a step
with a rendezvous timeout.
"""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from zoo_steps import CASES  # noqa: I001  (tests/backends is on sys.path under pytest's rootdir-relative import)


@pytest.fixture(scope="module")
def results():
    here = pathlib.Path(__file__).parent
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(here), env.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, str(here / "zoo_steps.py"), "8"], env=env, capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]
    return {r["model"]: r for r in map(json.loads, done.stdout.splitlines())}


@pytest.mark.slow
@pytest.mark.parametrize("model", sorted(CASES))
def test_sharded_step_with_the_kernels_gives_the_reference_losses(results, model):
    r = results[model]
    assert r["lax collectives"] == []
    for mode in ("kernels", "kernels+options"):
        assert r[mode + " collectives"] == [], (mode, r[mode + " collectives"])
        np.testing.assert_allclose(r[mode], r["lax"], rtol=2e-5, atol=1e-6)
