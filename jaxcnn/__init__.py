"""jaxcnn: convolutional neural networks in JAX.

Layers of the package, each importing only those to its left:
``functional`` (pure ops) -> ``nn`` (Flax modules) -> ``models`` (zoo) -> ``train`` (steps,
loop, checkpoints); ``kernels`` and ``shapes`` sit beside ``functional``; ``data`` stands
alone. Importing jaxcnn changes no global JAX or XLA setting.
"""

__version__ = "0.1.0"

from jaxcnn import functional, kernels, shapes
from jaxcnn.summary import summary

__all__ = ["functional", "kernels", "shapes", "summary", "__version__"]
