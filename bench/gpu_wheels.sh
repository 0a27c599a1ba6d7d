#!/usr/bin/env bash
# Download, here (where PyPI can be reached), the wheels bench/gpu.sh installs on the GPU machine:
# what cnnctl needs that its image lacks (Python 3.12, JAX, PyTorch, NumPy, Pillow, PyYAML, Typer,
# matplotlib, h5py are there; TensorFlow is not and is not needed with KERAS_BACKEND=jax).
# The versions are the ones installed here, so the GPU runs the code tested here.
#
#   bash bench/gpu_wheels.sh [DIR]     # default .whl/ (git-ignored); about 8 MiB
# then carry .whl (and .data, a copy of ../shared/data) to the device and run bench/gpu.sh.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
dest=${1:-$repo/.whl}
python=${PYTHON:-python3}
mkdir -p "$dest"
for name in keras namex optree pydantic pydantic_core annotated_types typing_inspection; do
    version=$("$python" -c "import importlib.metadata as m; print(m.version('$name'))") \
        || { echo "bench/gpu_wheels.sh: $name is not installed here: pip install -e . first" >&2; exit 2; }
    "$python" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 -d "$dest" "$name==$version"
done
ls -la "$dest"
