#!/usr/bin/env bash
# shellcheck disable=SC2086  # the whole file: the size and core lists are meant to split into words
# The first thing to run on a GPU machine (one command, <= 10 minutes: each step has a time limit): the
# shipped model's survey throughput on a 16384² JPEG-tiled raster (model-only, survey cold and warm, naive, and
# with views 1,2), the
# engine alone with a null network on 4, 8 and 16 CPU cores, and the network's forward speed (fp32 /
# bf16 / channels_last / compile, with the share of the chip's bf16 peak). Numbers go to JSON files in
# OUT_DIR for the README's GPU table, each step's output to NAME.log beside them.
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
  SIZE=128 DEVICE=cpu BATCH=2 ENGINE_SIZE=128 ENGINE_BLOCK=4096 CORES="1"
else
  # the engine: 16 blocks of 2048² so that 16 cores have a block each
  SIZE=16384 DEVICE=cuda BATCH=16 ENGINE_SIZE=8192 ENGINE_BLOCK=2048 CORES="4 8 16"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT_DIR/gpu.txt" || true
fi

# Each step has a time limit and its own log in OUT_DIR; one that fails or runs out of time is named at
# the end and the next still runs: a GPU session is short and rare, and code that never ran on CUDA
# may fail there in one place only. The most wanted numbers come first, the slow naive survey last.
FAILED=()
step() {  # NAME SECONDS COMMAND... (dry: 300 s each, for a busy test machine)
  local name=$1 seconds=$2
  if [ "$DRY" = 1 ]; then seconds=300; fi
  shift 2
  echo "gpu_check: $name (at most ${seconds} s)"
  if ! timeout "$seconds" "$@" 2>&1 | tee "$OUT_DIR/$name.log"; then
    FAILED+=("$name")
    echo "gpu_check: $name failed or ran out of time; its log: $OUT_DIR/$name.log"
  fi
}

step survey 180 "$PY" bench/survey_throughput.py --model "$MODEL" --sizes $SIZE --batch $BATCH --device $DEVICE \
  --modes model survey --warm --workdir "$OUT_DIR/rasters" --out "$OUT_DIR/survey_throughput.json"
step engine 120 "$PY" bench/engine_throughput.py --model "$MODEL" --size $ENGINE_SIZE --block $ENGINE_BLOCK \
  --cores $CORES --workdir "$OUT_DIR/rasters" --out "$OUT_DIR/engine_throughput.json"
# the shipped network's forward alone: Mpix/s, TFLOP/s and the share of the GPU's bf16 peak
if [ "$DRY" = 1 ]; then
  step model_speed 60 "$PY" bench/model_speed.py --model "$MODEL" --tile 64 --batch 1 --seconds 0.1 \
    --out "$OUT_DIR/model_speed.json"
else
  for TILE in 256 1024; do  # the survey's tile, and the larger tile the GPU issue proposes
    step "model_speed_$TILE" 60 "$PY" bench/model_speed.py --model "$MODEL" --cuda-only --tile $TILE \
      --batch $((16777216 / (TILE * TILE))) --seconds 2 --out "$OUT_DIR/model_speed_$TILE.json"
  done
fi
# multi-scale surveys (--scales 1,2: each tile also enlarged 2x): model-only and survey at 5x the network's work
step survey_views 100 "$PY" bench/survey_throughput.py --model "$MODEL" --sizes $SIZE --batch $BATCH --device $DEVICE \
  --modes model survey --scales 1,2 --workdir "$OUT_DIR/rasters" --out "$OUT_DIR/survey_views.json"
step naive 60 "$PY" bench/survey_throughput.py --model "$MODEL" --sizes $SIZE --batch $BATCH --device $DEVICE \
  --modes naive --workdir "$OUT_DIR/rasters" --out "$OUT_DIR/survey_naive.json"
rm -rf "$OUT_DIR/rasters"
if [ ${#FAILED[@]} -gt 0 ]; then
  echo "gpu_check: failed: ${FAILED[*]} (the other steps' numbers are in $OUT_DIR)"
  exit 1
fi
echo "gpu_check: results in $OUT_DIR"
