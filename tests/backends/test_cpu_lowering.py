"""With the CPU kernels on, a train step lowered for ``cuda`` or ``tpu`` is the reference program.

For each zoo model, the train step (``value_and_grad`` of the loss) is traced once with the
kernels on and once with them off, and lowered for each platform. Lowered for ``tpu``/``cuda``,
the kernels-on StableHLO holds exactly the operations of the kernels-off one, apart from the
``stablehlo.case`` scaffolding of ``lax.platform_dependent`` with its constant index (and the
zeros standing for the other branch's residuals); lowered
for ``cpu`` it differs (the kernels are really there, so the comparison could fail).
"""

import collections
import re

import jax
import pytest

from jaxcnn.backends import cpu
from zoo_steps import CASES, case, train_step

# Operations of the platform dispatch itself: the platform index and the branch selection.
_DISPATCH = {"stablehlo.case", "stablehlo.return", "stablehlo.constant"}


def _operations(text: str) -> collections.Counter:
    # Broadcasts of a constant are left out too: differentiated, a platform_dependent branch
    # returns zeros in place of the residuals of the branch it is not (dead code once lowered).
    text = re.sub(r"stablehlo\.broadcast_in_dim %c\w*", "", text)  # %c..., %cst...: constants
    ops = collections.Counter(re.findall(r"\b(stablehlo\.[a-z_]+|chlo\.[a-z_]+|mhlo\.[a-z_]+)", text))
    ops.update(re.findall(r"stablehlo\.custom_call @(\w+)", text))
    return collections.Counter({op: n for op, n in ops.items() if op not in _DISPATCH})


@pytest.mark.parametrize("model", sorted(CASES))
def test_train_step_lowered_for_accelerators_holds_only_the_reference_program(model):
    loss_fn, variables, x, y = case(model)
    step = jax.jit(train_step(loss_fn))
    arguments = (variables["params"], variables["batch_stats"], x, y, jax.random.key(0))
    with cpu.kernels():
        on = step.trace(*arguments)
    with cpu.kernels(False):
        off = step.trace(*arguments)
    for platform in ("tpu", "cuda"):
        on_ops = _operations(on.lower(lowering_platforms=(platform,)).as_text())
        assert on_ops == _operations(off.lower(lowering_platforms=(platform,)).as_text()), platform
    assert _operations(on.lower(lowering_platforms=("cpu",)).as_text()) != \
        _operations(off.lower(lowering_platforms=("cpu",)).as_text())
