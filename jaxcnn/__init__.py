"""jaxcnn: convolutional neural networks in JAX.

Layers of the package, each importing only those to its left:
``functional`` (pure ops, plain ``lax``, jax and numpy only) -> ``nn`` (Flax modules) ->
``models`` (zoo) -> ``train`` (steps, loop, checkpoints); ``kernels`` and ``shapes`` sit beside
``functional``; ``backends.cpu`` holds the CPU kernels, XLA options and host settings, switched
on explicitly; ``data`` stands alone. Importing jaxcnn changes no global JAX or XLA setting and
loads Flax only when a name that needs it (``summary``) is used.
"""

from importlib import metadata as _metadata

try:
    # The version lives in pyproject.toml only; an installed (or editable) jaxcnn reports it.
    __version__ = _metadata.version("jaxcnn")
except _metadata.PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

from jaxcnn import functional, kernels, shapes

__all__ = ["compiler_options", "functional", "kernels", "shapes", "summary", "__version__"]


def __getattr__(name: str):
    # summary imports Flax and compiler_options the CPU backend; importing jaxcnn.functional
    # must load neither.
    if name == "summary":
        from jaxcnn.summary import summary

        return summary
    if name == "compiler_options":
        from jaxcnn.backends.cpu.options import compiler_options

        return compiler_options
    raise AttributeError(f"module 'jaxcnn' has no attribute {name!r}")
