#!/usr/bin/env bash
# The wheel stands alone: build it from this checkout, install it (with constraints.txt) into a fresh
# virtualenv outside any repository, and in an empty folder run the smoke chain from the installed
# package alone (configs from the package), the Dagster smoke job through ul_pipeline_dagster with a
# folder named assets/ in the working directory, and docs/guides/python-api.md as a script.
# Prints the time of each step. Needs network access to a package index (or pip's local wheels).
#
# Usage: bash scripts/check_wheel.sh [WORK_DIR]      (default: a new folder under /tmp)
#   PYTHON=python3.12 to install into another interpreter; SKIP_DAGSTER=1 to skip the Dagster job.
set -euo pipefail
unset PYTHONPATH UL_CONFIG_DIR UL_RUNS_DIR  # nothing from a checkout may leak into the installed package's runs
REPO="$(cd "$(dirname "$0")/.." && pwd)"
WORK="${1:-$(mktemp -d /tmp/ul-check-wheel.XXXXXX)}"
PY=${PYTHON:-python3.11}
mkdir -p "$WORK"
WORK="$(cd "$WORK" && pwd)"
case "$WORK/" in "$REPO"/*) echo "WORK_DIR must be outside the repository" >&2; exit 2 ;; esac
step_start=0
step() { step_start=$(date +%s); echo "== $*"; }
took() { echo "   ($(( $(date +%s) - step_start )) s)"; }

step "build the wheel from $REPO ($(git -C "$REPO" rev-parse --short=12 HEAD)$(git -C "$REPO" diff --quiet HEAD || echo ', dirty'))"
rm -rf "$WORK/dist"
BUILT_SHA=$(git -C "$REPO" rev-parse --short=7 HEAD)  # the commit the wheel is built from (HEAD may move later)
"$PY" -m pip wheel --no-deps -q -w "$WORK/dist" "$REPO"
WHEEL=$(ls "$WORK"/dist/ul_pipeline-*.whl)
echo "   $WHEEL"; took

step "the wheel's metadata accepts Python 3.12"
"$PY" -m pip install --dry-run --target "$WORK/py312" --python-version 3.12 --only-binary=:all: --no-deps "$WHEEL" | tail -1
took

step "a fresh virtualenv outside any repository: $WORK/venv"
rm -rf "$WORK/venv"
"$PY" -m venv "$WORK/venv"
"$WORK/venv/bin/python" -m pip install -q -c "$REPO/constraints.txt" "$WHEEL"
(cd "$WORK" && "$WORK/venv/bin/python" -c "import torch, ul_pipeline; print('   torch', torch.__version__, '| ul-pipeline', ul_pipeline.__version__, 'from', ul_pipeline.__file__)")
took

rm -rf "$WORK/empty" && mkdir -p "$WORK/empty/assets" && cd "$WORK/empty"
echo "# a user's own folder named assets/" > assets/README
export PATH="$WORK/venv/bin:$PATH" DAGSTER_HOME="$WORK/empty/.dagster_home" UL_STORAGE_ROOT="$WORK/empty/artifacts"
if git rev-parse --show-toplevel >/dev/null 2>&1; then echo "$WORK/empty is inside a git repository" >&2; exit 2; fi

step "configs from the package; init copies them out"
ul-pipeline print-config -e smoke | head -3
ul-pipeline init . && test -f configs/experiments/smoke.yaml
ul-pipeline fetch-assets --dry-run
took

step "smoke chain (CLI) from the installed package"
ul-pipeline shard  -e smoke --out runs/smoke/shards
ul-pipeline stage1 -e smoke --shards runs/smoke/shards --out runs/smoke/stage1 | tail -3
ul-pipeline encode --checkpoint runs/smoke/stage1/last.pt --shards runs/smoke/shards --out runs/smoke/latents.zarr
ul-pipeline stage2 -e smoke --latents runs/smoke/latents.zarr --out runs/smoke/stage2 | tail -3
ul-pipeline evaluate -e smoke --stage1 runs/smoke/stage1/last.pt --base runs/smoke/stage2/last.pt \
  --shards runs/smoke/shards --out runs/smoke/evaluation | tail -3
took

step "the checkpoint records the version the wheel was built as"
python -c "
import sys, torch
v = torch.load('runs/smoke/stage1/last.pt', weights_only=True)['code_version']
print('   recorded code_version:', v)
assert v == '$(basename "$WHEEL" | cut -d- -f2)', v
assert '+g$BUILT_SHA' in v, v
"
took

step "docs/guides/python-api.md as a script"
python - "$REPO/docs/guides/python-api.md" > python_api.py <<'EOF'
import re, sys
print("\n".join(re.findall(r"```python\n(.*?)```", open(sys.argv[1]).read(), flags=re.S)))
EOF
python python_api.py
took

if [ "${SKIP_DAGSTER:-0}" != 1 ]; then
  step "dagster job execute -m ul_pipeline_dagster -j smoke (a folder named assets/ is here)"
  mkdir -p "$DAGSTER_HOME" && printf 'telemetry:\n  enabled: false\n' > "$DAGSTER_HOME/dagster.yaml"
  dagster job execute -m ul_pipeline_dagster -j smoke 2>&1 | grep -E "RUN_SUCCESS|RUN_FAILURE|Error" | tail -5
  test -f artifacts/runs/smoke/evaluation/metrics.json
  took
fi
echo "== wheel check passed ($WORK)"
