"""Test-wide JAX settings: fail loudly on silent dtype promotion and rank broadcasting.

``JAXCNN_TEST_TORCH_DEVICE`` (e.g. ``cuda``) runs the PyTorch references of the parity tests
on that device: new tensors and modules are created there, ``torch.from_numpy`` copies there
and ``Tensor.numpy()`` reads back to the host, so the tests need no change; TF32 is off, so
the references keep float32 accuracy. Unset: PyTorch on the CPU, as in CI.
"""

import os

import jax
import pytest

jax.config.update("jax_numpy_dtype_promotion", "strict")
jax.config.update("jax_numpy_rank_promotion", "raise")


def _torch_references_on(device: str) -> None:
    import torch

    torch.set_default_device(device)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    from_numpy, to_numpy = torch.from_numpy, torch.Tensor.numpy

    def from_numpy_on_device(array):
        return from_numpy(array).to(device)

    def numpy_from_device(self, *args, **kwargs):
        return to_numpy(self.cpu() if self.device.type != "cpu" else self, *args, **kwargs)

    torch.from_numpy = from_numpy_on_device
    torch.Tensor.numpy = numpy_from_device


if os.environ.get("JAXCNN_TEST_TORCH_DEVICE"):
    _torch_references_on(os.environ["JAXCNN_TEST_TORCH_DEVICE"])


@pytest.fixture(scope="session")
def data_dir():
    """The folder holding mnist/ and fashion_mnist/ IDX files (``JAXCNN_DATA_DIR``)."""
    path = os.environ.get("JAXCNN_DATA_DIR")
    if not path or not os.path.isdir(path):
        pytest.skip("JAXCNN_DATA_DIR is not set to a folder with the MNIST IDX files")
    return path


@pytest.fixture(autouse=True)
def _cpu_kernels_off_between_tests():
    """``train_and_evaluate`` switches the CPU kernels on for its process; no test inherits that."""
    yield
    from jaxcnn.functional import _backend

    _backend.set_process_default(None)
