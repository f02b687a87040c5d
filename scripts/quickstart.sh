#!/usr/bin/env bash
# The quick start's first command (README, docs/getting-started.md): set up, then run the `demo` job (Fashion-MNIST 32x32, the whole
# chain with evaluation) through Dagster, with runs recorded in ./.dagster_home for the UI.
# Usage: bash scripts/quickstart.sh [JOB]   (JOB defaults to demo; smoke takes about two minutes)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export DAGSTER_HOME="${DAGSTER_HOME:-$PWD/.dagster_home}"
mkdir -p "$DAGSTER_HOME"
[ -f "$DAGSTER_HOME/dagster.yaml" ] || printf 'telemetry:\n  enabled: false\n' > "$DAGSTER_HOME/dagster.yaml"
JOB=${1:-demo}
echo "== running job '$JOB' (DAGSTER_HOME=$DAGSTER_HOME, artifacts under ./artifacts)"
start=$(date +%s)
.venv/bin/dagster job execute -m ul_pipeline_dagster -d . -j "$JOB"
echo "== job '$JOB' finished in $(( $(date +%s) - start )) s"
metrics="artifacts/runs/$JOB/evaluation/metrics.json"
[ -f "$metrics" ] && { echo "== evaluation ($metrics):"; cat "$metrics"; echo; }
echo "== open the UI:  DAGSTER_HOME=$DAGSTER_HOME .venv/bin/dagster dev   (then http://127.0.0.1:3000)"
