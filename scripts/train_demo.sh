#!/usr/bin/env bash
# The demonstration model in one command: synthetic data, the base and refine stages with AMP, float16
# weights, and the held-out table against difference keying, within --minutes (see scripts/train_demo.py).
#
#   scripts/train_demo.sh --device cuda --minutes 6 --out output/demo-gpu
#   scripts/train_demo.sh --device cpu --minutes 1 --preset tiny --out output/demo-tiny    # a smoke run
#
# $PYTHON chooses the interpreter (default python3).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
exec "${PYTHON:-python3}" -m scripts.train_demo "$@"
