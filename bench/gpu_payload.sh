#!/usr/bin/env bash
# What a GPU session sends to the device machine must stay under its 64 MiB limit: tracked files,
# untracked files git does not ignore and the carried paths all count. This checkout's tracked files
# alone are ~73 MiB (three 14 MB training checkpoints, the shipped model, the training photos), and
# the wheels gpu_check.sh needs there are 52 MB more. So a session checks out a *device view* of its
# commit for a device call, and carries the packages the GPU image lacks, unpacked and xz-compressed:
#
#   bash bench/gpu_payload.sh check     # .gpu/check/site.tar.xz (~35 MB: rasterio, pyproj, ...) built if
#                                       # missing (needs the package registry), the check's view checked out
#   # device run: carry [".gpu/check"], command: bash bench/gpu_check.sh $OUT
#   bash bench/gpu_payload.sh train     # .gpu/train/site.tar.xz (pydantic), the training view
#   # device run: carry [".gpu/train"], command: bash bench/gpu_train.sh $OUT
#   bash bench/gpu_payload.sh restore   # back to the branch: the left-out files come back from git
#   bash bench/gpu_payload.sh size [check|train]   # MiB that would travel now, with that carry
#
# A view is this commit without what its script does not read (check: the training checkpoints and
# the UAV75, masonry and orthophoto sources; train: the checkpoints other than the teacher, the
# orthophotos; both: the report screenshot). It is a commit of its own (on no branch), so nothing is
# deleted from the branch and `restore` is one checkout; a view refuses to start with uncommitted
# changes, and `restore` says so if commits were made in it.
set -euo pipefail
cd "$(dirname "$0")/.."
LIMIT_MIB=64
MARKER=.git/msaf-device-view
declare -A LEFT_OUT=(
  [check]="models/checkpoints data/sources/uav75 data/sources/masonry data/sources/ortho docs/report.png"
  [train]="models/checkpoints/finetune-1.safetensors models/checkpoints/finetune-4.safetensors data/sources/ortho docs/report.png"
)

travelling_bytes() {  # tracked + untracked-not-ignored files that exist, and the carried .gpu/$1
  {
    git ls-files -z --cached --others --exclude-standard | xargs -0 -r stat -c %s -- 2>/dev/null || true
    if [ -d ".gpu/$1" ]; then find ".gpu/$1" -type f -exec stat -c %s {} +; fi
  } | awk '{s += $1} END {print s + 0}'
}

report_size() {
  local bytes
  bytes=$(travelling_bytes "$1")
  awk -v b="$bytes" -v limit="$LIMIT_MIB" 'BEGIN {
    printf "gpu_payload: %.1f MiB would travel (limit %d MiB)\n", b / 1048576, limit
    exit (b > limit * 1048576) ? 1 : 0
  }'
}

case "${1:-}" in
  check | train)
    mode=$1
    if [ -f "$MARKER" ]; then echo "gpu_payload: the device view is already checked out (restore first)" >&2; exit 2; fi
    if ! git diff --quiet HEAD --; then
      echo "gpu_payload: commit or stash your changes first: the device view is made from the last commit" >&2
      exit 2
    fi
    [ -f ".gpu/$mode/site.tar.xz" ] || bash bench/gpu_wheels.sh "$mode"
    branch=$(git symbolic-ref -q --short HEAD || git rev-parse HEAD)
    index=$(mktemp)
    GIT_INDEX_FILE=$index git read-tree HEAD
    # shellcheck disable=SC2086
    GIT_INDEX_FILE=$index git rm -r -q --cached --ignore-unmatch -- ${LEFT_OUT[$mode]}
    tree=$(GIT_INDEX_FILE=$index git write-tree)
    rm -f "$index"
    view=$(git commit-tree "$tree" -p HEAD -m "$mode view of $(git rev-parse --short HEAD) (bench/gpu_payload.sh)")
    git checkout -q --detach "$view"
    printf '%s\n%s\n' "$branch" "$view" > "$MARKER"
    echo "gpu_payload: $mode view $(git rev-parse --short HEAD) checked out; left out: ${LEFT_OUT[$mode]}"
    report_size "$mode"
    echo "gpu_payload: run bench/gpu_$mode.sh on the device with carry [\".gpu/$mode\"]; then: bash bench/gpu_payload.sh restore"
    ;;
  restore)
    if [ ! -f "$MARKER" ]; then echo "gpu_payload: no device view is checked out" >&2; exit 2; fi
    { read -r branch; read -r view; } < "$MARKER"
    if [ "$(git rev-parse HEAD)" != "$view" ]; then
      echo "gpu_payload: commits were made in the device view ($(git rev-parse --short HEAD)); they are not on $branch" >&2
    fi
    git checkout -q "$branch"
    rm -f "$MARKER"
    echo "gpu_payload: back on $branch"
    ;;
  size)
    report_size "${2:-check}"
    ;;
  *)
    echo "usage: bash bench/gpu_payload.sh check|train|restore|size [check|train]" >&2
    exit 2
    ;;
esac
