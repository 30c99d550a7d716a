#!/usr/bin/env bash
# Downloads, into .whl/ at the repository root, the wheels of the packages that jaxcnn needs
# and that the GPU machines' image ('cuda': Python 3.12, JAX 0.11.2 with CUDA, Flax, optax,
# orbax-checkpoint, chex, PyTorch 2.11; /work/.library/device/KINDS.md lists it) lacks.
# That machine reaches no package registry: the wheels travel with the working tree (carry
# .whl) and are unpacked there with
#
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
#       --target /tmp/site .whl/*.whl && export PYTHONPATH=$PWD:/tmp/site
#
# (docs/accelerators.md has the whole command). Usage, from anywhere:
#
#   experiments/accelerator/fetch_wheels.sh            # what `python -m experiments.accelerator` needs
#   experiments/accelerator/fetch_wheels.sh --tfds     # also tensorflow-datasets and its needs
#
# The list is pyproject.toml's dependencies minus the image's packages, plus their own
# Requires-Dist minus the image's; versions are the ones tested on the CPU machines. After the
# download, every wheel's Requires-Dist is checked against the image's list and .whl/ (a
# missing need is an error), and the total size is printed: it must stay well under the
# 64 MiB that a working tree may carry, with the Fashion-MNIST files (30 MB) beside it.
# .whl/ is git-ignored; never commit wheels.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
DEST="$ROOT/.whl"
PYTHON_VERSION="3.12"  # the image's python3 (3.12.3)

# Needed by `import jaxcnn`, `jaxcnn train` and the tests that the command runs.
RUN_WHEELS=(
  "grain==0.2.18"            # jaxcnn.data.pipeline
  "array-record==0.8.6"      # grain
  "portpicker==1.6.0"        # grain
  "ml-collections==1.1.0"    # configs
  "tensorboardX==2.6.5"      # the loop's TensorBoard events
  "importlib-resources==6.5.2"  # etils[epath], which grain and array-record use
)
# Only for tfds datasets (jaxcnn.data.tfds_source imports it lazily; MNIST-family runs read IDX files).
TFDS_WHEELS=(
  "tensorflow-datasets==4.9.10"
  "dm-tree==0.1.10"
  "immutabledict==4.3.1"
  "simple-parsing==0.1.9"
  "docstring-parser==0.18.0"
  "tensorflow-metadata==1.21.0"
  "googleapis-common-protos==1.72.0"
  "termcolor==3.3.0"
  "toml==0.10.2"
)
# Published as a source archive only: built here into a pure-Python wheel.
TFDS_SDISTS=("promise==2.3")

wheels=("${RUN_WHEELS[@]}")
sdists=()
if [[ "${1:-}" == "--tfds" ]]; then
  wheels+=("${TFDS_WHEELS[@]}")
  sdists+=("${TFDS_SDISTS[@]}")
elif [[ -n "${1:-}" ]]; then
  echo "usage: $0 [--tfds]" >&2
  exit 2
fi

# Start empty: wheels left from an earlier list would travel too (and two versions stop the install).
rm -rf "$DEST"
mkdir -p "$DEST"
# pip matches each manylinux tag exactly, hence the list.
platforms=()
for n in 39 35 34 31 28 27 24 17; do platforms+=(--platform "manylinux_2_${n}_x86_64"); done
platforms+=(--platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any)
# The machine-wide constraints file (if any) caps versions for this machine's Python, not the image's.
PIP_CONSTRAINT=/dev/null python3 -m pip download -q --no-deps --only-binary=:all: \
  --python-version "$PYTHON_VERSION" --implementation cp "${platforms[@]}" -d "$DEST" "${wheels[@]}"
for spec in "${sdists[@]}"; do
  PIP_CONSTRAINT=/dev/null python3 -m pip wheel -q --no-deps -w "$DEST" "$spec"
done

python3 "$ROOT/experiments/accelerator/check_wheels.py" "$DEST"
