#!/usr/bin/env bash
# The GPU check, one command for a GPU machine that is lent for a quarter of an hour (see README, "On a GPU").
#
#   scripts/gpu_check.sh --fetch-wheels      where PyPI is reachable: the wheels the GPU machine lacks, into .whl/
#   scripts/gpu_check.sh [OUT] [options]     on the GPU machine: speed, training, video, CUDA tests (about 6 min)
#   scripts/gpu_check.sh --dry-run [OUT]     on a CPU: every part at tiny sizes, the CUDA tests rehearsed (about 3 min)
#
# OUT (an argument, else $OUT) receives gpu_check.log, gpu_check.json, parts/*.json and the JUnit files;
# other options go to scripts/gpu_check (--budget SECONDS, --parts speed,train,...). Packages that the
# machine lacks (PyAV, kornia, kornia-rs) are installed from .whl/ into /tmp/site, without network; where
# that cannot be done the check goes on, and the parts that need them are skipped, saying so.
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
    local missing name wheel installed=
    missing=$("$PYTHON" -c "
import importlib.util
print(' '.join(m for m in ('av', 'kornia', 'kornia_rs') if importlib.util.find_spec(m) is None))")
    for name in $missing; do  # a wheel is named after its package: av-14.2.0-cp312-...whl
        wheel=$(ls "$WHEELS/$name"-[0-9]*.whl 2> /dev/null | head -n 1 || true)
        if [ -z "$wheel" ]; then
            echo "gpu_check.sh: warning: $name is not installed and $WHEELS/ has no wheel of it" \
                 "(scripts/gpu_check.sh --fetch-wheels where PyPI is reachable): the parts that need it are skipped"
        elif "$PYTHON" -m pip install --quiet --no-index --no-deps --no-compile --no-cache-dir --upgrade \
                --target /tmp/site "$wheel"; then
            echo "installed $name from $wheel into /tmp/site"
            installed=1
        else
            echo "gpu_check.sh: warning: could not install $wheel: the parts that need $name are skipped"
        fi
    done
    if [ -n "$installed" ]; then
        export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
    fi
    "$PYTHON" -m scripts.gpu_check --out "$out" ${dry_run[@]+"${dry_run[@]}"} "$@"
}

check "$@" 2>&1 | tee "$out/gpu_check.log"
