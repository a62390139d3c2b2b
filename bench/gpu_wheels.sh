#!/usr/bin/env bash
# Wheels for bench/gpu_check.sh on the GPU machine (Python 3.12, CUDA torch, no rasterio): run here,
# with the package registries reachable, then carry `.whl` (git-ignored) with the device call:
#
#   bash bench/gpu_wheels.sh            # -> .whl/*.whl for CPython 3.12 on x86-64 Linux
#
# What the survey engine needs that the GPU image lacks (its package list: numpy, scipy, pyyaml,
# rich, typer, safetensors, tifffile, psutil, click, attrs are there; see the device notes), at the
# versions the CI pins (constraints.txt), without their dependencies: the carried tree must stay
# under 64 MiB. gpu_check.sh installs them into /tmp/site when rasterio is missing there.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
PACKAGES="rasterio affine cligj click-plugins pyproj pydantic pydantic-core annotated-types typing-inspection zstandard isal platformdirs"
rm -rf .whl && mkdir -p .whl
# shellcheck disable=SC2086
"$PY" -m pip download -q --no-deps --dest .whl --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -c constraints.txt $PACKAGES
echo "gpu_wheels: $(ls .whl | wc -l) wheels in .whl ($(du -sh .whl | cut -f1)); carry [\".whl\"]"
