"""Former home of the host allocator setting, now :mod:`jaxcnn.backends.cpu.host_memory`."""

from jaxcnn.backends.cpu.host_memory import CHOICES, ENV_VAR, keep_freed_memory, state

__all__ = ["CHOICES", "ENV_VAR", "keep_freed_memory", "state"]
