#!/usr/bin/env bash
# The Python packages the GPU machine (Python 3.12, CUDA torch, no rasterio) lacks for a device
# script, for `bench/gpu_payload.sh check|train`, which calls this when the bundle is missing; run
# here, with the package registries reachable:
#
#   bash bench/gpu_wheels.sh [check|train]   # -> .gpu/check/site.tar.xz or .gpu/train/site.tar.xz (git-ignored)
#
# check (gpu_check.sh, the survey engine): rasterio and its small dependencies, pyproj, pydantic,
# zstandard, isal, platformdirs, blake3; train (gpu_train.sh on photos): pydantic alone. The image has numpy,
# scipy, scikit-image, Pillow, pyyaml, rich, typer, safetensors, tifffile, click, attrs and certifi
# (see the device notes). At the versions the CI pins (constraints.txt), without their dependencies;
# the wheels (check: 52 MB) are unpacked and the tree xz-compressed (check: ~35 MB), so that with its
# view of the checkout it stays under the 64 MiB a device call may send. The device script unpacks
# it into /tmp/site when the packages are missing there.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
KIND=${1:-check}
PYDANTIC="pydantic pydantic-core annotated-types typing-inspection"
case "$KIND" in
  check) PACKAGES="rasterio affine cligj click-plugins pyproj $PYDANTIC zstandard isal platformdirs blake3" ;;
  train) PACKAGES=$PYDANTIC ;;
  *) echo "usage: bash bench/gpu_wheels.sh [check|train]" >&2; exit 2 ;;
esac
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# shellcheck disable=SC2086
"$PY" -m pip download -q --no-deps --dest "$work/wheels" --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -c constraints.txt $PACKAGES
mkdir -p "$work/site" ".gpu/$KIND"
for wheel in "$work"/wheels/*.whl; do unzip -q -o "$wheel" -d "$work/site"; done  # a wheel is a zip of its site tree
bundle=".gpu/$KIND/site.tar.xz"
tar -C "$work" -cf - site | xz -9 -T0 > "$bundle.partial"
mv "$bundle.partial" "$bundle"
echo "gpu_wheels: $(ls "$work/wheels" | wc -l) wheels -> $bundle ($(du -h "$bundle" | cut -f1)); carry [\".gpu/$KIND\"]"
