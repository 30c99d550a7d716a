"""jaxcnn: convolutional neural networks in JAX.

Layers of the package, each importing only those to its left:
``functional`` (pure ops) -> ``nn`` (Flax modules) -> ``models`` (zoo) -> ``train`` (steps,
loop, checkpoints); ``kernels``, ``shapes`` and ``compilation`` sit beside ``functional``;
``data`` stands alone. Importing jaxcnn changes no global JAX or XLA setting: the XLA options
jaxcnn compiles its steps with are given per computation (:func:`compiler_options`).
"""

from importlib import metadata as _metadata

try:
    # The version lives in pyproject.toml only; an installed (or editable) jaxcnn reports it.
    __version__ = _metadata.version("jaxcnn")
except _metadata.PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

from jaxcnn import functional, kernels, shapes
from jaxcnn.compilation import compiler_options
from jaxcnn.summary import summary

__all__ = ["compiler_options", "functional", "kernels", "shapes", "summary", "__version__"]
