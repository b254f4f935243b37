#!/usr/bin/env bash
# The GPU check (pipeline/gpu_check.py): fine-tuning memory, tokens/s and MFU of a StarCoder2-shaped 3B
# model, the StarCoder2-15B shape at the paper's settings where the card has the memory, a LoRA run and generation
# through the transformers backend; one table printed, the same as JSON. Under 8 minutes on one H100-class GPU.
#
#   scripts/gpu_check.sh                   on the GPU machine, from the repository root (installs nothing)
#   scripts/gpu_check.sh --dry             the CPU rehearsal: tiny model, a few steps, about a minute
#   scripts/gpu_check.sh --fetch-wheels    on a machine with PyPI: put the pydantic wheels the generation rows need
#                                          (for CPython 3.10-3.13, x86_64 Linux) in gpu_wheels/ to carry along
# Other options go to the Python module (--out FILE, --steps N, --skip-15b). It needs torch, transformers,
# accelerate and peft; where pydantic is missing and gpu_wheels/ holds wheels, they are unpacked into a temporary
# folder on PYTHONPATH for this run only.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
WHEELS=gpu_wheels

if [ "${1:-}" = "--fetch-wheels" ]; then
    mkdir -p "$WHEELS"
    pins=$("$PY" - <<'PYEOF'
from importlib.metadata import version
print(" ".join(f"{name}=={version(name)}" for name in
               ("pydantic", "pydantic-core", "annotated-types", "typing-inspection", "typing-extensions")))
PYEOF
)
    for v in 3.10 3.11 3.12 3.13; do
        # shellcheck disable=SC2086
        "$PY" -m pip download -q --only-binary=:all: --no-deps --python-version "$v" \
            --platform manylinux2014_x86_64 -d "$WHEELS" $pins
    done
    ls "$WHEELS"
    exit 0
fi

export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if ! "$PY" -c "import pydantic" 2>/dev/null && compgen -G "$WHEELS/*.whl" >/dev/null; then
    unpacked=$(mktemp -d)
    trap 'rm -rf "$unpacked"' EXIT
    for wheel in "$WHEELS"/*.whl; do
        "$PY" -m zipfile -e "$wheel" "$unpacked"
    done
    export PYTHONPATH="$PYTHONPATH:$unpacked"
    echo "gpu check: pydantic from $WHEELS (unpacked in $unpacked for this run)" >&2
fi
"$PY" -m pipeline.gpu_check "$@"
