#!/usr/bin/env bash
# Training on a GPU machine, in what is left of a lease after gpu_check.sh: the repository's recipe
# (params.yaml: its data, loss, augmentation and teacher) continued on CUDA in bf16 from the shipped
# model for EPOCHS x STEPS steps of BATCH crops; the trainer validates every epoch and keeps the
# best (EMA) weights, which are then evaluated on the validation photos. The candidate (14 MB), its
# history and its numbers come back in OUT_DIR; a person decides whether it ships (`msaf models`).
#
#   bash bench/gpu_payload.sh train        # here: the training view and .gpu/train (pydantic)
#   # device run: carry [".gpu/train"], command: bash bench/gpu_train.sh $OUT   (timeout_s ~540)
#   bash bench/gpu_payload.sh restore
#   bash bench/gpu_train.sh --dry OUT_DIR  # the same steps on CPU, two small steps (the test suite)
#
# EPOCHS, STEPS, BATCH set the schedule (default 3 x 400 x 16 crops); SETS adds params overrides,
# e.g. SETS="train.loss.dice_fp_share=0.75 train.lr=0.0003". TRAIN_SECONDS (default 420) limits the
# training: one cut short exits 3 and keeps its state (saved every minute) in .gpu/train-run, inside
# the checkout but ignored, which a warm machine keeps between calls: the same command continues it.
# The GPU image has torch, numpy, scipy, scikit-image, Pillow, pyyaml, safetensors, typer and rich;
# the trainer imports rasterio, pyproj and shapely only for label sets, so the photos train without them.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/gpu_env.sh train pydantic "$@"  # DRY, OUT_DIR, PY; the bundle unpacked if needed
export SOURCE_DATE_EPOCH=0
if [ "$DRY" = 1 ]; then
  DEVICE=cpu PRECISION=fp32 EPOCHS=1 STEPS=2 BATCH=2 CROP=64 TRAIN_SECONDS=${TRAIN_SECONDS:-600}
else
  DEVICE=cuda PRECISION=bf16 EPOCHS=${EPOCHS:-3} STEPS=${STEPS:-400} BATCH=${BATCH:-16} CROP=256
  TRAIN_SECONDS=${TRAIN_SECONDS:-420}
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT_DIR/gpu.txt"
fi
MSAF=("$PY" -c "import sys; from flows.cli import main; sys.argv[0] = 'msaf'; main()")
msaf() { "${MSAF[@]}" "$@"; }
RUN_DIR=.gpu/train-run  # the candidate and the resumable state until the run ends (ignored by git)
mkdir -p "$RUN_DIR"
# the photos where params.yaml expects them: what `make data` copies (DVC is not needed here)
for set in crackforest uav75 masonry; do
  if [ ! -d "data/raw/$set/images" ]; then
    mkdir -p "data/raw/$set"
    cp -r --no-preserve=mode "data/sources/$set/images" "data/sources/$set/masks" "data/raw/$set/"
  fi
done
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
msaf prepare --params params.yaml --out "$work/manifest.json"
if [ "$DRY" = 1 ]; then  # dry: two validation photos per set (all 76 took ~20 s per pass on 2 cores, twice)
  "$PY" -c 'import json, sys
manifest = json.load(open(sys.argv[1]))
for photos in manifest["sets"]:
    photos["val"] = photos["val"][:2]
json.dump(manifest, open(sys.argv[1], "w"))' "$work/manifest.json"
fi
extra=()
# dry: no calibration for views 1,2 (a pass over every validation photo at 5x the pixels, 3-4 min on
# 2 cores; the trainer's own tests cover it)
if [ "$DRY" = 1 ]; then extra+=(--set "train.calibrate_scales=[]"); fi
for item in ${SETS:-}; do extra+=(--set "$item"); done
started=$(date +%s)
set +e
timeout "$TRAIN_SECONDS" "${MSAF[@]}" train --params params.yaml --manifest "$work/manifest.json" --no-track \
  --set train.device=$DEVICE --set train.precision=$PRECISION --set train.init=pipeline/assets/msaf-dsnet.safetensors \
  --set train.epochs="$EPOCHS" --set train.steps_per_epoch="$STEPS" --set train.batch_size="$BATCH" \
  --set train.crop_size=$CROP --set train.state_minutes=1 "${extra[@]}" \
  --out "$RUN_DIR/candidate.safetensors" --history "$RUN_DIR/history.csv" 2>&1 | tee "$OUT_DIR/train.log"
status=${PIPESTATUS[0]}
set -e
finished=$([ "$status" = 0 ] && echo true || echo false)
echo "{\"device\": \"$DEVICE\", \"precision\": \"$PRECISION\", \"epochs\": $EPOCHS, \"steps_per_epoch\": $STEPS," \
  "\"batch_size\": $BATCH, \"crop_size\": $CROP, \"train_seconds\": $(( $(date +%s) - started ))," \
  "\"finished\": $finished}" > "$OUT_DIR/schedule.json"
if [ "$status" = 124 ]; then
  echo "gpu_train: training stopped at its limit (TRAIN_SECONDS=$TRAIN_SECONDS); its state is kept in $RUN_DIR:" \
    "run the same command again on this machine while it is warm to continue"
  exit 3
fi
[ "$status" = 0 ] || exit "$status"
mv "$RUN_DIR/candidate.safetensors" "$RUN_DIR/history.csv" "$OUT_DIR/"
msaf evaluate --model "$OUT_DIR/candidate.safetensors" --manifest "$work/manifest.json" --split val --tolerance 2 \
  --device $DEVICE --out "$OUT_DIR/eval.json"
echo "gpu_train: results in $OUT_DIR"
