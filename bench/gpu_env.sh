# Sourced by the device scripts (gpu_check.sh, gpu_train.sh): their arguments, the Python that runs
# them, and the packages the GPU image lacks, unpacked from the bundle `bench/gpu_payload.sh KIND`
# built (.gpu/KIND/site.tar.xz) when MODULE does not import. Sets DRY, OUT_DIR, PY and PYTHONPATH.
#
#   . bench/gpu_env.sh KIND MODULE "$@"
KIND=$1 MODULE=$2
shift 2
DRY=0
if [ "${1:-}" = "--dry" ]; then DRY=1; shift; fi
OUT_DIR=${1:-${OUT:-bench-out}}
mkdir -p "$OUT_DIR"
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
if [ -f ".gpu/$KIND/site.tar.xz" ] && ! "$PY" -c "import $MODULE" 2>/dev/null; then  # only the interpreter that runs them
  # Python's tarfile (lzma is in the standard library): the image need not have xz
  "$PY" -c "import sys, tarfile; tarfile.open(sys.argv[1]).extractall('/tmp', filter='tar')" ".gpu/$KIND/site.tar.xz"
  export PYTHONPATH=/tmp/site:$PWD
fi
export PYTHONUNBUFFERED=1 PYTHONPATH=${PYTHONPATH:-$PWD}
