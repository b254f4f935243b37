#!/usr/bin/env bash
# Set up everything (scripts/setup.sh), then run the pipeline end to end on the CPU demo recipe.
# Extra arguments go to run_pipeline.py (e.g. --status, -o stages.seeds.max_seeds=50).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec "${VENV:-.venv}/bin/python" run_pipeline.py --config configs/demo.yaml --stage all "$@"
