"""Damaged or hostile torchvision weights given to ``load_torch_resnet``: refused by name, never
loaded silently, and never aliased with the caller's tensors.

The unit tests are in ``tests/models/test_torch_import.py``; here each fault is one trial of
the reliability report.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from fault_tools import record

from jaxcnn.models import ResNet
from jaxcnn.models.torch_import import load_torch_resnet

torch = pytest.importorskip("torch")
save_file = pytest.importorskip("safetensors.torch").save_file


@pytest.fixture(scope="module")
def state_dict():
    """A ResNet-10 (one BasicBlock per stage, width 4, 3x3 stem) in torchvision's key layout."""
    model = ResNet(stage_sizes=(1, 1, 1, 1), num_classes=3, width=4, small_input=True)
    shapes = {"conv1.weight": (4, 3, 3, 3), "fc.weight": (3, 32), "fc.bias": (3,)}
    bn = lambda prefix, c: {f"{prefix}.{k}": (c,) for k in ("weight", "bias", "running_mean", "running_var")}  # noqa: E731
    shapes.update(bn("bn1", 4))
    cin = 4
    for stage in range(1, 5):
        c = 4 * 2 ** (stage - 1)
        p = f"layer{stage}.0"
        shapes.update({f"{p}.conv1.weight": (c, cin, 3, 3), f"{p}.conv2.weight": (c, c, 3, 3)})
        shapes.update(bn(f"{p}.bn1", c) | bn(f"{p}.bn2", c))
        if stage > 1:
            shapes.update({f"{p}.downsample.0.weight": (c, cin, 1, 1)} | bn(f"{p}.downsample.1", c))
        cin = c
    g = torch.Generator().manual_seed(0)
    sd = {k: torch.rand(s, generator=g) + 0.5 for k, s in shapes.items()}
    load_torch_resnet(sd, model)  # the intact dict loads
    return sd


def test_weight_import_faults(state_dict, tmp_path):
    outcomes = []
    # 1. In-place update of the torch tensors after loading.
    sd = {k: v.clone() for k, v in state_dict.items()}
    variables = load_torch_resnet(sd)
    before = np.array(variables["params"]["fc"]["bias"])
    sd["fc.bias"].add_(1.0)
    np.testing.assert_array_equal(np.asarray(variables["params"]["fc"]["bias"]), before)
    outcomes.append("torch fc.bias.add_(1.0) after loading: JAX bias unchanged")
    # 2-4. Tensors of a wrong dtype or with NaN.
    for name, value, expected in [
        ("int", torch.ones(8, dtype=torch.int64), r"layer2\.0\.bn1\.weight: dtype int64"),
        ("complex", torch.ones(8, dtype=torch.complex64), r"layer2\.0\.bn1\.weight: dtype complex64"),
        ("NaN", torch.full((8,), float("nan")), r"layer2\.0\.bn1\.weight: 8 non-finite value"),
    ]:
        with pytest.raises(ValueError, match=expected) as info:
            load_torch_resnet({**state_dict, "layer2.0.bn1.weight": value}, strict=False)
        outcomes.append(f"{name} tensor: {str(info.value).splitlines()[2].strip()}")
    # 5. A safetensors file cut in half.
    path = tmp_path / "cut.safetensors"
    save_file({k: v.contiguous() for k, v in state_dict.items()}, str(path))
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ValueError, match=r"cut\.safetensors.*truncated or damaged") as info:
        load_torch_resnet(path)
    outcomes.append(f"truncated safetensors: {str(info.value)[:90]}...")
    # 6. A key that claims 2001 blocks in layer1: refused before anything is built.
    start = time.perf_counter()
    with pytest.raises(ValueError, match=r"2001 blocks in layer1") as info:
        load_torch_resnet({**state_dict, "layer1.2000.conv1.weight": torch.zeros(4, 4, 3, 3)})
    seconds = time.perf_counter() - start
    assert seconds < 2.0
    outcomes.append(f"key layer1.2000.*: refused in {seconds:.2f} s")
    # 7. Thousands of unknown keys: the listing is capped.
    with pytest.raises(ValueError) as info:
        load_torch_resnet({**state_dict, **{f"extra{i}.weight": torch.zeros(2) for i in range(3000)}})
    lines = len(str(info.value).splitlines())
    assert lines < 30
    outcomes.append(f"3000 unknown keys: {lines}-line error")
    record("torchvision weights damaged or hostile (load_torch_resnet)", trials=len(outcomes),
           detail="; ".join(outcomes), test="tests/reliability/test_weight_import.py")
