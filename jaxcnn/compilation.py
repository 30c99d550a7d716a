"""Former home of the XLA:CPU options, now :mod:`jaxcnn.backends.cpu.options` (same names)."""

from jaxcnn.backends.cpu.options import CHOICES, CPU_OPTIONS, ENV_VAR, compiler_options, jit, resolve_choice

__all__ = ["CHOICES", "CPU_OPTIONS", "ENV_VAR", "compiler_options", "jit", "resolve_choice"]
