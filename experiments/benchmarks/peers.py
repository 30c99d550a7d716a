"""The benchmark models written again without jaxcnn: PyTorch, flax.linen and raw ``lax``.

Each peer has jaxcnn's architecture layer for layer (same widths, windows, strides,
paddings, BatchNorm placement), so a train step does the same arithmetic in every framework:

- ``SimpleCNN``: Conv32 3x3, pool 2, Conv64 3x3, pool 2, Dense1024, Dense(classes), ReLU;
- ``LeNet5``: Conv6 5x5 pad 2, pool 2, Conv16 5x5, pool 2, Dense 120, 84, classes, ReLU;
- ``ResNet18``: the small-input (CIFAR) stem, a 3x3/1 conv, then 4 stages of 2 BasicBlocks
  (64, 128, 256, 512; stride 2 in the first 3x3 conv of stages 2-4, 1x1 projection), global
  average pooling and a dense head; BatchNorm after every conv;
- ``UNet``: DoubleConv (3x3 conv, BN, ReLU, twice) at widths 32, 64, 128 with 2x2 max
  pooling, a 256 bottleneck, 2x2/2 transposed convs up, concatenation with the skip, a
  DoubleConv per level and a 1x1 head.

Only the layout conventions differ: the JAX peers are NHWC, the PyTorch ones NCHW tensors
(optionally in ``channels_last`` memory format). Initialisation follows each framework's
defaults; it does not change the cost of a step.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

UNET_FEATURES = (32, 64, 128, 256)
RESNET_STAGES = (64, 128, 256, 512)


# --------------------------------------------------------------------------- PyTorch


def torch_model(name: str, in_channels: int, num_classes: int):
    """The PyTorch peer of ``name`` (NCHW ``torch.nn.Module``)."""
    import torch
    from torch import nn as tnn

    if name == "SimpleCNN":
        return tnn.Sequential(
            tnn.Conv2d(in_channels, 32, 3), tnn.ReLU(), tnn.MaxPool2d(2),
            tnn.Conv2d(32, 64, 3), tnn.ReLU(), tnn.MaxPool2d(2), tnn.Flatten(),
            tnn.Linear(64 * 5 * 5, 1024), tnn.ReLU(), tnn.Linear(1024, num_classes),
        )
    if name == "LeNet5":
        return tnn.Sequential(
            tnn.Conv2d(in_channels, 6, 5, padding=2), tnn.ReLU(), tnn.MaxPool2d(2),
            tnn.Conv2d(6, 16, 5), tnn.ReLU(), tnn.MaxPool2d(2), tnn.Flatten(),
            tnn.Linear(16 * 5 * 5, 120), tnn.ReLU(), tnn.Linear(120, 84), tnn.ReLU(), tnn.Linear(84, num_classes),
        )
    if name == "ResNet18":

        class Block(tnn.Module):
            def __init__(self, c_in, c_out, stride):
                super().__init__()
                self.conv1 = tnn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
                self.bn1 = tnn.BatchNorm2d(c_out)
                self.conv2 = tnn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
                self.bn2 = tnn.BatchNorm2d(c_out)
                self.down = None
                if stride != 1 or c_in != c_out:
                    self.down = tnn.Sequential(tnn.Conv2d(c_in, c_out, 1, stride, bias=False), tnn.BatchNorm2d(c_out))

            def forward(self, x):
                y = torch.relu(self.bn1(self.conv1(x)))
                y = self.bn2(self.conv2(y))
                return torch.relu(y + (x if self.down is None else self.down(x)))

        layers: list[Any] = [tnn.Conv2d(in_channels, 64, 3, 1, 1, bias=False), tnn.BatchNorm2d(64), tnn.ReLU()]
        c = 64
        for i, width in enumerate(RESNET_STAGES):
            for j in range(2):
                layers.append(Block(c, width, 2 if i > 0 and j == 0 else 1))
                c = width
        layers += [tnn.AdaptiveAvgPool2d(1), tnn.Flatten(), tnn.Linear(c, num_classes)]
        return tnn.Sequential(*layers)
    if name == "UNet":

        def double(c_in, c_out):
            return tnn.Sequential(
                tnn.Conv2d(c_in, c_out, 3, padding=1, bias=False), tnn.BatchNorm2d(c_out), tnn.ReLU(),
                tnn.Conv2d(c_out, c_out, 3, padding=1, bias=False), tnn.BatchNorm2d(c_out), tnn.ReLU(),
            )

        class UNet(tnn.Module):
            def __init__(self):
                super().__init__()
                f = UNET_FEATURES
                self.down = tnn.ModuleList()
                c = in_channels
                for width in f[:-1]:
                    self.down.append(double(c, width))
                    c = width
                self.bottleneck = double(c, f[-1])
                self.ups = tnn.ModuleList()
                self.dec = tnn.ModuleList()
                c = f[-1]
                for width in reversed(f[:-1]):
                    self.ups.append(tnn.ConvTranspose2d(c, width, 2, stride=2))
                    self.dec.append(double(2 * width, width))
                    c = width
                self.head = tnn.Conv2d(c, num_classes, 1)

            def forward(self, x):
                skips = []
                for block in self.down:
                    x = block(x)
                    skips.append(x)
                    x = torch.nn.functional.max_pool2d(x, 2)
                x = self.bottleneck(x)
                for up, dec, skip in zip(self.ups, self.dec, reversed(skips)):
                    x = dec(torch.cat([skip, up(x)], dim=1))
                return self.head(x)

        return UNet()
    raise ValueError(f"torch_model: unknown model {name!r}")


# --------------------------------------------------------------------------- flax.linen


class FlaxSimpleCNN(nn.Module):
    num_classes: int

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.max_pool(nn.relu(nn.Conv(32, (3, 3), padding="VALID")(x)), (2, 2), (2, 2))
        x = nn.max_pool(nn.relu(nn.Conv(64, (3, 3), padding="VALID")(x)), (2, 2), (2, 2))
        x = x.reshape(x.shape[0], -1)
        return nn.Dense(self.num_classes)(nn.relu(nn.Dense(1024)(x)))


class FlaxLeNet5(nn.Module):
    num_classes: int

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.max_pool(nn.relu(nn.Conv(6, (5, 5), padding=2)(x)), (2, 2), (2, 2))
        x = nn.max_pool(nn.relu(nn.Conv(16, (5, 5), padding="VALID")(x)), (2, 2), (2, 2))
        x = x.reshape(x.shape[0], -1)
        x = nn.relu(nn.Dense(84)(nn.relu(nn.Dense(120)(x))))
        return nn.Dense(self.num_classes)(x)


def _flax_norm(train: bool):
    return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5)


class FlaxBlock(nn.Module):
    features: int
    stride: int

    @nn.compact
    def __call__(self, x, train: bool):
        y = nn.Conv(self.features, (3, 3), (self.stride, self.stride), padding=1, use_bias=False)(x)
        y = nn.relu(_flax_norm(train)(y))
        y = _flax_norm(train)(nn.Conv(self.features, (3, 3), padding=1, use_bias=False)(y))
        if self.stride != 1 or x.shape[-1] != self.features:
            x = nn.Conv(self.features, (1, 1), (self.stride, self.stride), use_bias=False)(x)
            x = _flax_norm(train)(x)
        return nn.relu(x + y)


class FlaxResNet18(nn.Module):
    num_classes: int

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.relu(_flax_norm(train)(nn.Conv(64, (3, 3), padding=1, use_bias=False)(x)))
        for i, width in enumerate(RESNET_STAGES):
            for j in range(2):
                x = FlaxBlock(width, 2 if i > 0 and j == 0 else 1)(x, train)
        return nn.Dense(self.num_classes)(jnp.mean(x, axis=(1, 2)))


class FlaxDoubleConv(nn.Module):
    features: int

    @nn.compact
    def __call__(self, x, train: bool):
        for _ in range(2):
            x = nn.Conv(self.features, (3, 3), padding=1, use_bias=False)(x)
            x = nn.relu(_flax_norm(train)(x))
        return x


class FlaxUNet(nn.Module):
    num_classes: int

    @nn.compact
    def __call__(self, x, train: bool = False):
        skips = []
        for width in UNET_FEATURES[:-1]:
            x = FlaxDoubleConv(width)(x, train)
            skips.append(x)
            x = nn.max_pool(x, (2, 2), (2, 2))
        x = FlaxDoubleConv(UNET_FEATURES[-1])(x, train)
        for width, skip in zip(reversed(UNET_FEATURES[:-1]), reversed(skips)):
            x = nn.ConvTranspose(width, (2, 2), (2, 2))(x)
            x = FlaxDoubleConv(width)(jnp.concatenate([skip, x], axis=-1), train)
        return nn.Conv(self.num_classes, (1, 1))(x)


FLAX_MODELS = {"SimpleCNN": FlaxSimpleCNN, "LeNet5": FlaxLeNet5, "ResNet18": FlaxResNet18, "UNet": FlaxUNet}


def flax_model(name: str, num_classes: int) -> nn.Module:
    return FLAX_MODELS[name](num_classes=num_classes)


# --------------------------------------------------------------------------- raw lax
#
# Pure functions on explicit parameter trees: ``init(key, x) -> (params, state)`` and
# ``apply(params, state, x, train) -> (outputs, new_state)``; ``state`` holds BatchNorm's
# running statistics (updated with momentum 0.1, as PyTorch).

_DN = ("NHWC", "HWIO", "NHWC")


def _conv(x, w, stride=1, padding=0):
    pads = ((padding, padding), (padding, padding))
    return lax.conv_general_dilated(x, w, (stride, stride), pads, dimension_numbers=_DN)


def _max_pool2(x):
    return lax.reduce_window(x, -jnp.inf, lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")


def _batch_norm(x, p, s, train):
    if train:
        mean = jnp.mean(x, axis=(0, 1, 2))
        var = jnp.var(x, axis=(0, 1, 2))
        n = x.shape[0] * x.shape[1] * x.shape[2]
        s = {"mean": 0.9 * s["mean"] + 0.1 * mean, "var": 0.9 * s["var"] + 0.1 * var * n / (n - 1)}
    else:
        mean, var = s["mean"], s["var"]
    y = (x - mean) * lax.rsqrt(var + 1e-5) * p["scale"] + p["bias"]
    return y, s


class _Init:
    """Hands out parameters with He-normal weights, drawing a fresh key each time."""

    def __init__(self, key):
        self.key = key

    def _next(self):
        self.key, sub = jax.random.split(self.key)
        return sub

    def conv(self, k, c_in, c_out):
        std = (2.0 / (k * k * c_in)) ** 0.5
        return jax.random.normal(self._next(), (k, k, c_in, c_out), jnp.float32) * std

    def dense(self, c_in, c_out):
        w = jax.random.normal(self._next(), (c_in, c_out), jnp.float32) * (1.0 / c_in) ** 0.5
        return {"w": w, "b": jnp.zeros((c_out,), jnp.float32)}

    @staticmethod
    def norm(c):
        params = {"scale": jnp.ones((c,), jnp.float32), "bias": jnp.zeros((c,), jnp.float32)}
        state = {"mean": jnp.zeros((c,), jnp.float32), "var": jnp.ones((c,), jnp.float32)}
        return params, state


def _lax_simple_cnn(num_classes, in_channels, flat):
    def init(key, x):
        g = _Init(key)
        params = {
            "c1": g.conv(3, in_channels, 32), "b1": jnp.zeros((32,)), "c2": g.conv(3, 32, 64), "b2": jnp.zeros((64,)),
            "d1": g.dense(flat, 1024), "d2": g.dense(1024, num_classes),
        }
        return params, {}

    def apply(p, s, x, train):
        x = _max_pool2(jax.nn.relu(_conv(x, p["c1"]) + p["b1"]))
        x = _max_pool2(jax.nn.relu(_conv(x, p["c2"]) + p["b2"]))
        x = x.reshape(x.shape[0], -1)
        x = jax.nn.relu(x @ p["d1"]["w"] + p["d1"]["b"])
        return x @ p["d2"]["w"] + p["d2"]["b"], s

    return init, apply


def _lax_lenet5(num_classes, in_channels):
    def init(key, x):
        g = _Init(key)
        params = {
            "c1": g.conv(5, in_channels, 6), "b1": jnp.zeros((6,)), "c2": g.conv(5, 6, 16), "b2": jnp.zeros((16,)),
            "d1": g.dense(400, 120), "d2": g.dense(120, 84), "d3": g.dense(84, num_classes),
        }
        return params, {}

    def apply(p, s, x, train):
        x = _max_pool2(jax.nn.relu(_conv(x, p["c1"], padding=2) + p["b1"]))
        x = _max_pool2(jax.nn.relu(_conv(x, p["c2"]) + p["b2"]))
        x = x.reshape(x.shape[0], -1)
        x = jax.nn.relu(x @ p["d1"]["w"] + p["d1"]["b"])
        x = jax.nn.relu(x @ p["d2"]["w"] + p["d2"]["b"])
        return x @ p["d3"]["w"] + p["d3"]["b"], s

    return init, apply


def _lax_resnet18(num_classes, in_channels):
    plan = []
    c = 64
    for i, width in enumerate(RESNET_STAGES):
        for j in range(2):
            stride = 2 if i > 0 and j == 0 else 1
            plan.append((c, width, stride))
            c = width

    def init(key, x):
        g = _Init(key)
        params, state = {"stem": g.conv(3, in_channels, 64)}, {}
        params["stem_bn"], state["stem_bn"] = g.norm(64)
        for b, (c_in, c_out, stride) in enumerate(plan):
            p, s = {"c1": g.conv(3, c_in, c_out), "c2": g.conv(3, c_out, c_out)}, {}
            p["n1"], s["n1"] = g.norm(c_out)
            p["n2"], s["n2"] = g.norm(c_out)
            if stride != 1 or c_in != c_out:
                p["down"] = g.conv(1, c_in, c_out)
                p["nd"], s["nd"] = g.norm(c_out)
            params[f"block{b}"], state[f"block{b}"] = p, s
        params["fc"] = g.dense(RESNET_STAGES[-1], num_classes)
        return params, state

    def apply(params, state, x, train):
        new = {}
        x, new["stem_bn"] = _batch_norm(_conv(x, params["stem"], padding=1), params["stem_bn"], state["stem_bn"], train)
        x = jax.nn.relu(x)
        for b, (_, _, stride) in enumerate(plan):
            p, s, ns = params[f"block{b}"], state[f"block{b}"], {}
            y, ns["n1"] = _batch_norm(_conv(x, p["c1"], stride, 1), p["n1"], s["n1"], train)
            y, ns["n2"] = _batch_norm(_conv(jax.nn.relu(y), p["c2"], 1, 1), p["n2"], s["n2"], train)
            if "down" in p:
                x, ns["nd"] = _batch_norm(_conv(x, p["down"], stride, 0), p["nd"], s["nd"], train)
            x = jax.nn.relu(x + y)
            new[f"block{b}"] = ns
        x = jnp.mean(x, axis=(1, 2))
        return x @ params["fc"]["w"] + params["fc"]["b"], new

    return init, apply


def _lax_unet(num_classes, in_channels):
    f = UNET_FEATURES

    def double_init(g, c_in, c_out):
        p, s = {"c1": g.conv(3, c_in, c_out), "c2": g.conv(3, c_out, c_out)}, {}
        p["n1"], s["n1"] = g.norm(c_out)
        p["n2"], s["n2"] = g.norm(c_out)
        return p, s

    def double(x, p, s, train):
        ns = {}
        x, ns["n1"] = _batch_norm(_conv(x, p["c1"], 1, 1), p["n1"], s["n1"], train)
        x, ns["n2"] = _batch_norm(_conv(jax.nn.relu(x), p["c2"], 1, 1), p["n2"], s["n2"], train)
        return jax.nn.relu(x), ns

    def init(key, x):
        g = _Init(key)
        params, state = {}, {}
        c = in_channels
        for i, width in enumerate(f[:-1]):
            params[f"down{i}"], state[f"down{i}"] = double_init(g, c, width)
            c = width
        params["bottleneck"], state["bottleneck"] = double_init(g, c, f[-1])
        c = f[-1]
        for i, width in reversed(list(enumerate(f[:-1]))):
            params[f"up{i}"] = {"w": g.conv(2, c, width), "b": jnp.zeros((width,))}
            params[f"dec{i}"], state[f"dec{i}"] = double_init(g, 2 * width, width)
            c = width
        params["head"] = {"w": g.conv(1, c, num_classes), "b": jnp.zeros((num_classes,))}
        return params, state

    def apply(params, state, x, train):
        new, skips = {}, []
        for i in range(len(f) - 1):
            x, new[f"down{i}"] = double(x, params[f"down{i}"], state[f"down{i}"], train)
            skips.append(x)
            x = _max_pool2(x)
        x, new["bottleneck"] = double(x, params["bottleneck"], state["bottleneck"], train)
        for i in reversed(range(len(f) - 1)):
            up = params[f"up{i}"]
            x = lax.conv_transpose(x, up["w"], (2, 2), "VALID", dimension_numbers=_DN) + up["b"]
            x, new[f"dec{i}"] = double(jnp.concatenate([skips[i], x], axis=-1), params[f"dec{i}"], state[f"dec{i}"], train)
        return _conv(x, params["head"]["w"]) + params["head"]["b"], new

    return init, apply


def lax_model(name: str, input_shape: Sequence[int], num_classes: int) -> tuple[Callable, Callable]:
    """``(init, apply)`` of the raw-lax peer of ``name`` for ``(H, W, C)`` inputs."""
    h, w, c = input_shape
    if name == "SimpleCNN":
        flat = (((h - 2) // 2 - 2) // 2) * (((w - 2) // 2 - 2) // 2) * 64
        return _lax_simple_cnn(num_classes, c, flat)
    if name == "LeNet5":
        return _lax_lenet5(num_classes, c)
    if name == "ResNet18":
        return _lax_resnet18(num_classes, c)
    if name == "UNet":
        return _lax_unet(num_classes, c)
    raise ValueError(f"lax_model: unknown model {name!r}")
