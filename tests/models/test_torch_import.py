"""torchvision ResNet weights -> jaxcnn: outputs equal PyTorch's; unsafe pickles are refused.

The reference is a plain-PyTorch ResNet written here with torchvision's exact attribute names
(torchvision itself cannot be installed beside this torch), so its ``state_dict()`` has
torchvision's keys.
"""

import os
import pickle

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
# The imports below need torch, hence after the skip.
from safetensors.torch import save_file  # noqa: E402
from torch import nn  # noqa: E402

from jaxcnn.models import ResNet18, ResNet50  # noqa: E402
from jaxcnn.models.torch_import import infer_torch_resnet, load_torch_resnet, read_state_dict  # noqa: E402

# ------------------------------------------------------------- torchvision-layout ResNet


def conv3x3(cin, cout, stride=1):
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


def conv1x1(cin, cout, stride=1):
    return nn.Conv2d(cin, cout, 1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """torchvision's v1.5 bottleneck: the stride sits in the 3x3 conv."""

    expansion = 4

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = conv1x1(inplanes, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        return self.relu(out + identity)


class TorchResNet(nn.Module):
    """torchvision.models.ResNet with a ``width`` (64 there) and an optional 3x3 stem."""

    def __init__(self, block, layers, num_classes=1000, width=64, small_input=False, in_channels=3):
        super().__init__()
        self.inplanes = width
        if small_input:
            self.conv1 = nn.Conv2d(in_channels, width, 3, stride=1, padding=1, bias=False)
        else:
            self.conv1 = nn.Conv2d(in_channels, width, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.Identity() if small_input else nn.MaxPool2d(3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, width, layers[0])
        self.layer2 = self._make_layer(block, width * 2, layers[1], stride=2)
        self.layer3 = self._make_layer(block, width * 4, layers[2], stride=2)
        self.layer4 = self._make_layer(block, width * 8, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(width * 8 * block.expansion, num_classes)

    def _make_layer(self, block, planes, blocks, stride=1):
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                conv1x1(self.inplanes, planes * block.expansion, stride),
                nn.BatchNorm2d(planes * block.expansion),
            )
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def _randomised(net, seed, size):
    """Random BN affine parameters and running statistics gathered from a few batches.

    The statistics come from train-mode passes with a cumulative average (momentum=None), so
    they are far from the 0/1 defaults yet keep the eval-mode activations at unit scale.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.2)
                m.momentum = None
        net.train()
        for _ in range(3):
            net(torch.randn(4, net.conv1.in_channels, size, size, generator=g) * 2.0 + 0.5)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = 0.1
    return net.eval()


def _compare(net, model, variables, size, seed=0, tol=1e-4):
    x = torch.randn(2, net.conv1.in_channels, size, size, generator=torch.Generator().manual_seed(seed + 1))
    with torch.no_grad():
        want = net(x).numpy()
    got = model.apply(variables, jnp.asarray(x.numpy().transpose(0, 2, 3, 1)), train=False)
    assert got.shape == want.shape
    assert np.abs(want).max() > 0.1  # a meaningful comparison, not two near-zero vectors
    np.testing.assert_allclose(np.asarray(got), want, rtol=tol, atol=tol)


@pytest.fixture(scope="module")
def resnet18_files(tmp_path_factory):
    torch.manual_seed(0)
    net = _randomised(TorchResNet(BasicBlock, [2, 2, 2, 2], num_classes=10), seed=0, size=64)
    folder = tmp_path_factory.mktemp("resnet18")
    sd = net.state_dict()
    assert int(sd["bn1.num_batches_tracked"]) == 3
    st, pth = folder / "r18.safetensors", folder / "r18.pth"
    save_file({k: v.contiguous() for k, v in sd.items()}, str(st))
    torch.save(sd, str(pth))
    return net, st, pth


@pytest.mark.parametrize("kind", ["safetensors", "pth", "dict"])
def test_resnet18_matches_torch(resnet18_files, kind):
    net, st, pth = resnet18_files
    source = {"safetensors": st, "pth": pth, "dict": net.state_dict()}[kind]
    model = ResNet18(num_classes=10)
    variables = load_torch_resnet(source, model)
    bn = variables["batch_stats"]["layer2_0"]["downsample_bn"]
    np.testing.assert_array_equal(np.asarray(bn["mean"]), net.layer2[0].downsample[1].running_mean.numpy())
    _compare(net, model, variables, 64)


def test_depth_and_inferred_model_give_the_same_variables(resnet18_files):
    st = resnet18_files[1]
    by_model = load_torch_resnet(st, ResNet18(num_classes=10))
    by_depth = load_torch_resnet(st, 18)
    by_name = load_torch_resnet(st, "resnet18")
    by_none = load_torch_resnet(st)
    for other in (by_depth, by_name, by_none):
        assert jax.tree_util.tree_all(
            jax.tree_util.tree_map(lambda a, b: bool(jnp.array_equal(a, b)), by_model, other)
        )
    inferred = infer_torch_resnet(st)
    assert (inferred.stage_sizes, inferred.num_classes, inferred.width, inferred.small_input) == (
        (2, 2, 2, 2),
        10,
        64,
        False,
    )


def test_small_input_resnet18_matches_torch():
    torch.manual_seed(1)
    net = _randomised(
        TorchResNet(BasicBlock, [2, 2, 2, 2], num_classes=7, width=16, small_input=True), seed=1, size=16
    )
    model = ResNet18(num_classes=7, width=16, small_input=True)
    _compare(net, model, load_torch_resnet(net.state_dict(), model), 16)
    assert infer_torch_resnet(net.state_dict()).small_input


def test_bottleneck_resnet50_layout_matches_torch(tmp_path):
    torch.manual_seed(2)
    net = _randomised(TorchResNet(Bottleneck, [3, 4, 6, 3], num_classes=5, width=8), seed=2, size=64)
    path = tmp_path / "r50.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    model = ResNet50(num_classes=5, width=8)
    variables = load_torch_resnet(path, model)
    assert "downsample_conv" in variables["params"]["layer1_0"]  # 8 -> 32 channels at stride 1
    _compare(net, model, variables, 64)
    assert load_torch_resnet(path, 50)["params"]["fc"]["kernel"].shape == (256, 5)


def test_kernel_layouts_are_transposed_from_torch(resnet18_files):
    net, st, _ = resnet18_files
    p = load_torch_resnet(st, 18)["params"]
    np.testing.assert_array_equal(
        np.asarray(p["conv1"]["kernel"]), net.conv1.weight.detach().numpy().transpose(2, 3, 1, 0)
    )
    np.testing.assert_array_equal(np.asarray(p["fc"]["kernel"]), net.fc.weight.detach().numpy().T)
    np.testing.assert_array_equal(
        np.asarray(p["layer3_0"]["downsample_bn"]["scale"]),
        net.layer3[0].downsample[1].weight.detach().numpy(),
    )


# ------------------------------------------------------------------------- safety


class _Payload:
    """Unpickling this runs ``os.system`` (writes a marker file): the classic pickle exploit."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("how", ["torch.save", "legacy torch.save", "raw pickle"])
def test_malicious_pickle_is_refused_and_never_runs(tmp_path, how):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    payload = {"conv1.weight": torch.zeros(4, 3, 7, 7), "evil": _Payload(marker)}
    if how == "torch.save":
        torch.save(payload, str(path))
    elif how == "legacy torch.save":
        torch.save(payload, str(path), _use_new_zipfile_serialization=False)
    else:
        with open(path, "wb") as f:
            pickle.dump(payload, f, protocol=2)
    # The file is a working exploit: a plain unpickle would run the payload.
    assert b"system" in path.read_bytes()
    with pytest.raises(ValueError, match="refused"):
        load_torch_resnet(path, 18)
    with pytest.raises(ValueError, match="refused"):
        read_state_dict(path)
    assert not marker.exists()


# ------------------------------------------------------------------------- errors


def test_unknown_missing_and_mismatched_keys_are_all_listed(resnet18_files):
    net = resnet18_files[0]
    sd = {k: v for k, v in net.state_dict().items() if k not in ("layer1.0.bn1.running_var", "fc.bias")}
    sd["layer9.0.conv1.weight"] = torch.zeros(3, 3, 3, 3)
    sd["head.weight"] = torch.zeros(2, 2)
    sd["layer1.1.conv2.weight"] = torch.zeros(64, 64, 5, 5)
    with pytest.raises(ValueError) as info:
        load_torch_resnet(sd, ResNet18(num_classes=10))
    text = str(info.value)
    for item in (
        "2 unknown key(s)",
        "layer9.0.conv1.weight",
        "head.weight",
        "2 missing variable(s)",
        "batch_stats/layer1_0/bn1/var",
        "params/fc/bias",
        "1 shape mismatch(es)",
        "layer1.1.conv2.weight",
        "(3, 3, 64, 64)",
    ):
        assert item in text, (item, text)


def test_wrong_depth_lists_the_extra_blocks(resnet18_files):
    # The listing is capped at 20 entries per kind: the batch statistics of the extra blocks come first.
    with pytest.raises(ValueError, match=r"(?s)missing variable.*batch_stats/layer1_2/bn1/mean.*\.\.\. and \d+ more"):
        load_torch_resnet(resnet18_files[1], 34)


def test_non_strict_loads_the_backbone_and_initialises_a_new_head():
    net = TorchResNet(BasicBlock, [1, 1, 1, 1], num_classes=10, width=8, small_input=True)
    sd = net.state_dict()
    with pytest.raises(ValueError, match="fc.weight"):
        load_torch_resnet(sd, num_classes=3)
    variables = load_torch_resnet(sd, num_classes=3, strict=False, key=jax.random.key(1))
    assert variables["params"]["fc"]["kernel"].shape == (64, 3)
    assert np.abs(np.asarray(variables["params"]["fc"]["kernel"])).max() > 0  # freshly initialised
    np.testing.assert_array_equal(
        np.asarray(variables["params"]["layer4_0"]["conv2"]["kernel"]),
        net.layer4[0].conv2.weight.detach().numpy().transpose(2, 3, 1, 0),
    )


def test_prefixed_and_wrapped_checkpoints(resnet18_files, tmp_path):
    net = resnet18_files[0]
    wrapped = {"state_dict": {f"module.{k}": v for k, v in net.state_dict().items()}, "epoch": 3}
    path = tmp_path / "ckpt.pt"
    torch.save(wrapped, str(path))
    assert set(read_state_dict(path)) == set(net.state_dict())


def test_argument_errors(tmp_path):
    with pytest.raises(TypeError, match="source"):
        read_state_dict(42)
    with pytest.raises(ValueError, match="source"):
        read_state_dict(tmp_path / "absent.pth")
    (tmp_path / "w.npz").write_bytes(b"")
    with pytest.raises(ValueError, match="suffix"):
        read_state_dict(tmp_path / "w.npz")
    sd = {"conv1.weight": np.zeros((64, 3, 7, 7), np.float32)}
    with pytest.raises(ValueError, match="model"):
        load_torch_resnet(sd, 19)
    with pytest.raises(ValueError, match="num_classes"):
        load_torch_resnet(sd, ResNet18(num_classes=10), num_classes=5)
    with pytest.raises(TypeError, match="strict"):
        load_torch_resnet(sd, 18, strict="yes")


# ------------------------------------------------------------- issue 22: copies, dtypes, bounds


@pytest.fixture(scope="module")
def tiny_net():
    torch.manual_seed(1)
    return TorchResNet(BasicBlock, [1, 1, 1, 1], num_classes=3, width=4, small_input=True).eval()


def test_loaded_arrays_share_no_memory_with_torch(tiny_net):
    net = TorchResNet(BasicBlock, [1, 1, 1, 1], num_classes=3, width=4, small_input=True)
    net.load_state_dict(tiny_net.state_dict())
    variables = load_torch_resnet(net.state_dict())
    before = np.array(variables["params"]["fc"]["bias"])
    conv_before = np.array(variables["params"]["layer1_0"]["conv1"]["kernel"])
    with torch.no_grad():
        net.fc.bias.add_(1.0)
        net.layer1[0].conv1.weight.mul_(2.0)
    np.testing.assert_array_equal(np.asarray(variables["params"]["fc"]["bias"]), before)
    np.testing.assert_array_equal(np.asarray(variables["params"]["layer1_0"]["conv1"]["kernel"]), conv_before)
    # NumPy sources too: the caller's arrays stay the caller's.
    sd = {k: v.numpy().copy() for k, v in tiny_net.state_dict().items()}
    variables = load_torch_resnet(sd)
    before = sd["fc.bias"].copy()
    sd["fc.bias"] += 1.0
    np.testing.assert_array_equal(np.asarray(variables["params"]["fc"]["bias"]), before)


@pytest.mark.parametrize("dtype", [torch.int64, torch.bool, torch.complex64])
@pytest.mark.parametrize("strict", [True, False])
def test_non_floating_tensors_are_refused_with_their_key(tiny_net, dtype, strict):
    sd = dict(tiny_net.state_dict())
    sd["layer2.0.bn1.weight"] = torch.ones(8, dtype=dtype)
    with pytest.raises(ValueError, match=rf"layer2\.0\.bn1\.weight: dtype {str(dtype)[6:]}.*, expected a floating"):
        load_torch_resnet(sd, strict=strict)


def test_non_finite_weights_are_refused_with_their_key(tiny_net):
    sd = dict(tiny_net.state_dict())
    weight = sd["layer3.0.conv2.weight"].clone()
    weight[0, 0, 0, 0] = float("nan")
    weight[1, 0, 0, 0] = float("inf")
    sd["layer3.0.conv2.weight"] = weight
    with pytest.raises(ValueError, match=r"layer3\.0\.conv2\.weight: 2 non-finite value\(s\) \(NaN or Inf\) of 2304"):
        load_torch_resnet(sd, strict=False)


def test_truncated_safetensors_file_is_named(tiny_net, tmp_path):
    path = tmp_path / "cut.safetensors"
    save_file({k: v.contiguous() for k, v in tiny_net.state_dict().items()}, str(path))
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ValueError, match=r"could not read '.*cut\.safetensors' as a safetensors file; it is truncated"):
        load_torch_resnet(path)


def test_depth_is_bounded_before_anything_is_built(tiny_net, monkeypatch):
    import time

    from jaxcnn.models import torch_import

    sd = dict(tiny_net.state_dict())
    sd["layer1.2000.conv1.weight"] = torch.zeros(4, 4, 3, 3)
    traced = []
    monkeypatch.setattr(torch_import.jax, "eval_shape", lambda *a, **k: traced.append(a))
    start = time.perf_counter()
    with pytest.raises(ValueError, match=r"2001 blocks in layer1 \(key 'layer1\.2000\.conv1\.weight'\); .* at most 3"):
        load_torch_resnet(sd)
    assert not traced and time.perf_counter() - start < 2.0
    sd = dict(tiny_net.state_dict())
    sd["layer5.0.conv1.weight"] = torch.zeros(4, 4, 3, 3)
    with pytest.raises(ValueError, match=r"5 stages .* have 4"):
        infer_torch_resnet(sd)


def test_error_listing_is_capped(tiny_net):
    sd = dict(tiny_net.state_dict())
    sd.update({f"extra{i}.weight": torch.zeros(2) for i in range(500)})
    with pytest.raises(ValueError) as info:
        load_torch_resnet(sd)
    text = str(info.value)
    assert "500 unknown key(s)" in text and "... and 480 more" in text
    assert "extra19.weight" in text and "extra20.weight" not in text and len(text.splitlines()) < 30
