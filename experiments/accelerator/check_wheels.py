"""Checks a folder of wheels for the GPU machines' image: every need met, one version each, size.

    python experiments/accelerator/check_wheels.py .whl

Each wheel's ``Requires-Dist`` (markers evaluated for the image's Python 3.12 on Linux x86-64,
extras included where another wheel asks for them, e.g. ``etils[epath]``) must name a package
that the image has (:data:`IMAGE_PACKAGES`, from the machines' description of 2026-11-17) or a
wheel in the folder. Exits 1 naming what is missing or doubled; prints the total size.
"""

from __future__ import annotations

import re
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

IMAGE_PACKAGES = frozenset(canonicalize_name(n) for n in """
absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch build certifi
charset-normalizer chex click cloudpickle cmake colorama contourpy coverage cuda-bindings cuda-core
cuda-pathfinder cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn einops equinox etils execnet filelock
flatbuffers flax fonttools formulaic frozenlist fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx
huggingface-hub humanize hypothesis idna imageio iniconfig interface-meta jax jax-cuda13-pjrt
jax-cuda13-plugin jaxlib jaxtyping jinja2 joblib kiwisolver lazy-loader lightning lightning-utilities
linear-operator lineax llvmlite lxml markdown markdown-it-py markupsafe matplotlib mdurl meson ml-dtypes
mpi4py mpmath msgpack multidict multipledispatch mypy-extensions nanobind narwhals networkx ninja numba
numba-cuda numpy numpyro nvidia-cublas nvidia-cuda-cupti nvidia-cuda-nvrtc nvidia-cuda-runtime
nvidia-cudnn-cu13 nvidia-cufft nvidia-cufile nvidia-curand nvidia-cusolver nvidia-cusparse
nvidia-cusparselt-cu13 nvidia-ml-py nvidia-nccl-cu13 nvidia-nvjitlink nvidia-nvshmem-cu13 nvidia-nvtx onnx
onnx-ir onnxruntime onnxscript opencv-python-headless optax opt-einsum opt-einsum-fx optimistix
orbax-checkpoint packaging pandas pathspec patsy peft pillow pip pluggy portalocker prometheus-client
propcache protobuf psutil pyarrow pybind11 py-cpuinfo pygments pyparsing pyproject-hooks pyre-extensions
pytest pytest-benchmark pytest-cov pytest-mock pytest-timeout pytest-xdist python-dateutil
pytorch-lightning pyyaml regex requests rich sacrebleu safetensors scikit-build-core scikit-image
scikit-learn scipy seaborn sentencepiece sentence-transformers setuptools shellingham simplejson six
sortedcontainers statsmodels sympy tabulate tensorboard tensorboard-data-server tensorstore threadpoolctl
tifffile tiktoken timm tokenizers toolz torch torchaudio torchdiffeq torch-geometric torchmetrics
torchvision tqdm transformers treescope triton typer typing-extensions typing-inspect urllib3 uvloop
wadler-lindig werkzeug wheel wrapt xarray xxhash yarl zipp
""".split())

IMAGE_ENV = {"python_version": "3.12", "python_full_version": "3.12.3", "sys_platform": "linux",
             "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix",
             "implementation_name": "cpython", "platform_python_implementation": "CPython"}


def _metadata(wheel: Path):
    with zipfile.ZipFile(wheel) as z:
        name = next(n for n in z.namelist() if re.fullmatch(r"[^/]+\.dist-info/METADATA", n))
        return Parser().parsestr(z.read(name).decode())


def check(folder: Path) -> list[str]:
    """The problems found in ``folder`` (empty: every need is met)."""
    wheels = sorted(folder.glob("*.whl"))
    metas = {w: _metadata(w) for w in wheels}
    names: dict[str, list[str]] = {}
    for w, meta in metas.items():
        names.setdefault(canonicalize_name(meta["Name"]), []).append(w.name)
    problems = [f"two versions of {n}: {files}" for n, files in names.items() if len(files) > 1]
    # Extras that some requirement asks for, per package (etils[epath] -> etils: {epath}).
    requirements = [(meta["Name"], Requirement(r)) for meta in metas.values() for r in meta.get_all("Requires-Dist") or []]
    extras: dict[str, set[str]] = {}
    for _, req in requirements:
        extras.setdefault(canonicalize_name(req.name), set()).update(req.extras)
    for owner, req in requirements:
        wanted = extras.get(canonicalize_name(owner), set()) | {""}
        if req.marker is not None and not any(req.marker.evaluate({**IMAGE_ENV, "extra": e}) for e in wanted):
            continue
        name = canonicalize_name(req.name)
        if name not in IMAGE_PACKAGES and name not in names:
            problems.append(f"{owner} needs {req}, which neither the image nor {folder} has")
    return problems


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    folder = Path(argv[0])
    problems = check(folder)
    size = sum(w.stat().st_size for w in folder.glob("*.whl"))
    print(f"{len(list(folder.glob('*.whl')))} wheels in {folder}, {size / 2**20:.1f} MiB")
    for p in problems:
        print(f"missing: {p}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
