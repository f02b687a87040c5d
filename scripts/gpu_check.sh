#!/usr/bin/env bash
# The first thing to run on a machine with a GPU: the `gpu`-marked tests, then a short benchmark (every
# network of the `paper` preset in bf16: samples/s and MFU against the data-sheet peak; the smoke chain
# on CUDA; 2-process DDP over NCCL when there are two GPUs), all into one JSON.
# Usage: bash scripts/gpu_check.sh [OUT.json]   (default gpu_check.json in the current folder, whose folder is made;
# PYTHON=... to pick the interpreter)
# Without a CUDA device it says so, writes {"cuda": false, ...} and exits 0.
set -uo pipefail
OUT=${1:-gpu_check.json}
case "$OUT" in /*) ;; *) OUT="$PWD/$OUT" ;; esac  # relative to where it is run, not to the repository
if ! mkdir -p "$(dirname "$OUT")" || ! [ -w "$(dirname "$OUT")" ]; then
  echo "gpu_check: cannot write $OUT (its folder cannot be made or written)" >&2
  exit 1
fi
cd "$(dirname "$0")/.."
PY=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python)}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if ! "$PY" -c "import torch" 2>/dev/null; then
  echo "gpu_check: $PY cannot import torch (run scripts/setup.sh, or set PYTHON=...)" >&2
  exit 1
fi
if ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  "$PY" -c "import json, sys, torch; json.dump({'cuda': False, 'torch': torch.__version__,
  'message': 'no CUDA device'}, open(sys.argv[1], 'w'), indent=2)" "$OUT" || exit 1
  echo "gpu_check: no CUDA device here (torch.cuda.is_available() is False): nothing to check; wrote $OUT"
  exit 0
fi
exec "$PY" benchmarks/gpu_check.py --out "$OUT"
