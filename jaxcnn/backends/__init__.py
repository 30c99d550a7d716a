"""Platform-specific kernels, switched on explicitly; see :mod:`jaxcnn.backends.cpu`.

Without a backend switched on, every op of :mod:`jaxcnn.functional` is its plain ``lax``
program on every platform.
"""
