#!/usr/bin/env bash
# The GPU check, one command for a GPU machine that is lent for a few minutes (see README, "On a GPU").
#
#   scripts/gpu_check.sh --fetch-wheels      where PyPI is reachable: the wheels the GPU machine lacks, into .whl/
#   scripts/gpu_check.sh [OUT] [options]     on the GPU machine: CUDA tests, speed, video, training (about 4 min)
#   scripts/gpu_check.sh --dry-run [OUT]     on a CPU: every part at tiny sizes (about a minute)
#
# OUT (an argument, else $OUT) receives gpu_check.log, gpu_check.json and the JUnit files; other
# options go to scripts/gpu_check.py (--budget SECONDS, --parts tests,speed,...). Packages that the
# machine lacks (PyAV, kornia, kornia-rs) are installed from .whl/ into /tmp/site, without network.
# $PYTHON chooses the interpreter (default python3).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
WHEELS=.whl
GPU_PYTHON_VERSION=${GPU_PYTHON_VERSION:-3.12}  # the GPU machine's Python
KORNIA_RS_VERSION=0.2.0                         # what kornia (pinned in requirements.txt) was tested with

if [ "${1:-}" = --fetch-wheels ]; then
    pin() { sed -n "s/^$1==\([^ ]*\).*/\1/p" requirements.txt; }
    mkdir -p "$WHEELS"
    "$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: --python-version "$GPU_PYTHON_VERSION" \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 -d "$WHEELS" \
        "av==$(pin av)" "kornia==$(pin kornia)" "kornia-rs==$KORNIA_RS_VERSION"
    ls -l "$WHEELS"
    echo "$(du -sm "$WHEELS" | cut -f1) MiB in $WHEELS/ (git-ignored; with the working tree it must stay under 64 MiB)"
    exit 0
fi

dry_run=()
if [ "${1:-}" = --dry-run ]; then
    dry_run=(--dry-run)
    shift
fi
out=${OUT:-}
if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then
    out=$1
    shift
fi
if [ -z "$out" ]; then
    echo "gpu_check.sh: error: give the output folder as an argument or in \$OUT" >&2
    exit 2
fi
mkdir -p "$out"
export PYTHONUNBUFFERED=1

check() {
    local missing
    missing=$("$PYTHON" -c "
import importlib.util
print(' '.join(m for m in ('av', 'kornia', 'kornia_rs') if importlib.util.find_spec(m) is None))")
    if [ -n "$missing" ]; then
        if ! ls "$WHEELS"/*.whl > /dev/null 2>&1; then
            echo "gpu_check.sh: error: missing Python packages ($missing) and no wheels in $WHEELS/;" \
                 "run scripts/gpu_check.sh --fetch-wheels where PyPI is reachable" >&2
            return 1
        fi
        echo "installing $missing from $WHEELS/ into /tmp/site"
        "$PYTHON" -m pip install --quiet --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target /tmp/site "$WHEELS"/*.whl
        export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
    fi
    "$PYTHON" -m scripts.gpu_check --out "$out" ${dry_run[@]+"${dry_run[@]}"} "$@"
}

check "$@" 2>&1 | tee "$out/gpu_check.log"
