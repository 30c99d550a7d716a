"""Test-wide JAX settings: fail loudly on silent dtype promotion and rank broadcasting."""

import os

import jax
import pytest

jax.config.update("jax_numpy_dtype_promotion", "strict")
jax.config.update("jax_numpy_rank_promotion", "raise")


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
