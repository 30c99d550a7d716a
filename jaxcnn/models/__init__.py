"""The model zoo: ready Flax linen models built from :mod:`jaxcnn.nn`.

All models: ``variables = model.init(key, x, train=False)`` and
``model.apply(variables, x, train=True, mutable=["batch_stats"], rngs={"dropout": key})``.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn

from jaxcnn.models.diffusion_unet import DiffusionUNet
from jaxcnn.models.resnet import (
    BasicBlock,
    Bottleneck,
    ResNet,
    ResNet18,
    ResNet34,
    ResNet50,
    ResNet101,
    ResNet152,
)
from jaxcnn.models.detection import RCNN, FasterRCNN, FastRCNN, detect, detection_loss
from jaxcnn.models.segmentation import FCN, UNet
from jaxcnn.models.simple_cnn import AllConvNet, LeNet5, SignalRegressor, SimpleCNN
from jaxcnn.models.torch_import import infer_torch_resnet, load_torch_resnet, read_state_dict

__all__ = [
    "BasicBlock",
    "Bottleneck",
    "ResNet",
    "ResNet18",
    "ResNet34",
    "ResNet50",
    "ResNet101",
    "ResNet152",
    "FCN",
    "UNet",
    "RCNN",
    "FastRCNN",
    "FasterRCNN",
    "detect",
    "detection_loss",
    "DiffusionUNet",
    "AllConvNet",
    "LeNet5",
    "SignalRegressor",
    "SimpleCNN",
    "infer_torch_resnet",
    "load_torch_resnet",
    "read_state_dict",
    "MODELS",
    "get_model",
]

MODELS = {
    "SimpleCNN": SimpleCNN,
    "LeNet5": LeNet5,
    "AllConvNet": AllConvNet,
    "ResNet18": ResNet18,
    "ResNet34": ResNet34,
    "ResNet50": ResNet50,
    "ResNet101": ResNet101,
    "ResNet152": ResNet152,
    "UNet": UNet,
    "FCN": FCN,
    "DiffusionUNet": DiffusionUNet,
    "SignalRegressor": SignalRegressor,
    "RCNN": RCNN,
    "FastRCNN": FastRCNN,
    "FasterRCNN": FasterRCNN,
}


def get_model(name: str, **kwargs: Any) -> nn.Module:
    """Builds a zoo model by name, e.g. ``get_model("ResNet18", num_classes=10, small_input=True)``.

    Args:
      name: a key of :data:`MODELS` (``"SimpleCNN"``, ``"LeNet5"``, ``"AllConvNet"``,
        ``"ResNet18"`` ... ``"ResNet152"``, ``"UNet"``, ``"FCN"``, ``"SignalRegressor"``, ``"RCNN"``,
        ``"FastRCNN"``, ``"FasterRCNN"``).
      **kwargs: the model's fields (``num_classes``, ``dtype`` ...).

    Returns:
      The model, an unbound Flax module (``model.init(key, x, train=False)``, then
      ``model.apply``).

    Raises:
      ValueError: an unknown ``name`` (the message lists the names).
      TypeError: a keyword the model does not take.
    """
    if name not in MODELS:
        raise ValueError(f"get_model: unknown model name={name!r}; expected one of {sorted(MODELS)}")
    try:
        return MODELS[name](**kwargs)
    except TypeError as err:
        raise TypeError(f"get_model: bad arguments for {name}: {err}") from err
