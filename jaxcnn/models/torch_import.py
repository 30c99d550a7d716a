"""torchvision ResNet weights -> :class:`jaxcnn.models.ResNet` variables.

A torchvision state dict maps one to one onto the jaxcnn ResNet of the same depth::

    conv1.weight                 (O, I, kh, kw)  -> params/conv1/kernel            (kh, kw, I, O)
    bn1.weight / bn1.bias        (C,)            -> params/bn1/scale / bias
    bn1.running_mean / _var      (C,)            -> batch_stats/bn1/mean / var
    layer2.0.conv1.weight                        -> params/layer2_0/conv1/kernel
    layer2.0.downsample.0.weight                 -> params/layer2_0/downsample_conv/kernel
    layer2.0.downsample.1.*                      -> .../layer2_0/downsample_bn/...
    fc.weight                    (out, in)       -> params/fc/kernel                (in, out)
    *.num_batches_tracked                        -> ignored

Sources: a ``.safetensors`` file, a PyTorch ``.pth``/``.pt``/``.bin``/``.ckpt`` file, or a
mapping of names to arrays (NumPy, JAX or torch tensors). PyTorch files are read only with
``torch.load(path, weights_only=True, map_location="cpu")``, whose restricted unpickler refuses
anything but tensors and plain containers, so a malicious checkpoint cannot run code; torch
itself is imported only then (it is an optional dependency).

Example::

    model = ResNet18(num_classes=1000)
    variables = load_torch_resnet("resnet18.safetensors", model)
    logits = model.apply(variables, images_nhwc, train=False)
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxcnn.models.resnet import BasicBlock, Bottleneck, ResNet

__all__ = ["infer_torch_resnet", "load_torch_resnet", "read_state_dict"]

_DEPTHS = {
    18: ((2, 2, 2, 2), BasicBlock),
    34: ((3, 4, 6, 3), BasicBlock),
    50: ((3, 4, 6, 3), Bottleneck),
    101: ((3, 4, 23, 3), Bottleneck),
    152: ((3, 8, 36, 3), Bottleneck),
}
# The most blocks any known architecture has in each stage: a state dict is refused before
# anything is built when it claims more (a key "layer1.2000..." would build a ResNet-4004).
_MAX_BLOCKS = tuple(max(stages[i] for stages, _ in _DEPTHS.values()) for i in range(4))
# Error listings show this many entries per kind, then a count of the rest.
_MAX_LISTED = 20
_TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")
_KEY = re.compile(
    r"^(?P<module>conv1|bn1|fc|layer(?P<stage>\d+)\.(?P<block>\d+)\.(?P<sub>conv\d+|bn\d+|downsample\.[01]))"
    r"\.(?P<kind>weight|bias|running_mean|running_var|num_batches_tracked)$"
)


# ------------------------------------------------------------------------------- reading


def _to_numpy(value: Any, name: str) -> np.ndarray:
    """A NumPy copy of an array or a torch tensor (bfloat16 tensors become float32).

    Always a copy: ``tensor.numpy()`` shares the tensor's memory, and JAX may keep sharing it,
    so an in-place update of the torch model would otherwise change the "immutable" JAX arrays.
    """
    if hasattr(value, "detach") and hasattr(value, "numpy"):  # a torch tensor, without importing torch
        value = value.detach().cpu()
        if str(value.dtype) == "torch.bfloat16":
            value = value.float()
        return np.array(value.numpy(), copy=True)
    try:
        return np.array(value, copy=True)
    except (TypeError, ValueError) as err:
        raise TypeError(
            f"read_state_dict: entry {name!r} is not an array, got {type(value).__name__}"
        ) from err


def _torch_load(path: str) -> Any:
    try:
        import torch
    except ImportError as err:
        raise ImportError(
            f"read_state_dict: reading {path!r} needs PyTorch (pip install torch); or convert the "
            f"checkpoint to .safetensors, which needs only the safetensors package"
        ) from err
    try:
        return torch.load(path, weights_only=True, map_location="cpu")
    except Exception as err:  # torch raises pickle.UnpicklingError or RuntimeError, by version
        raise ValueError(
            f"read_state_dict: refused to load {path!r}: torch.load(weights_only=True) accepts only "
            f"tensors and plain containers, and this file holds something else or is not a PyTorch "
            f"checkpoint ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})"
        ) from err


def read_state_dict(source: Any) -> dict[str, np.ndarray]:
    """Reads a state dict: ``{name: np.ndarray}`` in PyTorch's layouts.

    Args:
      source: a path (``str`` or ``os.PathLike``) to a ``.safetensors`` file or a PyTorch
        ``.pth``/``.pt``/``.bin``/``.ckpt`` file, or a mapping of names to arrays or tensors.
        A checkpoint dict holding the weights under ``"state_dict"`` or ``"model"`` is
        unwrapped, and a ``"module."`` prefix on every key (``DataParallel``) is removed.

    Raises:
      ValueError: unknown file suffix, or a PyTorch file the safe unpickler refuses.
      TypeError: ``source`` is neither a path nor a mapping, or an entry is not an array.
    """
    op = "read_state_dict"
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if not os.path.isfile(path):
            raise ValueError(f"{op}: source={path!r} is not a file")
        suffix = os.path.splitext(path)[1].lower()
        if suffix == ".safetensors":
            from safetensors.numpy import load_file

            try:
                raw: Any = load_file(path)
            except Exception as err:  # SafetensorError, or OSError/ValueError by version
                raise ValueError(
                    f"{op}: could not read {path!r} as a safetensors file; it is truncated or damaged "
                    f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})"
                ) from err
        elif suffix in _TORCH_SUFFIXES:
            raw = _torch_load(path)
        else:
            raise ValueError(
                f"{op}: source={path!r} has an unknown suffix {suffix!r}; expected '.safetensors' "
                f"or one of {_TORCH_SUFFIXES}"
            )
    elif isinstance(source, Mapping):
        raw = source
    else:
        raise TypeError(f"{op}: source must be a path or a mapping of arrays, got {type(source).__name__}")
    if not isinstance(raw, Mapping):
        raise TypeError(f"{op}: the checkpoint holds a {type(raw).__name__}, not a state dict")
    for wrapper in ("state_dict", "model"):
        if isinstance(raw.get(wrapper), Mapping):
            raw = raw[wrapper]
            break
    keys = [str(k) for k in raw]
    strip = "module." if keys and all(k.startswith("module.") for k in keys) else ""
    return {str(k)[len(strip) :]: _to_numpy(v, str(k)) for k, v in raw.items()}


# ------------------------------------------------------------------------ architecture


def infer_torch_resnet(source: Any, *, num_classes: int | None = None) -> ResNet:
    """The jaxcnn :class:`ResNet` whose variables match a torchvision ResNet state dict.

    Blocks per stage come from the ``layer{i}.{j}`` keys, the block type from ``conv3``
    (Bottleneck) keys, ``width`` from ``conv1.weight``'s output channels, ``small_input`` from a
    3x3 stem, and ``num_classes`` (unless given) from ``fc.weight``'s rows.

    Args:
      source: anything :func:`read_state_dict` accepts.
      num_classes: overrides the checkpoint's class count (the ``fc`` layer then mismatches).
    """
    op = "infer_torch_resnet"
    sd = read_state_dict(source)
    blocks: dict[int, int] = {}
    bottleneck = False
    for key in sd:
        m = _KEY.match(key)
        if m and m["stage"] is not None:
            stage, block = int(m["stage"]), int(m["block"])
            blocks[stage] = max(blocks.get(stage, 0), block + 1)
            bottleneck |= m["sub"] == "conv3"
    if sorted(blocks) != list(range(1, len(blocks) + 1)) or not blocks:
        raise ValueError(
            f"{op}: expected layer1, layer2, ... keys of a torchvision ResNet, found stages "
            f"{_listed(sorted(blocks))}"
        )
    _check_known_depth(blocks, sd, op)
    stem = sd.get("conv1.weight")
    if stem is None or stem.ndim != 4:
        raise ValueError(f"{op}: the state dict has no 4-D 'conv1.weight'; is it a torchvision ResNet?")
    fc = sd.get("fc.weight")
    if num_classes is None:
        if fc is None or fc.ndim != 2:
            raise ValueError(f"{op}: the state dict has no 2-D 'fc.weight'; pass num_classes")
        num_classes = int(fc.shape[0])
    _check_num_classes(num_classes, op)
    return ResNet(
        stage_sizes=tuple(blocks[i] for i in sorted(blocks)),
        block=Bottleneck if bottleneck else BasicBlock,
        num_classes=num_classes,
        width=int(stem.shape[0]),
        small_input=tuple(stem.shape[2:]) == (3, 3),
    )


def _listed(items: list, limit: int = _MAX_LISTED) -> str:
    shown = ", ".join(map(str, items[:limit]))
    return f"[{shown}{f', ... {len(items) - limit} more' if len(items) > limit else ''}]"


def _check_known_depth(blocks: dict[int, int], sd: Mapping[str, Any], op: str) -> None:
    """Refuses more stages, or more blocks in a stage, than ResNet-18/34/50/101/152 have."""
    if len(blocks) > len(_MAX_BLOCKS):
        raise ValueError(
            f"{op}: the state dict has {len(blocks)} stages (layer1 ... layer{len(blocks)}); the known "
            f"ResNets ({', '.join(map(str, _DEPTHS))}) have {len(_MAX_BLOCKS)}"
        )
    for stage, count in sorted(blocks.items()):
        if count > _MAX_BLOCKS[stage - 1]:
            example = next(k for k in sd if k.startswith(f"layer{stage}.{count - 1}."))
            raise ValueError(
                f"{op}: the state dict has {count} blocks in layer{stage} (key {example!r}); the known "
                f"ResNets ({', '.join(map(str, _DEPTHS))}) have at most {_MAX_BLOCKS[stage - 1]} there"
            )


def _check_num_classes(num_classes: Any, op: str) -> None:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"{op}: num_classes must be a positive int, got {num_classes!r}")


def _resolve_model(model: Any, sd: dict[str, np.ndarray], num_classes: int | None) -> ResNet:
    op = "load_torch_resnet"
    if num_classes is not None:
        _check_num_classes(num_classes, op)
    if isinstance(model, ResNet):
        if num_classes is not None and num_classes != model.num_classes:
            raise ValueError(
                f"{op}: num_classes={num_classes} disagrees with model.num_classes={model.num_classes}"
            )
        return model
    if model is None:
        return infer_torch_resnet(sd, num_classes=num_classes)
    depth = model
    if isinstance(model, str):
        m = re.fullmatch(r"resnet-?(\d+)", model.strip().lower())
        depth = int(m[1]) if m else model
    if isinstance(depth, bool) or not isinstance(depth, int) or depth not in _DEPTHS:
        raise ValueError(
            f"{op}: model must be a jaxcnn ResNet, a depth in {sorted(_DEPTHS)} or a name such as "
            f"'resnet50', or None, got {model!r}"
        )
    stages, block = _DEPTHS[depth]
    stem = sd.get("conv1.weight")
    width = int(stem.shape[0]) if stem is not None and stem.ndim == 4 else 64
    small = stem is not None and stem.ndim == 4 and tuple(stem.shape[2:]) == (3, 3)
    if num_classes is None:
        fc = sd.get("fc.weight")
        num_classes = int(fc.shape[0]) if fc is not None and fc.ndim == 2 else 1000
    return ResNet(stage_sizes=stages, block=block, num_classes=num_classes, width=width, small_input=small)


# ------------------------------------------------------------------------------ mapping


def _target(key: str) -> tuple[str, tuple[str, ...]] | None:
    """``(kind, jaxcnn module path)`` for a torchvision key, or None if it is not one.

    ``"layer2.0.downsample.1.running_mean"`` -> ``("running_mean", ("layer2_0", "downsample_bn"))``.
    """
    m = _KEY.match(key)
    if m is None:
        return None
    if m["stage"] is None:
        path: tuple[str, ...] = (m["module"],)
    else:
        sub = {"downsample.0": "downsample_conv", "downsample.1": "downsample_bn"}.get(m["sub"], m["sub"])
        path = (f"layer{m['stage']}_{m['block']}", sub)
    return m["kind"], path


def _convert(kind: str, array: np.ndarray) -> tuple[str, str, np.ndarray] | None:
    """(collection, leaf name, array in jaxcnn layout) for one tensor; None if not mappable."""
    if kind == "weight":
        if array.ndim == 4:  # conv (O, I, kh, kw) -> (kh, kw, I, O)
            return "params", "kernel", np.transpose(array, (2, 3, 1, 0))
        if array.ndim == 2:  # linear (out, in) -> (in, out)
            return "params", "kernel", array.T
        if array.ndim == 1:  # batch norm
            return "params", "scale", array
        return None
    if kind == "bias":
        return "params", "bias", array
    if kind == "running_mean":
        return "batch_stats", "mean", array
    if kind == "running_var":
        return "batch_stats", "var", array
    return None


def _flatten(tree: Mapping, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    out = {}
    for k, v in tree.items():
        if isinstance(v, Mapping):
            out.update(_flatten(v, (*prefix, k)))
        else:
            out[(*prefix, k)] = v
    return out


def _unflatten(flat: Mapping[tuple[str, ...], Any]) -> dict:
    tree: dict = {}
    for path, v in flat.items():
        node = tree
        for k in path[:-1]:
            node = node.setdefault(k, {})
        node[path[-1]] = v
    return tree


def load_torch_resnet(
    source: Any,
    model: Any = None,
    *,
    num_classes: int | None = None,
    strict: bool = True,
    key: jax.Array | None = None,
) -> dict:
    """Maps a torchvision ResNet state dict onto a jaxcnn ResNet's variables.

    Args:
      source: a ``.safetensors`` path, a PyTorch ``.pth``/``.pt`` path (read with
        ``torch.load(weights_only=True)``, never a full unpickle) or a mapping of arrays.
      model: the target, a :class:`jaxcnn.models.ResNet`; or a depth (18, 34, 50, 101, 152)
        or name (``"resnet50"``), whose width, stem and classes are read from the checkpoint;
        or None to infer everything (:func:`infer_torch_resnet`).
      num_classes: the classes of a model built from a depth/name/None (default: the
        checkpoint's); with a ResNet instance it must agree with ``model.num_classes``.
      strict: True raises unless every model variable is loaded from a tensor of the right
        shape and every tensor is used. False loads what matches in name and shape and takes
        the rest from ``model.init(key, ...)`` (e.g. a new ``fc`` head for fine-tuning).
      key: PRNG key for those fresh variables (``strict=False`` only); default ``key(0)``.

    Returns:
      ``{"params": ..., "batch_stats": ...}`` for ``model.apply(variables, x_nhwc, train=False)``,
      in the model's parameter dtypes (float32).

    Raises:
      ValueError: listing the unknown keys, missing variables and shape mismatches (strict;
        at most 20 of each kind, then a count); a tensor of a non-floating dtype (int, bool,
        complex) or with NaN/Inf values, named by its key (always, strict or not); a state
        dict with more stages or blocks than ResNet-152 (before anything is built); a
        refused, truncated or unknown file (named).

    The arrays returned are copies: updating the torch model in place afterwards leaves them
    unchanged.
    """
    op = "load_torch_resnet"
    if not isinstance(strict, bool):
        raise TypeError(f"{op}: strict must be a bool, got {strict!r}")
    sd = read_state_dict(source)
    model = _resolve_model(model, sd, num_classes)
    stem = sd.get("conv1.weight")
    channels = int(stem.shape[1]) if stem is not None and stem.ndim == 4 else 3
    dummy = jnp.zeros((1, 32, 32, channels), jnp.float32)
    expected = _flatten(jax.eval_shape(lambda: model.init(jax.random.key(0), dummy, train=False)))

    loaded: dict[tuple[str, ...], np.ndarray] = {}
    unknown, mismatched, reported_paths, refused = [], [], set(), []
    for name, array in sd.items():
        target = _target(name)
        if target is not None and target[0] == "num_batches_tracked":
            continue
        converted = None if target is None else _convert(target[0], array)
        if converted is None:
            unknown.append(f"{name} {tuple(array.shape)}")
            continue
        collection, leaf, value = converted
        path = (collection, *target[1], leaf)
        if not np.issubdtype(array.dtype, np.floating):
            refused.append(f"{name}: dtype {array.dtype}, expected a floating dtype")
            reported_paths.add(path)
            continue
        if not np.isfinite(array).all():
            bad = int(array.size - np.isfinite(array).sum())
            refused.append(f"{name}: {bad} non-finite value(s) (NaN or Inf) of {array.size}")
            reported_paths.add(path)
            continue
        if path not in expected:
            unknown.append(f"{name} {tuple(array.shape)} (model has no {'/'.join(path)})")
            continue
        want = expected[path]
        if tuple(value.shape) != tuple(want.shape):
            mismatched.append(
                f"{name}: checkpoint {tuple(array.shape)} -> {tuple(value.shape)}, model "
                f"{'/'.join(path)} {tuple(want.shape)}"
            )
            reported_paths.add(path)
            continue
        loaded[path] = value
    missing = [
        "/".join(p) + f" {tuple(v.shape)}"
        for p, v in expected.items()
        if p not in loaded and p not in reported_paths
    ]
    problems = [
        (f"{len(refused)} tensor(s) refused", refused),
        (f"{len(unknown)} unknown key(s)", unknown),
        (f"{len(missing)} missing variable(s)", missing),
        (f"{len(mismatched)} shape mismatch(es)", mismatched),
    ]
    # Wrong dtypes and non-finite weights are refused even when strict=False: loaded, they would
    # be cast silently (int, bool, the real part of complex) or poison every output.
    if refused or (strict and (unknown or missing or mismatched)):
        depth = _depth_name(model)
        lines = [f"{op}: the state dict does not match {depth}:"]
        for title, items in problems:
            if items:
                lines.append(f"  {title}:")
                lines.extend(f"    {item}" for item in items[:_MAX_LISTED])
                if len(items) > _MAX_LISTED:
                    lines.append(f"    ... and {len(items) - _MAX_LISTED} more")
        raise ValueError("\n".join(lines))

    out = {path: jnp.asarray(value, dtype=expected[path].dtype) for path, value in loaded.items()}
    if len(out) < len(expected):
        # Applying with mutable variables runs the initialisers of just the absent ones.
        def complete(variables, key):
            return model.apply(variables, dummy, train=False, rngs={"params": key}, mutable=True)[1]

        fresh = _flatten(jax.jit(complete)(_unflatten(out), jax.random.key(0) if key is None else key))
        out = {path: fresh[path] for path in expected}
    return _unflatten(out)


def _depth_name(model: ResNet) -> str:
    per_block = 3 if model.block is Bottleneck else 2
    depth = per_block * sum(model.stage_sizes) + 2
    return (
        f"the jaxcnn ResNet-{depth} ({model.block.__name__}, stages {tuple(model.stage_sizes)}, "
        f"width {model.width}, num_classes {model.num_classes}, small_input {model.small_input})"
    )
