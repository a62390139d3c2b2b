#!/usr/bin/env bash
# The first thing to run on a GPU machine (one command, <= 8 minutes): the shipped model's survey
# throughput on a 16384² JPEG-tiled raster (model-only, survey, naive), the engine alone with a null
# network on 4, 8 and 16 CPU cores, and the network's forward speed (fp32 / bf16 / channels_last /
# compile, with the share of the chip's bf16 peak). Numbers go to JSON files in OUT_DIR for the README's GPU table.
#
#   bash bench/gpu_check.sh [OUT_DIR]          # on the GPU machine (default OUT_DIR: $OUT or bench-out)
#   bash bench/gpu_check.sh --dry [OUT_DIR]    # the same steps on CPU with a tiny raster (the test suite)
#
# A machine without rasterio: `bash bench/gpu_payload.sh check` here first (the check's view of the
# checkout and .gpu/check/site.tar.xz, the packages it lacks), carry [".gpu/check"]; they are unpacked
# into /tmp/site.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/gpu_env.sh check rasterio "$@"  # DRY, OUT_DIR, PY; the bundle unpacked if needed
MODEL=pipeline/assets/msaf-dsnet.safetensors
if [ "$DRY" = 1 ]; then
  SIZE=256 DEVICE=cpu BATCH=2 ENGINE_SIZE=256 ENGINE_BLOCK=4096 CORES="1" MODES="model survey"
else
  # the engine: 16 blocks of 2048² so that 16 cores have a block each
  SIZE=16384 DEVICE=cuda BATCH=16 ENGINE_SIZE=8192 ENGINE_BLOCK=2048 CORES="4 8 16" MODES="model survey naive"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT_DIR/gpu.txt"
fi
# shellcheck disable=SC2086
"$PY" bench/survey_throughput.py --model "$MODEL" --sizes $SIZE --batch $BATCH --device $DEVICE --modes $MODES \
  --workdir "$OUT_DIR/rasters" --out "$OUT_DIR/survey_throughput.json"
# shellcheck disable=SC2086
"$PY" bench/engine_throughput.py --model "$MODEL" --size $ENGINE_SIZE --block $ENGINE_BLOCK --cores $CORES \
  --workdir "$OUT_DIR/rasters" \
  --out "$OUT_DIR/engine_throughput.json"
# the shipped network's forward alone: Mpix/s, TFLOP/s and the share of the GPU's bf16 peak
if [ "$DRY" = 1 ]; then
  "$PY" bench/model_speed.py --model "$MODEL" --tile 64 --batch 1 --seconds 0.1 --out "$OUT_DIR/model_speed.json"
else
  for TILE in 256 1024; do  # the survey's tile, and the larger tile the GPU issue proposes
    "$PY" bench/model_speed.py --model "$MODEL" --cuda-only --tile $TILE --batch $((16777216 / (TILE * TILE))) --seconds 2 \
      --out "$OUT_DIR/model_speed_$TILE.json"
  done
fi
rm -rf "$OUT_DIR/rasters"
echo "gpu_check: results in $OUT_DIR"
