#!/usr/bin/env bash
# Ablation of the model issue's two changes on the budget of the release candidate: the
# candidate is `make repro` (params.yaml); each variant is the same training with one change
# undone (--set), so every row differs from the candidate in exactly one thing.
#   no-refine: without the full-resolution refinement branch (model.overrides={})
#   no-aug:    without the scale/blur/noise/JPEG augmentation
# Usage: bench/train_ablation.sh [variant ...]   (default: both); results in metrics/ablation/.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH" SOURCE_DATE_EPOCH=0 OMP_WAIT_POLICY=PASSIVE
mkdir -p metrics/ablation models/ablation
declare -A CHANGE=(
  [no-refine]="model.overrides={}"
  [no-aug]="train.augment.scale=[1.0,1.0] train.augment.blur=0 train.augment.noise=0 train.augment.jpeg=0"
)
variants=("$@")
[ ${#variants[@]} -gt 0 ] || variants=(no-refine no-aug)
for name in "${variants[@]}"; do
  sets=()
  for change in ${CHANGE[$name]}; do sets+=(--set "$change"); done
  msaf train --params params.yaml --manifest data/prepared/manifest.json --no-track "${sets[@]}" \
    --out "models/ablation/$name.safetensors" --history "metrics/ablation/$name.csv"
  msaf evaluate --model "models/ablation/$name.safetensors" --manifest data/prepared/manifest.json --split val \
    --tolerance 2 --device cpu --out "metrics/ablation/$name.json"
done
