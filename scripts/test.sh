#!/usr/bin/env bash
# Set up everything (scripts/setup.sh), then run the tests.
#   bash scripts/test.sh            fast tests (slow ones deselected)
#   bash scripts/test.sh --all      every test, as CI runs them
#   bash scripts/test.sh -k store   any other arguments go to pytest
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
marker=(-m "not slow")
args=()
for a in "$@"; do
  if [ "$a" = "--all" ]; then marker=(); else args+=("$a"); fi
done
exec "${VENV:-.venv}/bin/python" -m pytest "${marker[@]}" "${args[@]}"
