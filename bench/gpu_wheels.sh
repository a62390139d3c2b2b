#!/usr/bin/env bash
# The Python packages bench/gpu_check.sh needs on the GPU machine (Python 3.12, CUDA torch, no
# rasterio), for `bench/gpu_payload.sh check`, which calls this when .gpu/site.tar.xz is missing; run
# here, with the package registries reachable:
#
#   bash bench/gpu_wheels.sh            # -> .gpu/site.tar.xz (git-ignored; carry [".gpu"])
#
# What the survey engine needs that the GPU image lacks (its package list: numpy, scipy, pyyaml,
# rich, typer, safetensors, tifffile, psutil, click, attrs are there; see the device notes), at the
# versions the CI pins (constraints.txt), without their dependencies. The wheels (52 MB) are unpacked
# and the tree xz-compressed (~36 MB): with the device view of the checkout (~20 MB) it stays under
# the 64 MiB a device call may send. gpu_check.sh unpacks it into /tmp/site when rasterio is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
PACKAGES="rasterio affine cligj click-plugins pyproj pydantic pydantic-core annotated-types typing-inspection zstandard isal platformdirs"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# shellcheck disable=SC2086
"$PY" -m pip download -q --no-deps --dest "$work/wheels" --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -c constraints.txt $PACKAGES
mkdir -p "$work/site" .gpu
for wheel in "$work"/wheels/*.whl; do unzip -q -o "$wheel" -d "$work/site"; done  # a wheel is a zip of its site tree
tar -C "$work" -cf - site | xz -9 -T0 > .gpu/site.tar.xz.partial
mv .gpu/site.tar.xz.partial .gpu/site.tar.xz
echo "gpu_wheels: $(ls "$work/wheels" | wc -l) wheels -> .gpu/site.tar.xz ($(du -h .gpu/site.tar.xz | cut -f1)); carry [\".gpu\"]"
