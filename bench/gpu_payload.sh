#!/usr/bin/env bash
# What a GPU session sends to the device machine must stay under its 64 MiB limit: tracked files,
# untracked files git does not ignore and the carried paths all count. This checkout's tracked files
# alone are ~73 MiB (three 14 MB training checkpoints, the shipped model, the training photos), and
# the wheels gpu_check.sh needs there are 52 MB more. So a session checks out a *device view* of its
# commit for the device calls, and carries the wheels unpacked and xz-compressed (~36 MB):
#
#   bash bench/gpu_payload.sh check     # .gpu/site.tar.xz built if missing (needs the package registry),
#                                       # then the device view checked out (detached HEAD)
#   -> device run: carry [".gpu"], command "bash bench/gpu_check.sh $OUT"
#   bash bench/gpu_payload.sh restore   # back to the branch: the left-out files come back from git
#   bash bench/gpu_payload.sh size      # MiB that would travel now (with .gpu carried)
#
# The device view is this commit without what the check does not read: the training checkpoints,
# the UAV75, masonry and orthophoto sources and the report screenshot. It is a commit of its own
# (on no branch), so nothing is deleted from the branch and `restore` is one checkout; `check`
# refuses to start with uncommitted changes, and `restore` says so if commits were made in the view.
set -euo pipefail
cd "$(dirname "$0")/.."
LIMIT_MIB=64
MARKER=.git/msaf-device-view
LEFT_OUT=(models/checkpoints data/sources/uav75 data/sources/masonry data/sources/ortho docs/report.png)

travelling_bytes() {  # tracked + untracked-not-ignored files that exist, and the carried .gpu
  {
    git ls-files -z --cached --others --exclude-standard | xargs -0 -r stat -c %s -- 2>/dev/null || true
    if [ -d .gpu ]; then find .gpu -type f -exec stat -c %s {} +; fi
  } | awk '{s += $1} END {print s + 0}'
}

report_size() {
  local bytes
  bytes=$(travelling_bytes)
  awk -v b="$bytes" -v limit="$LIMIT_MIB" 'BEGIN {
    printf "gpu_payload: %.1f MiB would travel (limit %d MiB)\n", b / 1048576, limit
    exit (b > limit * 1048576) ? 1 : 0
  }'
}

case "${1:-}" in
  check)
    if [ -f "$MARKER" ]; then echo "gpu_payload: the device view is already checked out (restore first)" >&2; exit 2; fi
    if ! git diff --quiet HEAD --; then
      echo "gpu_payload: commit or stash your changes first: the device view is made from the last commit" >&2
      exit 2
    fi
    [ -f .gpu/site.tar.xz ] || bash bench/gpu_wheels.sh
    branch=$(git symbolic-ref -q --short HEAD || git rev-parse HEAD)
    index=$(mktemp)
    GIT_INDEX_FILE=$index git read-tree HEAD
    GIT_INDEX_FILE=$index git rm -r -q --cached --ignore-unmatch -- "${LEFT_OUT[@]}"
    tree=$(GIT_INDEX_FILE=$index git write-tree)
    rm -f "$index"
    view=$(git commit-tree "$tree" -p HEAD -m "device view of $(git rev-parse --short HEAD) (bench/gpu_payload.sh)")
    git checkout -q --detach "$view"
    printf '%s\n%s\n' "$branch" "$view" > "$MARKER"
    echo "gpu_payload: device view $(git rev-parse --short HEAD) checked out; left out: ${LEFT_OUT[*]}"
    report_size
    echo "gpu_payload: now run on the device with carry [\".gpu\"]; then: bash bench/gpu_payload.sh restore"
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
    report_size
    ;;
  *)
    echo "usage: bash bench/gpu_payload.sh check|restore|size" >&2
    exit 2
    ;;
esac
