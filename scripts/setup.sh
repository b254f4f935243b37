#!/usr/bin/env bash
# Idempotent set-up on a Debian machine: system packages, the Docker engine,
# a virtualenv with the project and its CPU torch, and the sandbox image.
# Safe to run again: every step checks before it acts.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"   # the CPU build; a bare "torch" pulls CUDA wheels
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"

say() { printf '\n==> %s\n' "$*"; }

# A fresh set-up writes about 4 GB (the virtualenv 3.0 GB, Debian packages, the
# sandbox image, pip's build of llama.cpp); stop at once with the reason rather
# than midway with pip's "No space left on device".
NEED_MB="${SETUP_NEED_MB:-4500}"
if [ ! -x "$VENV/bin/python" ]; then
  for dir in . "${TMPDIR:-/tmp}"; do
    free_mb=$(df -Pm "$dir" | awk 'NR==2 {print $4}')
    if [ -n "$free_mb" ] && [ "$free_mb" -lt "$NEED_MB" ]; then
      echo "error: $(cd "$dir" && pwd) has ${free_mb} MB free; a fresh set-up needs about ${NEED_MB} MB (SETUP_NEED_MB overrides)" >&2
      exit 1
    fi
  done
fi

missing=()
command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
python3 -c "import venv, ensurepip" >/dev/null 2>&1 || missing+=(python3-venv)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)   # the report's browser test
if [ ${#missing[@]} -gt 0 ]; then
  say "installing Debian packages: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if ! docker info >/dev/null 2>&1; then
  say "starting the Docker engine"
  if command -v systemctl >/dev/null 2>&1 && $SUDO systemctl start docker >/dev/null 2>&1; then
    :
  else
    $SUDO sh -c 'nohup dockerd >/var/log/dockerd.log 2>&1 &'
  fi
  for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null 2>&1 || { echo "error: the Docker engine did not start; see /var/log/dockerd.log" >&2; exit 1; }
fi

if [ ! -x "$VENV/bin/python" ]; then
  say "creating the virtualenv $VENV"
  python3 -m venv "$VENV"
fi
if ! "$VENV/bin/python" -c "import torch" >/dev/null 2>&1; then
  say "installing $TORCH_SPEC"
  "$VENV/bin/pip" install -q --upgrade pip
  "$VENV/bin/pip" install -q "$TORCH_SPEC"
fi
say "installing the project and its dependencies (llama-cpp-python builds llama.cpp from source the first time: minutes)"
"$VENV/bin/pip" install -q -e ".[dev,demo,ray,llamacpp,preference]"

say "building the sandbox image (skipped when it exists)"
"$VENV/bin/python" -m sandbox build
